"""Encoder-decoder models (T5): the encoder runs once per input; the decoder's cross-attention keys and
values are computed once from its output; greedy, sampled and beam-search generation."""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from . import _core
from .model import GenerationResult, Model
from .tokenizer import TokenizerInfo


class Seq2SeqModel(Model):
    def __init__(self, encoder: "_core.Model", make_decoder: Callable[[], "_core.Model"], config: Dict[str, Any],
                 tok: TokenizerInfo, path: str):
        super().__init__(make_decoder(), config, tok, path)
        self._encoder = encoder
        self._make_decoder = self._core.fork  # beams share the decoder's weights (converted once at load)
        self._beams: List["_core.Model"] = []
        field = "decoder_start_token_id" if "decoder_start_token_id" in config else "pad_token_id"
        start = config.get(field, 0)
        start = int(start if isinstance(start, int) and not isinstance(start, bool) else 0)
        if not 0 <= start < self.spec.vocab_size:
            raise ValueError(f"{path}: config field '{field}' ({start}) is not a token of the vocabulary "
                             f"({self.spec.vocab_size} tokens)")
        self.decoder_start_token_id = start

    @property
    def encoder_spec(self) -> "_core.ArchSpec":
        return self._encoder.spec

    def __repr__(self) -> str:
        e, d = self._encoder.spec, self.spec
        return (f"Model({d.model_type}, encoder layers={e.n_layers}, decoder layers={d.n_layers}, hidden={d.hidden_size}, "
                f"heads={d.n_heads}, vocab={d.vocab_size}, max_context={self.max_context}, threads={self.threads})")

    def _encode(self, ids: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
        if len(ids) > self._encoder.max_context:
            raise ValueError(f"input_ids: {len(ids)} tokens exceed the encoder's max_context={self._encoder.max_context}")
        return self._encoder.hidden_states(ids, None, mask)

    def _condition(self, decoder: "_core.Model", enc_out: np.ndarray, mask: Optional[np.ndarray]) -> None:
        decoder.set_encoder_output(enc_out, mask)
        decoder.reset()

    def hidden_states(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None) -> np.ndarray:
        """The encoder's last hidden state, [B, T, hidden] ([T, hidden] for 1-D input_ids)."""
        a = self._ids(input_ids)
        if a.ndim not in (1, 2) or a.shape[-1] == 0:
            raise ValueError(f"input_ids: expected a non-empty 1-D or 2-D array of token ids, got shape {a.shape}")
        rows = a[None] if a.ndim == 1 else a
        masks = self._aux(attention_mask, rows.shape, "attention_mask")
        with self._lock:
            out = np.stack([self._encode(r, None if masks is None else masks[i]) for i, r in enumerate(rows)])
        return out[0] if a.ndim == 1 else out

    def logits(self, input_ids: Any, decoder_input_ids: Any = None) -> np.ndarray:
        """Decoder logits [T_dec, vocab] for 1-D input_ids and decoder_input_ids ([B, T_dec, vocab] for 2-D)."""
        if decoder_input_ids is None:
            raise ValueError("decoder_input_ids: an encoder-decoder model needs them (start with decoder_start_token_id)")
        a = self._ids(input_ids)
        d = self._ids(decoder_input_ids, "decoder_input_ids")
        if a.ndim != d.ndim or a.ndim not in (1, 2) or a.shape[-1] == 0 or d.shape[-1] == 0:
            raise ValueError("input_ids and decoder_input_ids: expected non-empty arrays, both 1-D or both 2-D")
        if a.ndim == 2 and a.shape[0] != d.shape[0]:
            raise ValueError("input_ids and decoder_input_ids: batch sizes differ")
        self._check_len(d.shape[-1], "decoder_input_ids")
        rows, drows = (a[None], d[None]) if a.ndim == 1 else (a, d)
        out = []
        with self._lock:
            self._cached = []
            for r, dr in zip(rows, drows):
                self._condition(self._core, self._encode(r), None)
                out.append(self._prefill(dr, logits=True))
            self._cached = []
        return out[0] if a.ndim == 1 else np.stack(out)

    def generate(self, prompt: Union[str, Sequence[int]], max_new_tokens: int = 128, num_beams: int = 1,
                 length_penalty: float = 1.0, **kwargs):
        """Text-to-text generation. num_beams > 1 runs beam search as transformers does (length_penalty,
        early_stopping=False); otherwise greedy or sampled like a decoder's generate()."""
        if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
            raise ValueError(f"argument 'num_beams' must be a positive integer, got {num_beams!r}")
        if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)) or not math.isfinite(length_penalty):
            raise ValueError(f"argument 'length_penalty' must be a number, got {length_penalty!r}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"argument 'max_new_tokens' must be a non-negative integer, got {max_new_tokens!r}")
        if isinstance(prompt, str):
            ids = np.asarray(self._tok.encode(prompt), np.int32)
        else:
            ids = self._ids(prompt, "prompt")
            if ids.ndim != 1:
                raise ValueError(f"prompt: expected a string or a 1-D list of token ids, got shape {ids.shape}")
        if ids.size == 0:
            raise ValueError("prompt: empty (no tokens to condition on)")
        if num_beams > 1:
            if kwargs.get("stream"):
                raise ValueError("argument 'stream' is not supported with num_beams > 1")
            unknown = set(kwargs) - {"ignore_eos", "stream"}
            if unknown:
                raise ValueError(f"beam search takes no sampling arguments (got {', '.join(sorted(unknown))})")
            return self._beam_search(ids, max_new_tokens, num_beams, float(length_penalty), kwargs.get("ignore_eos", False))
        with self._lock:
            enc = self._encode(ids)
            self._condition(self._core, enc, None)
            self._cached = []
        # the decoder's prompt is its start token; the prefix cache is never reused across inputs
        return super().generate([self.decoder_start_token_id], max_new_tokens=max_new_tokens, **kwargs)

    def _reset_to(self, ids: Sequence[int]) -> int:
        self._core.truncate(0)
        self._cached = []
        return 0

    def _beam_search(self, ids: np.ndarray, max_new_tokens: int, num_beams: int, length_penalty: float,
                     ignore_eos: bool) -> GenerationResult:
        with self._lock:
            t0 = time.perf_counter()
            enc = self._encode(ids)
            while len(self._beams) < 2 * num_beams:
                self._beams.append(self._make_decoder())
            cur, spare = self._beams[:num_beams], self._beams[num_beams : 2 * num_beams]
            for d in cur + spare:  # cross-attention memory in every decoder; caches are copied between them
                self._condition(d, enc, None)
            eos = set() if ignore_eos else set(self.eos_token_ids)
            beams_to_keep = max(2, 1 + len(eos)) * num_beams
            max_new = min(max_new_tokens, self.max_context - 1)
            seqs: List[List[int]] = [[] for _ in range(num_beams)]  # generated tokens of each running beam
            scores = np.full(num_beams, -1e9, np.float32)
            scores[0] = 0.0
            finished: List[tuple] = []  # (normalized score, tokens)
            heuristic_unsatisfied = True
            V = self.spec.vocab_size
            start = self.decoder_start_token_id
            t_first = None
            for step in range(max_new):
                logp = np.empty((num_beams, V), np.float32)
                for b, d in enumerate(cur):
                    last = seqs[b][-1] if seqs[b] else start
                    lg = d.forward(np.asarray([last], np.int32), False)[0].astype(np.float64)
                    m = lg.max()
                    logp[b] = lg - m - np.log(np.exp(lg - m).sum())
                if t_first is None:
                    t_first = time.perf_counter()
                acc = (logp + scores[:, None]).reshape(-1)
                top = np.argsort(-acc, kind="stable")[:beams_to_keep]
                cand_scores = acc[top]
                cand_beam, cand_tok = top // V, top % V
                gen_len = step + 1  # tokens generated, counting this one
                hits = np.array([(int(t) in eos) or gen_len >= max_new for t in cand_tok])
                # finished hypotheses: among the first num_beams candidates that hit a stop
                if heuristic_unsatisfied:
                    for i in range(num_beams):
                        if hits[i]:
                            toks = seqs[cand_beam[i]] + [int(cand_tok[i])]
                            finished.append((float(cand_scores[i]) / (gen_len ** length_penalty), toks))
                    finished.sort(key=lambda x: -x[0])
                    del finished[num_beams:]
                # running beams: the best candidates that did not stop
                live = cand_scores + hits * -1.0e9
                order = np.argsort(-live, kind="stable")[:num_beams]
                new_seqs = []
                for j, i in enumerate(order):
                    src = int(cand_beam[i])
                    spare[j].copy_cache_from(cur[src], cur[src].n_past)
                    new_seqs.append(seqs[src] + [int(cand_tok[i])])
                scores = live[order].astype(np.float32)
                cur, spare = spare, cur
                seqs = new_seqs
                # transformers' early-stop heuristic (early_stopping=False)
                if len(finished) == num_beams:
                    best_possible = scores[0] / (gen_len ** length_penalty)
                    heuristic_unsatisfied = heuristic_unsatisfied and best_possible > finished[-1][0]
                if not heuristic_unsatisfied or hits.all():
                    break
            best = finished[0][1] if finished else seqs[0]
            tokens = [t for t in best if t not in eos]
            finish = "eos" if len(tokens) < len(best) else "length"
            t1 = time.perf_counter()
            text = self._tok.decode(tokens) if self._tok.tokenizer is not None else ""
            self._beams = cur + spare
            t_first = t_first or t1
            return GenerationResult(text=text, token_ids=tokens, finish_reason=finish, prompt_tokens=len(ids),
                                    prefill_seconds=t_first - t0, decode_seconds=t1 - t_first)
