"""Loading a checkpoint and running it: load(), Model.logits / generate / chat."""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from .archs import ENCODER_DECODERS, Config, Derived, spec_from_config
from .archs_encoders import position_rows
from .device import parse_device, to_device
from .embeddings import transformer_dir
from .io import find_weight_files, resolve_checkpoint
from .grammar import Grammar, as_grammar, token_bytes
from .tokenizer import StreamDecoder, TokenizerInfo, _read_json

_GRAMMAR_LOCK = threading.Lock()
MAX_LOGIT_BIAS = 300  # tokens one logit_bias may name (OpenAI's limit)
PREFILL_CHUNK = 256  # tokens per forward call while prefilling: bounds scratch memory, lets Ctrl-C in
PACK_TOKENS = 1024  # the most tokens of an encoder batch run in one pass (_encode)


@dataclass
class TokenLogprob:
    """One generated token's log-probability under the model's distribution (the log-softmax of its logits,
    before temperature, penalties and top-k/top-p/min-p), and the `logprobs` most likely tokens at that
    position with theirs, most likely first."""
    token_id: int
    logprob: float
    top: List[Tuple[int, float]]


def _shared_prefix(tokens: Sequence[int], ids: Sequence[int]) -> int:
    """The length of tokens' and ids' common prefix, at most len(ids) - 1 (a prompt's last token always runs)."""
    lim, n = min(len(tokens), len(ids) - 1), 0
    while n < lim and tokens[n] == ids[n]:
        n += 1
    return n


def _lookup(context: List[int], k: int, max_ngram: int = 3) -> List[int]:
    """Prompt lookup: up to k tokens that followed the latest earlier occurrence of the context's last n tokens
    (n = max_ngram down to 1; none found: [])."""
    a = np.asarray(context, dtype=np.int32)
    L = len(a)
    for n in range(min(max_ngram, L - 1), 0, -1):
        windows = np.lib.stride_tricks.sliding_window_view(a[: L - 1], n)  # (not the end itself)
        hits = np.flatnonzero((windows == a[L - n :]).all(axis=1))
        if hits.size:
            i = int(hits[-1]) + n
            return a[i : i + k].tolist()
    return []


def _step_result(out) -> Tuple[int, Optional[TokenLogprob]]:
    """A step's result (Model.step, decode_batch): a token id, or with logprobs its (token, log-probability, top)."""
    if isinstance(out, tuple):
        tok = int(out[0])
        return tok, TokenLogprob(tok, out[1], out[2])
    return int(out), None


@dataclass
class GenerationResult:
    text: str
    token_ids: List[int]
    finish_reason: str  # "eos", "stop", "length" (max_new_tokens), "context" (max_context reached) or "cancelled"
    prompt_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    logprobs: Optional[List[TokenLogprob]] = None  # one per token of token_ids, with generate(logprobs=k)
    # prompt tokens whose keys and values an earlier generation had left in the cache (not computed again): the
    # model's previous call, or a Batcher's finished request (prefix_cache)
    cached_tokens: int = 0
    # chat(tools=...): the function calls read from the reply (OpenAI's form: id, type, function name and
    # arguments as JSON text), or None
    tool_calls: Optional[List[Dict[str, Any]]] = None

    @property
    def prefill_tokens_per_s(self) -> float:  # the prompt tokens computed (not those found cached) per second
        n = self.prompt_tokens - self.cached_tokens
        return n / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        n = max(len(self.token_ids) - 1, 0)  # the first new token comes out of the prefill
        return n / self.decode_seconds if self.decode_seconds > 0 else 0.0


class GenerationStream:
    """Iterates over text pieces (for a list of prompts: (prompt index, piece) pairs); after the last one,
    `.result` holds the GenerationResult (the list of them)."""

    def __init__(self, gen: Iterator[str]):
        self._gen = gen
        self.result: Optional[GenerationResult] = None

    def __iter__(self):
        return self

    def __next__(self) -> str:
        try:
            return next(self._gen)
        except StopIteration as e:
            self.result = e.value
            raise StopIteration from None

    def close(self):
        self._gen.close()


def load(path_or_hub_id: Union[str, os.PathLike], dtype: Optional[str] = None, threads: Optional[int] = None,
         max_context: Optional[int] = None, device: str = "cpu", exact_q8_prompts: bool = False,
         kv_dtype: Optional[str] = None) -> "Model":
    """Loads a Hugging Face checkpoint directory (or hub id, with huggingface_hub installed and online), or
    a GGUF file (llama.cpp's format; its quantized weights are used as stored, memory-mapped).

    dtype: None keeps the weights as stored (f32, f16 or bf16, memory-mapped); "f32", "f16" or "bf16"
    converts the matrices once at load; "q8_0", "q6_k", "q5_k", "q5_1", "q5_0", "q4_k", "q4_1", "q4_0", "iq4_nl",
    "iq4_xs", "q3_k" or "q2_k" quantizes them (llama.cpp's block formats): the layer matrices take that type, the embeddings and
    head keep 8 bits (q6_k for the head of a 2- to 5-bit model), norms and biases stay f32, and a matrix whose rows are not whole blocks stays f16. "int8" is
    CTranslate2's scheme: one scale per row of each layer matrix, activations quantized with one scale per
    token, integer sums over whole rows (the fastest prompts; error a few times q8_0's); the matrices are q8_0
    whose blocks share their row's scale, so a GGUF file written from it is plain q8_0, and loads back as int8.
    threads: default the physical cores. max_context: the KV cache length, default the checkpoint's
    max_position_embeddings. kv_dtype: the self-attention KV cache's element type, "f16", "bf16" or "f32"; None:
    f32 beside f32 matrices, bf16 beside bf16 and block-quantized matrices on a CPU with AMX (the active ISA
    "amx", whose tile unit runs their prompts in bf16; as PyTorch's bf16 keeps its cache), f16 beside every
    other type (half the memory, and half the traffic of a long context's decode steps; llama.cpp's default
    too). "bf16": f16's memory, attention products in bf16 (queries and
    weights rounded to bf16 too) on the CPUs that multiply bf16 (AVX-512 BF16: VDPBF16PS; AMX: the tile unit,
    the fastest long prompts there), 3 fewer bits of each key and value than f16. On CUDA, None is f16 (bf16
    is CPU only).

    exact_q8_prompts: q8_0 matrices multiply activations quantized to int8 per block of 32. Decode steps, which
    the weights' memory traffic bounds, also multiply the int8 rounding residual, so that their error is the
    weights' alone; prompts (forwards of more than one token) are bound by arithmetic and use one int8 level,
    as llama.cpp and CTranslate2 do, at twice the speed. True gives prompts both levels too.

    device: "cpu", or "cuda" / "cuda:N" (a build with EF_CUDA=ON; see cuda_available()): the weights are
    uploaded once (f32 matrices as f16; f16, bf16 and the quantized types as they are), the KV cache (f16) and
    every activation stay on the device, tokens are sampled there, and logits come back only when asked for.
    """
    path = os.fspath(path_or_hub_id)
    for name, v in (("threads", threads), ("max_context", max_context)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 2**31):
            raise ValueError(f"argument '{name}' must be a positive integer, got {v!r}")
    if not isinstance(exact_q8_prompts, bool):
        raise ValueError(f"argument 'exact_q8_prompts' must be True or False, got {exact_q8_prompts!r}")
    if kv_dtype is not None and kv_dtype not in ("f16", "bf16", "f32"):
        raise ValueError(f"argument 'kv_dtype' must be None, 'f16', 'bf16' or 'f32', got {kv_dtype!r}")
    if dtype in GRID_TYPES:
        raise ValueError(f"argument 'dtype': {dtype} is read from GGUF files but not made here (llama.cpp's "
                         "llama-quantize makes it, with an importance matrix); load the GGUF file itself")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"argument 'dtype' must be None or one of {', '.join(DTYPES)}, got {dtype!r}")
    cuda_index = parse_device(device)
    if cuda_index is not None and dtype in ("f32", "float32"):
        raise ValueError("argument 'dtype': 'f32' is CPU-only; on a CUDA device matrices are f16, bf16 or quantized "
                         "(dtype=None keeps f16/bf16 and converts f32 to f16)")
    if os.path.isfile(path) and path.endswith(".gguf"):
        from .gguf_io import load_gguf

        model = load_gguf(path, dtype, _options(threads, max_context, dtype, os.path.getsize(path), exact_q8_prompts,
                                                kv_dtype))
        return model if cuda_index is None else to_device(model, cuda_index, kv_dtype)
    st_dir = resolve_checkpoint(path)
    model_dir = transformer_dir(st_dir)  # (older sentence-transformers folders keep the model in 0_Transformer/)
    cfg_path = os.path.join(model_dir, "config.json")
    if not os.path.exists(cfg_path):
        raise ValueError(f"{model_dir}: no config.json")
    config = _read_json(cfg_path)
    files = find_weight_files(model_dir)
    checkpoint = _core.TensorMap.open_safetensors(files)
    opts = _options(threads, max_context, dtype, sum(os.path.getsize(f) for f in files), exact_q8_prompts, kv_dtype)
    tok = TokenizerInfo(model_dir)
    if isinstance(config.get("model_type"), str) and config["model_type"] in ENCODER_DECODERS:
        from .seq2seq import Seq2SeqModel

        cfg = Config(config, cfg_path)
        enc_spec, enc_names, dec_spec, dec_names = ENCODER_DECODERS[config["model_type"]](cfg, checkpoint.names())
        for spec in (enc_spec, dec_spec):
            try:
                spec.validate()
            except ValueError as e:
                raise ValueError(f"{cfg_path}: {e}") from None
        enc = _core.Model(enc_spec, checkpoint, _materialize(checkpoint, enc_names, config=config), opts)
        dec_names = _materialize(checkpoint, dec_names, config=config)

        def make_decoder():
            return _core.Model(dec_spec, checkpoint, dec_names, opts)

        model = Seq2SeqModel(enc, make_decoder, config, tok, model_dir)
        return model if cuda_index is None else to_device(model, cuda_index, kv_dtype)
    spec, names = spec_from_config(config, cfg_path, checkpoint.names())
    if dtype in QUANTIZED:  # (laid out as in llama.cpp's files, which only then can hold the quantized tensors)
        from .gguf_hybrid import gguf_linear_layout
        from .gguf_io import gguf_rotary_layout

        gguf_rotary_layout(spec, names)
        gguf_linear_layout(spec, names)
    head = None
    if spec.kind == _core.ModelKind.encoder:
        from .heads import classifier_head

        head = classifier_head(config, checkpoint, spec.hidden_size)
    core = _core.Model(spec, checkpoint, _materialize(checkpoint, names, consumable=True, config=config), opts,
                       consume=True)
    model = Model(core, config, tok, st_dir)  # (its path: where embed() reads the sentence-transformers files)
    model._head = head
    return model if cuda_index is None else to_device(model, cuda_index, kv_dtype)


def _options(threads, max_context, dtype, size: int, exact_q8_prompts: bool = False,
             kv_dtype: Optional[str] = None) -> "_core.ModelOptions":
    opts = _core.ModelOptions()
    opts.threads = threads or 0
    opts.max_context = max_context or 0
    opts.dtype = dtype or ""
    opts.progress = sys.stderr.isatty() and size > (512 << 20)
    opts.exact_q8_prompts = exact_q8_prompts
    opts.kv_dtype = kv_dtype or ""
    return opts


# llama.cpp's block formats, most bits first, then CTranslate2's int8 (stored as q8_0)
BLOCK_TYPES = ("q8_0", "q6_k", "q5_k", "q5_1", "q5_0", "q4_k", "q4_1", "q4_0", "iq4_nl", "iq4_xs", "q3_k", "q2_k")
QUANTIZED = BLOCK_TYPES + ("int8",)
# llama.cpp's 1- to 3-bit i-quants (codebooks): loaded from GGUF files as stored, never made by load(dtype=...)
GRID_TYPES = ("iq3_s", "iq3_xxs", "iq2_s", "iq2_xs", "iq2_xxs", "iq1_m", "iq1_s")
DTYPES = ("f32", "float32", "f16", "float16", "bf16", "bfloat16") + QUANTIZED


def _materialize(checkpoint: "_core.TensorMap", names: Dict[str, Any], consumable: bool = False,
                 config: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """Builds the Derived weights (transposed / regrouped; an FP8 checkpoint's matrices dequantized: fp8.py) into
    the map; returns canonical -> map name. consumable: each one is marked so that a Model built with consume=True
    erases it once it holds its own copy (not for maps that build several models, as a seq2seq decoder's beams do).
    config: its quantization_config's weight_block_size, for FP8 scales."""
    out: Dict[str, str] = {}
    block = ((config or {}).get("quantization_config") or {}).get("weight_block_size") or Derived.fp8_block
    if not (isinstance(block, (list, tuple)) and len(block) == 2 and all(
            isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)):
        raise ValueError(f"config.json: field 'quantization_config.weight_block_size' must be two positive integers, "
                         f"got {block!r}")
    from .fp8 import forget

    try:
        for canonical, v in names.items():
            if isinstance(v, str) and v in checkpoint and checkpoint.get(v).dtype == _core.DType.f8_e4m3:
                v = Derived(v)
            if isinstance(v, Derived):
                v.fp8_block = block
                key = f"{v.src} [as {canonical}]"
                if key not in checkpoint:
                    arr, dt, src = v.build(checkpoint)
                    checkpoint.add_array(key, arr, dt, src, consumable)
                    del arr
                    checkpoint.drop_pages(v.src)  # (the file's pages, read again only if something reads them)
                out[canonical] = key
            else:
                out[canonical] = v
    finally:  # (fp8 keeps the last matrix it dequantized for the next cut of it: not past this load, nor a failed one)
        forget()
    return out


def _prefill_chunks(core, ids: Sequence[int], rope_length: int = 0) -> None:
    """Appends ids to core's KV cache, PREFILL_CHUNK tokens per forward, computing no logits. rope_length: the
    whole prompt's length, for rotary scaling that depends on it (every chunk's keys as one call's would be)."""
    for i in range(0, len(ids), PREFILL_CHUNK):
        core.prefill(np.asarray(ids[i : i + PREFILL_CHUNK], dtype=np.int32), rope_length)


def _head_split(ids: Sequence[int]) -> int:
    """How many of a prompt's tokens are prefilled as whole chunks before its last piece (1..PREFILL_CHUNK
    tokens): that piece is the input of the forward that computes the prompt's last logits only (the first
    step of a generation)."""
    return (len(ids) - 1) // PREFILL_CHUNK * PREFILL_CHUNK


def _run_to_end(gen):
    """Exhausts a generation generator; returns its GenerationResult (a list of them for a batch)."""
    try:
        while True:
            next(gen)
    except StopIteration as e:
        return e.value


class Model:
    """A loaded model. Calls on one Model run one at a time (a lock serializes them); separate Model
    objects run concurrently."""

    def __init__(self, core: "_core.Model", config: Dict[str, Any], tok: TokenizerInfo, path: str):
        self._core = core
        self.config = config
        self.path = path
        self.device = "cpu"  # "cuda:N" once moved to a device (load(device=...))
        self._tok = tok
        self._head = None  # an encoder's sequence-classification head (heads.py), set by load()
        self._lock = threading.RLock()
        self._cached: List[int] = []  # the tokens whose keys/values are in the cache
        self.generation_config = {}
        gc_path = os.path.join(path, "generation_config.json")
        if os.path.exists(gc_path):
            self.generation_config = _read_json(gc_path)
        self.eos_token_ids = self._eos_ids()

    # -- properties ---------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        """The Hugging Face `tokenizers.Tokenizer` from tokenizer.json (None if the checkpoint has none)."""
        return self._tok.tokenizer

    @property
    def spec(self) -> "_core.ArchSpec":
        return self._core.spec

    @property
    def max_context(self) -> int:
        return self._core.max_context

    @property
    def threads(self) -> int:
        return self._core.threads

    def __repr__(self) -> str:
        s = self.spec
        experts = f"experts={s.n_experts_used}/{s.n_experts}, " if s.n_experts else ""
        kinds = list(s.layer_linear)
        attention = not kinds or s.ssm_parallel or 0 in kinds  # (a model of recurrent mixers alone has no heads)
        heads = f"heads={s.n_heads}/{s.n_kv_heads}, " if attention else ""
        recurrent = f"recurrent layers={sum(k not in (0, 4) for k in kinds) or s.n_layers}, " if s.recurrent() else ""
        return (f"Model({s.model_type}, layers={s.n_layers}, hidden={s.hidden_size}, {heads}{recurrent}"
                f"{experts}vocab={s.vocab_size}, max_context={self.max_context}, threads={self.threads}"
                + (f", device={self.device})" if self.device != "cpu" else ")"))

    def _eos_ids(self) -> List[int]:
        ids: List[int] = []
        for src in (self.generation_config, self.config):
            v = src.get("eos_token_id")
            if isinstance(v, int):
                ids.append(v)
            elif isinstance(v, list):
                ids.extend(i for i in v if isinstance(i, int))
            if ids:
                break
        t = self._tok.token_id(self._tok.eos_token)
        if not ids and t is not None:
            ids.append(t)
        return ids

    # -- core calls ---------------------------------------------------------------------------------
    def _ids(self, input_ids: Any, what: str = "input_ids") -> np.ndarray:
        try:
            a = np.asarray(input_ids)
        except ValueError as e:  # ragged nested lists
            raise ValueError(f"{what}: expected a rectangular array of token ids ({e})") from None
        if a.dtype == object or (a.size and not np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"{what}: expected integer token ids, got {a.dtype}")
        V = self.spec.vocab_size
        if a.size:  # range-check in the given dtype, before any cast can wrap a value around
            bad = a[(a < 0) | (a >= V)]
            if bad.size:
                raise ValueError(f"{what}: token id {int(bad.flat[0])} is outside the vocabulary [0, {V})")
        return a.astype(np.int32)

    def _check_len(self, n: int, what: str):
        if n > self.max_context:
            raise ValueError(f"{what}: {n} tokens exceed max_context={self.max_context} "
                             "(load with a larger max_context=, up to the model's trained length)")

    def _prefill(self, ids: np.ndarray, logits: bool, rope_length: int = 0) -> Optional[np.ndarray]:
        """Appends ids to the cache in chunks; returns the logits of every position if asked. rope_length: the
        length of the whole call these chunks stand for (0: the cache's length after them)."""
        rope_length = rope_length or len(self._cached) + len(ids)
        if not logits:
            _prefill_chunks(self._core, ids, rope_length)
            self._cached.extend(int(t) for t in ids)
            return None
        out = []
        for i in range(0, len(ids), PREFILL_CHUNK):
            chunk = ids[i : i + PREFILL_CHUNK]
            out.append(self._core.forward(chunk, True, False, rope_length))
            self._cached.extend(int(t) for t in chunk)
        return np.concatenate(out, axis=0)

    def _prefill_head(self, ids: Sequence[int]) -> List[int]:
        """Prefills the whole chunks of ids before their last piece and returns that piece (_head_split)."""
        n = _head_split(ids)
        self._prefill(np.asarray(ids[:n], dtype=np.int32), logits=False, rope_length=len(self._cached) + len(ids))
        return list(ids[n:])

    @property
    def _keys_depend_on_length(self) -> bool:
        """Dynamic NTK and longrope rotary scaling: a key's frequencies depend on the length of the call that
        computed it, so cached keys are never reused by another call (prefix reuse, prompt lookup, a Batcher's
        prefix cache)."""
        return self.spec.pos == _core.PosKind.rotary and self.spec.rope.scaling in (_core.RopeScaling.dynamic,
                                                                                  _core.RopeScaling.longrope)

    @property
    def _rewindable(self) -> bool:
        """Whether the cache can keep any prefix of its tokens: not where recurrent layers (Gated DeltaNet, short
        convolutions, Mamba2) hold a state of all of them (it is kept whole, when a prompt continues every cached
        token, or dropped)."""
        return not self.spec.recurrent()

    def _reset_to(self, ids: Sequence[int]) -> int:
        """Keeps the longest cached prefix of ids (at least one token is left to run); returns its length."""
        n = 0 if self._keys_depend_on_length else _shared_prefix(self._cached, ids)
        if not self._rewindable and n != len(self._cached):
            n = 0
        self._core.truncate(n)
        del self._cached[n:]
        return n

    @property
    def is_encoder(self) -> bool:
        return self.spec.kind == _core.ModelKind.encoder

    def _need_decoder(self, what: str):
        if self.is_encoder:
            raise ValueError(f"{what}: {self.spec.model_type} is an encoder; use hidden_states() or embed()")

    def _rows(self, input_ids: Any, what: str = "input_ids") -> np.ndarray:
        a = self._ids(input_ids, what)
        if a.ndim not in (1, 2) or a.shape[-1] == 0:
            raise ValueError(f"{what}: expected a non-empty 1-D or 2-D array of token ids, got shape {a.shape}")
        self._check_len(a.shape[-1], what)
        return a

    def hidden_states(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None) -> np.ndarray:
        """The last hidden state, float32 [B, T, hidden] ([T, hidden] for 1-D input_ids).

        Encoders attend over every position whose attention_mask is 1 (padding keys are masked, as in
        transformers). Decoders run causally; with a mask, each row's unmasked tokens must come first (right
        padding) and padded positions come back as zeros.
        """
        a = self._rows(input_ids)
        rows = a[None] if a.ndim == 1 else a
        masks = self._aux(attention_mask, rows.shape, "attention_mask")
        types = self._aux(token_type_ids, rows.shape, "token_type_ids")
        out = np.zeros(rows.shape + (self.spec.hidden_size,), np.float32)
        if self.is_encoder:
            for b, h in enumerate(self._encode(list(rows), None if types is None else list(types),
                                               None if masks is None else list(masks))):
                out[b] = h
            return out[0] if a.ndim == 1 else out
        with self._lock:
            self._cached = []
            for b, row in enumerate(rows):
                m = None if masks is None else masks[b]
                t = None if types is None else types[b]
                n = len(row) if m is None else int(m.sum())
                if m is not None and not m[:n].all():
                    raise ValueError("attention_mask: a decoder's padding must come after its tokens (right padding)")
                self._core.reset()
                for i in range(0, n, PREFILL_CHUNK):
                    j = min(n, i + PREFILL_CHUNK)
                    out[b, i:j] = self._core.hidden_states(row[i:j], None if t is None else t[i:j], None)
            self._core.reset()
        return out[0] if a.ndim == 1 else out

    def _encode(self, seqs: List[np.ndarray], types: Optional[List[Optional[np.ndarray]]] = None,
                masks: Optional[List[Optional[np.ndarray]]] = None) -> List[np.ndarray]:
        """An encoder's last hidden states [T_i, hidden] of several inputs (checked ids; token types and padding
        masks each None or of the input's length), each as if it ran alone. On the CPU they run packed into passes of
        up to max_context tokens (at most PACK_TOKENS; each attending within itself), so that the matrix products of
        many short texts take all their rows at once."""
        n = len(seqs)
        types = types or [None] * n
        masks = masks or [None] * n
        # tokens a pass (an input longer runs alone): the products are as fast from a few hundred rows, and the
        # activations of a pass grow with it (ModernBERT's max_context of 8192 would hold ~260 MB of them)
        budget = min(self.max_context, PACK_TOKENS)
        out: List[np.ndarray] = []
        with self._lock:
            self._cached = []
            i = 0
            while i < n:
                j, total = i + 1, len(seqs[i])
                while self.device == "cpu" and j < n and total + len(seqs[j]) <= budget:
                    total += len(seqs[j])
                    j += 1
                group = range(i, j)
                ids = np.concatenate([seqs[k] for k in group]).astype(np.int32)

                def joined(parts, fill):
                    if all(x is None for x in parts):
                        return None
                    return np.concatenate([np.full(len(seqs[k]), fill, np.int32) if x is None else
                                           np.asarray(x, np.int32) for k, x in zip(group, parts)])

                t = joined([types[k] for k in group], 0)
                m = joined([masks[k] for k in group], 1)
                m = None if m is None else m.astype(np.uint8)
                rows = [position_rows(self.config, seqs[k]) for k in group]
                pr = None if rows[0] is None else np.concatenate(rows)
                lens = np.asarray([len(seqs[k]) for k in group], np.int32)
                h = self._core.hidden_states(ids, t, m, pr, lens if len(lens) > 1 else None)
                out.extend(np.split(h, np.cumsum(lens)[:-1]))
                i = j
        return out

    @staticmethod
    def _aux(x: Any, shape, what: str) -> Optional[np.ndarray]:
        if x is None:
            return None
        a = np.asarray(x)
        if a.ndim == 1 and len(shape) == 2 and shape[0] == 1:
            a = a[None]
        if a.shape != tuple(shape) or not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            raise ValueError(f"{what}: expected integers of shape {tuple(shape)}, got {a.dtype} {a.shape}")
        return a.astype(np.int32)

    def embed(self, texts_or_ids: Any, pooling: Optional[str] = None, normalize: Optional[bool] = None,
              batch_size: int = 32, prompt: Optional[str] = None, prompt_name: Optional[str] = None) -> np.ndarray:
        """Sentence embeddings, float32 [N, dim]: pooled last hidden states ("mean" over the tokens, "cls",
        "last", "max", "mean_sqrt_len", "weighted_mean"), through the checkpoint's Dense modules, L2-normalized if
        asked. Defaults come from the checkpoint's sentence-transformers files (modules.json, 1_Pooling/config.json),
        else mean pooling without normalization. prompt / prompt_name: text put before each text input, as
        sentence-transformers' encode() does (prompt_name: a key of config_sentence_transformers.json's prompts,
        whose default_prompt_name applies when neither is given); where the pooling config says include_prompt:
        false, the prompt's tokens are not pooled, as sentence-transformers counts them."""
        from .embeddings import embed

        return embed(self, texts_or_ids, pooling, normalize, batch_size, prompt, prompt_name)

    def classify(self, inputs: Any) -> np.ndarray:
        """Sequence classification logits, float32 [N, labels], of a *ForSequenceClassification encoder
        (cross-encoder rerankers, sentiment or NLI classifiers): inputs is a text, a (text, text) pair (query and
        passage: tokenized as one input with the tokenizer's separators and token types) or a list of them, or
        lists of token ids. Too long a text is cut (the longer of a pair first). Raw logits, as transformers
        returns them: a one-label reranker's score is the logit (sentence-transformers' CrossEncoder adds a
        sigmoid); `labels` names the columns."""
        from .heads import classify

        return classify(self, inputs)

    @property
    def labels(self) -> Dict[int, str]:
        """The classification head's column names (config.json's id2label); empty without a head."""
        return dict(self._head.labels) if self._head is not None else {}

    def logits(self, input_ids: Any) -> np.ndarray:
        """float32 logits at every position: [T, vocab] for 1-D input_ids, [B, T, vocab] for 2-D."""
        self._need_decoder("logits")
        a = self._ids(input_ids)
        if a.ndim not in (1, 2) or a.shape[-1] == 0:
            raise ValueError(f"input_ids: expected a non-empty 1-D or 2-D array of token ids, got shape {a.shape}")
        self._check_len(a.shape[-1], "input_ids")
        with self._lock:
            rows = a[None] if a.ndim == 1 else a
            out = []
            for row in rows:
                self._core.reset()
                self._cached = []
                out.append(self._prefill(row, logits=True))
            return out[0] if a.ndim == 1 else np.stack(out)

    # -- generation ---------------------------------------------------------------------------------
    def _sampler_options(self, temperature, top_k, top_p, min_p, repetition_penalty, seed, presence_penalty=None,
                         frequency_penalty=None, logit_bias=None, grammar=None) -> "_core.SamplerOptions":
        g = self.generation_config
        sampling = bool(g.get("do_sample", False))
        o = _core.SamplerOptions()
        args = {
            "temperature": temperature if temperature is not None else (g.get("temperature", 1.0) if sampling else 0.0),
            "top_k": top_k if top_k is not None else (g.get("top_k", 0) if sampling else 0),
            "top_p": top_p if top_p is not None else (g.get("top_p", 1.0) if sampling else 1.0),
            "min_p": min_p if min_p is not None else 0.0,
            "repetition_penalty": repetition_penalty if repetition_penalty is not None else 1.0,
            "presence_penalty": presence_penalty if presence_penalty is not None else 0.0,
            "frequency_penalty": frequency_penalty if frequency_penalty is not None else 0.0,
        }
        for k, v in args.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"argument '{k}' must be a number, got {v!r}")
        top_k = args["top_k"]
        if not float(top_k).is_integer() or top_k < 0:
            raise ValueError(f"argument 'top_k' must be an integer >= 0 (0 disables it), got {top_k!r}")
        o.temperature = float(args["temperature"])
        o.top_k = int(min(top_k, self.spec.vocab_size))  # k >= vocab keeps everything
        o.top_p = float(args["top_p"])
        o.min_p = float(args["min_p"])
        o.repetition_penalty = float(args["repetition_penalty"])
        o.presence_penalty = float(args["presence_penalty"])
        o.frequency_penalty = float(args["frequency_penalty"])
        if logit_bias is not None:
            if not isinstance(logit_bias, dict):
                raise ValueError(f"argument 'logit_bias' must be a dict of token id -> bias, got {logit_bias!r}")
            if len(logit_bias) > MAX_LOGIT_BIAS:  # (each step applies them all)
                raise ValueError(f"argument 'logit_bias': at most {MAX_LOGIT_BIAS} tokens, got {len(logit_bias)}")
            pairs = []
            for t, b in logit_bias.items():
                tok = int(t) if isinstance(t, str) and t.strip().lstrip("-").isdigit() else t  # (JSON's keys)
                if isinstance(tok, bool) or not isinstance(tok, int) or not 0 <= tok < self.spec.vocab_size:
                    raise ValueError(f"argument 'logit_bias': {t!r} is not a token id in [0, {self.spec.vocab_size})")
                if isinstance(b, bool) or not isinstance(b, (int, float)) or not -100 <= b <= 100:
                    raise ValueError(f"argument 'logit_bias': the bias of token {tok} must be a number in "
                                     f"[-100, 100], got {b!r}")
                pairs.append((tok, float(b)))
            o.logit_bias = pairs
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ValueError(f"argument 'seed' must be a non-negative integer, got {seed!r}")
            o.seed = seed % 2**64
        else:
            o.seed = int.from_bytes(os.urandom(8), "little")
        g = as_grammar(grammar)
        if g is not None:
            o.grammar = self._bound_grammar(g)
        o.validate()
        return o

    def _bound_grammar(self, g: Grammar) -> "_core.Grammar":
        """g bound to this model's vocabulary, cached: its automaton's states and their token masks carry over
        from one generation to the next."""
        with _GRAMMAR_LOCK:  # (requests of a server bind theirs from many threads)
            cache = self.__dict__.setdefault("_grammars", {})
            if g in cache:
                cache[g] = cache.pop(g)  # (the most recently used last)
                return cache[g]
            vocab = self.__dict__.get("_grammar_vocab")
            if vocab is None:
                if self._tok.tokenizer is None:
                    raise ValueError("argument 'grammar': this checkpoint has no tokenizer, which a grammar needs")
                tb, strip = token_bytes(self._tok.tokenizer, self.spec.vocab_size)
                vocab = self._grammar_vocab = _core.GrammarVocab(tb, self.eos_token_ids, strip)
            bound = cache[g] = _core.Grammar(g._rules, vocab)
            while len(cache) > 16:
                cache.pop(next(iter(cache)))
            return bound

    def _prompt_ids(self, prompt: Any, what: str = "prompt") -> List[int]:
        if isinstance(prompt, str):
            ids = self._tok.encode(prompt)
        elif isinstance(prompt, (list, tuple, np.ndarray)):
            a = self._ids(prompt, what)
            if a.ndim != 1:
                raise ValueError(f"{what}: expected a string or a 1-D list of token ids, got shape {a.shape}")
            ids = a.tolist()
        else:
            raise ValueError(f"{what}: expected a string or a 1-D list of token ids, got {type(prompt).__name__}")
        if not ids:
            raise ValueError(f"{what}: empty (no tokens to condition on)")
        self._check_len(len(ids), what)
        return ids

    def generate(self, prompt: Union[str, Sequence[int], Sequence[Union[str, Sequence[int]]]], max_new_tokens: int = 128,
                 temperature: Optional[float] = None, top_k: Optional[int] = None, top_p: Optional[float] = None,
                 min_p: Optional[float] = None, repetition_penalty: Optional[float] = None, seed: Optional[int] = None,
                 stop: Union[None, str, Sequence[str]] = None, ignore_eos: bool = False, stream: bool = False,
                 logprobs: Optional[int] = None, presence_penalty: Optional[float] = None,
                 frequency_penalty: Optional[float] = None, prompt_lookup: int = 0,
                 logit_bias: Optional[Dict[int, float]] = None, grammar: Union[None, str, Grammar] = None):
        """Generates up to max_new_tokens after prompt (a string, or a list of token ids).

        temperature=0 is greedy; unset sampling arguments follow the checkpoint's generation_config.json
        (greedy when it has none). stop: strings that end the generation (not included in the text).
        Returns a GenerationResult (.text, .token_ids of the new tokens), or with stream=True an iterator
        of text pieces whose `.result` is the GenerationResult once it is exhausted. logprobs=k (0..20): the
        result's .logprobs holds each new token's log-probability under the model and the k most likely tokens
        at its position (TokenLogprob); on a device, each step's logits row comes back to the host for it.
        presence_penalty / frequency_penalty (-2..2): OpenAI's, on the tokens generated so far (not the
        prompt's): a logit less frequency_penalty times the token's count, and presence_penalty once it occurs.
        logit_bias ({token id: bias}, -100..100): OpenAI's, added to those tokens' logits at every step (-100
        bans a token in practice, 100 all but forces it).
        grammar (a Grammar, or GBNF text): each step draws only among the tokens that keep the new text a
        prefix of a sentence of the grammar (Grammar.json(), Grammar.from_json_schema(...) for JSON); an end
        token only once the text is a whole sentence, and once nothing can follow it the generation ends
        (finish_reason "stop").
        prompt_lookup=k (one prompt, CPU; not with logprobs): each step also proposes up to k tokens, those that
        followed the latest earlier occurrence of the text's last 1-3 tokens in the prompt or the output, and
        checks them in the same forward, keeping those that the step-by-step draws confirm: the same tokens (up
        to rounding), several per forward where the output repeats its context (summaries, code edits,
        extraction).

        A list of prompts (strings or lists of token ids) generates for each of them and returns a list of
        results: the decode steps of all the sequences still running run as one batch, so the weights are
        read once per step for all of them (several times the tokens per second of one sequence on a CPU,
        whose decode waits on memory). Each prompt gets the tokens it would get alone (with a seed: the same
        seed each; without one, independent draws), up to rounding. With stream=True the iterator yields
        (prompt index, text piece) pairs as the batch's steps produce them (a sequence's last piece as soon
        as it ends), and its `.result` is the list of results.
        """
        self._need_decoder("generate")
        logprobs = self._check_logprobs(logprobs)
        batch = (isinstance(prompt, (list, tuple)) and len(prompt) > 0 and all(
            isinstance(p, (str, list, tuple, np.ndarray)) for p in prompt)) or (
            isinstance(prompt, np.ndarray) and prompt.ndim == 2)
        sampling = (temperature, top_k, top_p, min_p, repetition_penalty, seed, presence_penalty, frequency_penalty,
                    logit_bias, grammar)
        if batch:
            if prompt_lookup:
                raise ValueError("argument 'prompt_lookup': for one prompt at a time")
            prompts = [self._prompt_ids(p, f"prompt {i}") for i, p in enumerate(prompt)]
            stops, _ = self._options_and_stops(max_new_tokens, sampling, stop)

            def options() -> "_core.SamplerOptions":  # a fresh random seed per prompt when none is given
                return self._sampler_options(*sampling)

            gen = self._generate_batch(prompts, max_new_tokens, options, stops, ignore_eos, logprobs)
        else:
            ids, stops, opts = self._generation_args(prompt, max_new_tokens, sampling, stop)
            gen = self._generate(ids, max_new_tokens, opts, stops, ignore_eos, logprobs,
                                 self._check_prompt_lookup(prompt_lookup, logprobs))
        return GenerationStream(gen) if stream else _run_to_end(gen)

    def _generation_args(self, prompt, max_new_tokens, sampling, stop):
        """generate()'s arguments for one prompt, checked before anything runs: (token ids, stop strings,
        sampler options; a fresh random seed when none is given). sampling: _sampler_options's arguments."""
        stops, opts = self._options_and_stops(max_new_tokens, sampling, stop)
        return self._prompt_ids(prompt), stops, opts

    def _check_prompt_lookup(self, k: Any, logprobs: Optional[int]) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= 64:
            raise ValueError(f"argument 'prompt_lookup' must be an integer in 0..64, got {k!r}")
        if k and not isinstance(self._core, _core.Model):
            raise ValueError("argument 'prompt_lookup': on the CPU only (a device samples on the device)")
        if k and logprobs is not None:
            raise ValueError("argument 'prompt_lookup' does not combine with logprobs")
        # (a forward's length counts rejected proposals too; a recurrent state cannot drop them)
        return 0 if self._keys_depend_on_length or not self._rewindable else k

    def _check_logprobs(self, logprobs: Any) -> Optional[int]:
        """generate()'s logprobs argument: None, or how many of the most likely tokens to report (0..20)."""
        if logprobs is None:
            return None
        if isinstance(logprobs, bool) or not isinstance(logprobs, int) or not 0 <= logprobs <= 20:
            raise ValueError(f"argument 'logprobs' must be an integer in 0..20 or None, got {logprobs!r}")
        return logprobs

    def _options_and_stops(self, max_new_tokens, sampling, stop):
        """The checks every prompt shares: (stop strings, sampler options)."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"argument 'max_new_tokens' must be a non-negative integer, got {max_new_tokens!r}")
        if stop is None:
            stops: List[str] = []
        elif isinstance(stop, str):
            stops = [stop]
        elif isinstance(stop, (list, tuple)) and all(isinstance(s, str) for s in stop):
            stops = list(stop)
        else:
            raise ValueError("argument 'stop' must be a string or a list of strings")
        return stops, self._sampler_options(*sampling)

    def _check_ahead(self, seq: List[int], n_ahead: int, sampler, history: np.ndarray) -> List[Tuple[int, None]]:
        """seq: the pending token and n_ahead proposed after it, run as one forward (with decode steps'
        products). Each row's token is drawn as a step would draw it (the same sampler, the tokens before it
        in the history) while the proposals hold: the tokens up to the first that differs from its proposal,
        and after all n_ahead held, one more. The cache keeps only the rows whose tokens were accepted."""
        base = len(self._cached)
        logits = self._core.forward(np.asarray(seq, dtype=np.int32), True, True)
        self._cached.extend(seq)
        outs: List[Tuple[int, None]] = []
        for j in range(len(seq)):
            tok = int(sampler.sample(logits[j], history))
            outs.append((tok, None))
            if j == n_ahead or tok != seq[j + 1]:
                break
            history = np.append(history, np.int32(tok))
        keep = base + len(outs)  # the pending token and the proposals accepted
        self._core.truncate(keep)
        del self._cached[keep:]
        return outs

    def _generate(self, ids: List[int], max_new_tokens: int, opts, stops: List[str], ignore_eos: bool,
                  logprobs: Optional[int] = None, prompt_lookup: int = 0):
        with self._lock:
            lps: Optional[List[TokenLogprob]] = None if logprobs is None else []
            sampler = _core.Sampler(opts)
            has_tok = self._tok.tokenizer is not None
            decoder = StreamDecoder(self._tok, stops) if has_tok else None
            eos = set() if ignore_eos else set(self.eos_token_ids)
            new: List[int] = []
            history = np.asarray(ids, dtype=np.int32)
            finish = "length"
            t0 = time.perf_counter()
            t_first = t0
            start = 0
            if max_new_tokens > 0:
                start = self._reset_to(ids)
                pending = self._prefill_head(ids[start:])  # the first step's input: no one-token step after it
                while len(new) < max_new_tokens:
                    if len(self._cached) + len(pending) > self.max_context:
                        finish = "context"
                        break
                    # tokens proposed ahead: what followed the latest earlier occurrence of the context's end
                    room = min(max_new_tokens - len(new) - 1, self.max_context - len(self._cached) - len(pending))
                    ahead = _lookup(ids + new, min(prompt_lookup, room)) if new and prompt_lookup and room > 0 else []
                    if ahead:
                        outs = self._check_ahead(pending + ahead, len(ahead), sampler, history)
                    else:
                        outs = [_step_result(self._core.step(np.asarray(pending, dtype=np.int32), sampler, history,
                                                             -1 if logprobs is None else logprobs))]
                        self._cached.extend(pending)
                    if not new:
                        t_first = time.perf_counter()
                    for tok, lp in outs:
                        if tok in eos or tok < 0:  # (-1: the grammar allows no token)
                            finish = "eos" if tok >= 0 else "stop"
                            break
                        new.append(tok)
                        if lp is not None:
                            lps.append(lp)
                        history = np.append(history, np.int32(tok))
                        pending = [tok]
                        if decoder is not None:
                            piece = decoder.update(new)
                            if piece:
                                yield piece
                            if decoder.stopped:
                                finish = "stop"
                                break
                        if sampler.grammar_finished:  # nothing but the end can follow
                            finish = "stop"
                            break
                        if len(new) >= max_new_tokens:
                            break
                    if finish != "length":
                        break
                if decoder is not None and not decoder.stopped:
                    piece = decoder.update(new, final=True)
                    if piece:
                        yield piece
            t1 = time.perf_counter()
            text = decoder.text if decoder is not None else ""
            return GenerationResult(text=text, token_ids=new, finish_reason=finish, prompt_tokens=len(ids),
                                    prefill_seconds=t_first - t0, decode_seconds=t1 - t_first, logprobs=lps,
                                    cached_tokens=start)

    def _generate_batch(self, prompts: List[List[int]], max_new_tokens: int, options, stops: List[str],
                        ignore_eos: bool, logprobs: Optional[int] = None):
        """A generator of (prompt index, text piece) that returns the list of GenerationResults.
        options(): each prompt's sampler options (the seed given, or a random one of its own)."""
        from .batching import generate_together

        return (yield from generate_together(self, prompts, max_new_tokens, options, stops, ignore_eos, logprobs))

    def chat(self, messages: List[Dict[str, Any]], tools: Optional[List[Dict[str, Any]]] = None,
             tool_choice: Any = None, **generate_kwargs):
        """Applies the checkpoint's chat template to messages and generates the assistant's reply.

        tools (OpenAI's list of {"type": "function", "function": {"name", "description", "parameters"}}) are
        rendered by the template, and the reply's calls to them come back in the result's `.tool_calls` (not
        with stream=True). tool_choice: "auto" (the default: the model decides), "none", "required" (one call,
        forced by a grammar of the functions' parameter schemas), or {"type": "function", "function": {"name":
        ...}} (that function)."""
        from .tools import check_tools, forced_grammar, parse_tool_calls, template_messages
        from .tools import tool_choice as _tool_choice

        mode, only = "none", None
        if tools is not None:
            tools = check_tools(tools)
            mode, only = _tool_choice(tool_choice, tools)
        elif tool_choice is not None:
            raise ValueError("argument 'tool_choice': needs tools")
        if mode == "required":
            if generate_kwargs.get("grammar") is not None:
                raise ValueError("argument 'grammar': a required tool call has a grammar of its own")
            generate_kwargs["grammar"] = forced_grammar(tools, only)
        text = self._tok.apply_chat_template(template_messages(messages), add_generation_prompt=True,
                                             tools=tools if mode != "none" else None)
        ids = self._tok.encode(text, add_special_tokens=False)
        out = self.generate(ids, **generate_kwargs)
        if mode != "none" and isinstance(out, GenerationResult):
            _, calls = parse_tool_calls(out.text, tools)
            out.tool_calls = calls or None
        return out
