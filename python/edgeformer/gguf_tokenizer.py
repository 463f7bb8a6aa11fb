"""GGUF tokenizer metadata (``tokenizer.ggml.*``) <-> ``tokenizers.Tokenizer`` / tokenizer.json.

* :func:`tokenizer_from_gguf` builds a ``tokenizers.Tokenizer`` (with its special tokens and chat template,
  :class:`GGUFTokenizer`) from a file's metadata dict;
* :func:`gguf_tokenizer_metadata` goes the other way, for a writer (gguf_config.add_metadata_to_writer).

Every error is a ValueError naming the source (file) and the GGUF key or field at fault.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from gguf.constants import TokenType

from .gguf_common import _T, _Meta, _short

__all__ = [
    "merges_from_scores",
    "GGUFTokenizer",
    "tokenizer_from_gguf",
    "gguf_tokenizer_metadata",
]

# ------------------------------------------------------------------------------------------------------------
# tokenizers.Tokenizer from GGUF metadata
# ------------------------------------------------------------------------------------------------------------

GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# tokenizer.ggml.pre -> split regex (others fall back to GPT-2's, which ByteLevel applies itself)
PRE_SPLITS = {
    "llama-bpe": LLAMA3_SPLIT,
    "llama3": LLAMA3_SPLIT,
    "llama-v3": LLAMA3_SPLIT,
    "smaug-bpe": LLAMA3_SPLIT,
    "falcon3": LLAMA3_SPLIT,
    "qwen2": QWEN2_SPLIT,
    "deepseek-r1-qwen": QWEN2_SPLIT,
}
_IGNORE_MERGES_PRE = {"llama-bpe", "llama3", "llama-v3", "smaug-bpe", "falcon3"}  # llama.cpp's LLAMA3 type
_BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
SPIECE = "\u2581"


@dataclass
class GGUFTokenizer:
    """A tokenizer rebuilt from GGUF metadata, with what tokenizer_config.json would have said."""

    tokenizer: Any  # tokenizers.Tokenizer
    model: str  # tokenizer.ggml.model: "gpt2", "llama", "bert" or "t5"
    chat_template: Optional[str] = None
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None
    unk_token_id: Optional[int] = None
    pad_token_id: Optional[int] = None
    add_bos_token: bool = False
    add_eos_token: bool = False

    def _token(self, i: Optional[int]) -> Optional[str]:
        return None if i is None else self.tokenizer.id_to_token(i)

    @property
    def bos_token(self) -> Optional[str]:
        return self._token(self.bos_token_id)

    @property
    def eos_token(self) -> Optional[str]:
        return self._token(self.eos_token_id)

    def tokenizer_config(self) -> Dict[str, Any]:
        """The tokenizer_config.json fields TokenizerInfo reads."""
        out: Dict[str, Any] = {"add_bos_token": self.add_bos_token, "add_eos_token": self.add_eos_token}
        for name, i in (("bos_token", self.bos_token_id), ("eos_token", self.eos_token_id),
                        ("unk_token", self.unk_token_id), ("pad_token", self.pad_token_id)):
            if i is not None:
                out[name] = self._token(i)
        if self.chat_template is not None:
            out["chat_template"] = self.chat_template
        return out


def merges_from_scores(tokens: Sequence[str], scores: Sequence[float]) -> List[Tuple[str, str]]:
    """BPE merges implied by a SentencePiece vocabulary, as transformers' generate_merges builds them for
    LlamaConverter: every split of a token into two vocabulary tokens, ranked by the token's score (highest
    first), then by the lengths of the left and right parts (longest first), then by their ids."""
    vocab = {t: i for i, t in enumerate(tokens)}
    scored = dict(zip(tokens, scores))  # later duplicates win, as in transformers
    merges = []
    for piece, score in scored.items():
        local = []
        for j in range(1, len(piece)):
            left, right = piece[:j], piece[j:]
            if left in vocab and right in vocab:
                local.append((left, right, score))
        local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda x: (x[2], len(x[0]), len(x[1])), reverse=True)
    return [(a, b) for a, b, _ in merges]


def _split_merge(m: _Meta, s: str) -> Tuple[str, str]:
    i = s.find(" ", 1)  # as llama.cpp: the first space after the first character
    if i < 0:
        raise m.error(_T.MERGES, f"holds {s!r}, which is not two tokens separated by a space")
    return s[:i], s[i + 1:]


def _set_template(
    tok, bos: Optional[Tuple[str, int]], eos: Optional[Tuple[str, int]], bert: bool = False
):
    """A TemplateProcessing post-processor: [bos] $A [eos], and for pairs [bos] $A [eos] [bos] $B [eos]
    (BERT: [CLS] $A [SEP] $B [SEP]); returns the tokenizer (a new one when a token holds ':')."""
    from tokenizers import Tokenizer, processors

    def seq(name: str, type_id: int, first: bool) -> List[Tuple[str, str, int]]:
        out = [] if not bos or (bert and not first) else [("SpecialToken", bos[0], type_id)]
        out.append(("Sequence", name, type_id))
        if eos:
            out.append(("SpecialToken", eos[0], type_id))
        return out

    single, pair = seq("A", 0, True), seq("A", 0, True) + seq("B", 1, False)
    specials = sorted({t for t in (bos, eos) if t}, key=lambda t: t[1])
    if not any(":" in t for t, _ in specials):
        def text(items):
            return [f"{n if k == 'SpecialToken' else '$' + n}:{i}" for k, n, i in items]

        tok.post_processor = processors.TemplateProcessing(
            single=text(single), pair=text(pair), special_tokens=specials
        )
        return tok
    # the template mini-language splits on ':': spell it out as JSON instead
    def as_json(items):
        return [{k: {"id": n, "type_id": i}} for k, n, i in items]

    data = json.loads(tok.to_str())
    data["post_processor"] = {
        "type": "TemplateProcessing", "single": as_json(single), "pair": as_json(pair),
        "special_tokens": {t: {"id": t, "ids": [i], "tokens": [t]} for t, i in specials},
    }
    return Tokenizer.from_str(json.dumps(data))


def _add_tokens(tok, tokens: List[str], types: Optional[List[int]], skip=()) -> None:
    from tokenizers import AddedToken

    if not types:
        return
    special, user = [], []
    for t, ty in zip(tokens, types):
        if t in skip:
            continue
        if ty in (TokenType.CONTROL, TokenType.UNKNOWN, TokenType.UNUSED):  # (unused: padding, decoded to nothing)
            special.append(AddedToken(t, special=True, normalized=False))
        elif ty == TokenType.USER_DEFINED:
            user.append(AddedToken(t, special=False, normalized=False))
    if special:
        tok.add_special_tokens(special)
    if user:
        tok.add_tokens(user)


def _unigram_from_gguf(m: _Meta, tokens: List[str], types: Optional[List[int]], ids: Dict[str, Optional[int]],
                       add_space: Optional[bool]):
    """SentencePiece's unigram model (``t5``: T5, mT5, and the XLM-R vocabularies of BERT-style files) as
    sentencepiece applies it, and llama.cpp's UGM tokenizer: the normalization rules of the file's
    precompiled_charsmap (NFKC and the like), whitespace runs collapsed and stripped, a "\u2581" before every
    word, then the most likely segmentation by the pieces' scores."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    n = len(tokens)
    scores = m.array(_T.SCORES, float, length=n)
    unk = ids["unk"]
    if unk is None and types:
        unk = next((i for i, ty in enumerate(types) if ty == TokenType.UNKNOWN), None)
    if unk is None:
        raise m.error(_T.UNK_ID, "is missing and no token has the unknown type: a unigram model needs one")
    ids["unk"] = unk
    byte_fallback = bool(types) and any(ty == TokenType.BYTE for ty in types)
    try:
        uni = models.Unigram([(t, float(sc)) for t, sc in zip(tokens, scores)], unk_id=unk,
                             byte_fallback=byte_fallback)
    except Exception as e:  # the tokenizers library raises its own exception type
        raise m.error(_T.LIST, f"does not make a valid unigram model ({e})") from None
    tok = Tokenizer(uni)
    steps = []
    if m.has(_T.PRECOMPILED_CHARSMAP):
        raw = m.raw(_T.PRECOMPILED_CHARSMAP)
        if isinstance(raw, (bytes, bytearray)):
            charsmap = bytes(raw)
        else:
            vals = m.array(_T.PRECOMPILED_CHARSMAP, int)
            if any(not -128 <= v < 256 for v in vals):  # uint8, or int8 as some writers store it
                raise m.error(_T.PRECOMPILED_CHARSMAP, "must be an array of bytes (uint8 or int8)")
            charsmap = bytes(v & 0xFF for v in vals)
        try:
            steps.append(normalizers.Precompiled(charsmap))
        except Exception as e:
            raise m.error(_T.PRECOMPILED_CHARSMAP, f"is not a valid SentencePiece character map ({e})") from None
    if m.get(_T.REMOVE_EXTRA_WS, bool, True):
        steps += [normalizers.Replace(Regex(" {2,}"), " "), normalizers.Strip(left=True, right=True)]
    if steps:
        tok.normalizer = normalizers.Sequence(steps)
    scheme = "always" if add_space is None or add_space else "never"
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPIECE, prepend_scheme=scheme, split=True)
    dec = [decoders.Metaspace(replacement=SPIECE, prepend_scheme=scheme, split=True)]
    if byte_fallback:
        dec = [decoders.ByteFallback(), decoders.Fuse()] + dec
    tok.decoder = decoders.Sequence(dec) if len(dec) > 1 else dec[0]
    _add_tokens(tok, tokens, types)
    return tok


def tokenizer_from_gguf(meta: Dict[str, Any], source: str) -> GGUFTokenizer:
    """A ``tokenizers.Tokenizer`` (and its special tokens and chat template) from the ``tokenizer.ggml.*``
    metadata: byte-level BPE (model ``gpt2``), SentencePiece BPE with byte fallback (``llama``, as LLaMA 2 and
    Mistral; merges come from the scores as transformers' LlamaConverter derives them, unless the file has
    merges), WordPiece (``bert``) and SentencePiece's unigram model (``t5``)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    m = _Meta(meta, source)
    kind = m.get(_T.MODEL, str)
    tokens = m.array(_T.LIST, str)
    n = len(tokens)
    if n == 0:
        raise m.error(_T.LIST, "is empty")
    types = m.array(_T.TOKEN_TYPE, int, None, length=n)
    ids = {
        name: m.token_id(key, n)
        for name, key in (
            ("bos", _T.BOS_ID),
            ("eos", _T.EOS_ID),
            ("unk", _T.UNK_ID),
            ("pad", _T.PAD_ID),
            ("sep", _T.SEP_ID),
        )
    }
    template = m.get(_T.CHAT_TEMPLATE, str, None)
    add_space = m.get(_T.ADD_PREFIX, bool, None)

    def pair(name: str, toks: List[str]) -> Optional[Tuple[str, int]]:
        i = ids[name]
        return None if i is None else (toks[i], i)

    def model_error(key: str, e: Exception) -> ValueError:
        return m.error(key, f"does not make a valid tokenizer ({e})")

    if kind == "gpt2":
        pre = m.get(_T.PRE, str, "default")
        merges = [_split_merge(m, s) for s in m.array(_T.MERGES, str)]
        vocab = {t: i for i, t in enumerate(tokens)}
        try:
            bpe = models.BPE(vocab=vocab, merges=merges, ignore_merges=pre in _IGNORE_MERGES_PRE)
        except Exception as e:  # the tokenizers library raises its own exception type
            raise model_error(_T.MERGES, e) from None
        tok = Tokenizer(bpe)
        prefix = bool(add_space)
        split = PRE_SPLITS.get(pre)
        if split is None and pre not in ("default", "gpt-2", "gpt2"):
            warnings.warn(
                f"{source}: GGUF key '{_T.PRE}' is {pre!r}, a pre-tokenizer this reader does not know; "
                "splitting with GPT-2's regex instead",
                stacklevel=2,
            )
        if split is None:
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix, use_regex=True)
        else:
            tok.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=prefix, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        add_bos = m.get(_T.ADD_BOS, bool, False)
        add_eos = m.get(_T.ADD_EOS, bool, False)
        toks = tokens
        _add_tokens(tok, tokens, types)
    elif kind in ("llama", "gemma4"):
        # (gemma4: SentencePiece-style BPE from merges, no space prefix, BOS always, newline runs split off first)
        gemma4 = kind == "gemma4"
        scores = m.array(_T.SCORES, float, None, length=n)
        if m.has(_T.MERGES):
            merges = [_split_merge(m, s) for s in m.array(_T.MERGES, str)]
        elif scores is None:
            raise m.error(_T.SCORES, "is missing (and there are no merges): cannot rank the BPE merges")
        else:
            merges = merges_from_scores(tokens, scores)
        vocab = {t: i for i, t in enumerate(tokens)}
        unk = tokens[ids["unk"]] if ids["unk"] is not None else None
        try:
            bpe = models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True)
        except Exception as e:
            raise model_error(_T.SCORES if not m.has(_T.MERGES) else _T.MERGES, e) from None
        tok = Tokenizer(bpe)
        prefix = (not gemma4) if add_space is None else add_space
        steps = ([normalizers.Prepend(SPIECE)] if prefix else []) + [normalizers.Replace(" ", SPIECE)]
        tok.normalizer = normalizers.Sequence(steps)
        if gemma4:
            tok.pre_tokenizer = pre_tokenizers.Split(Regex("\n+"), behavior="isolated")
        dec = [decoders.Replace(SPIECE, " "), decoders.ByteFallback(), decoders.Fuse()]
        if prefix:
            dec.append(decoders.Strip(" ", 1, 0))
        tok.decoder = decoders.Sequence(dec)
        # llama.cpp and transformers add BOS to a SentencePiece vocabulary unless the file says otherwise
        add_bos = m.get(_T.ADD_BOS, bool, ids["bos"] is not None) or (gemma4 and ids["bos"] is not None)
        add_eos = m.get(_T.ADD_EOS, bool, False)
        toks = tokens
        _add_tokens(tok, tokens, types)
    elif kind == "bert":
        if types is None:
            raise m.error(
                _T.TOKEN_TYPE, "is missing: the WordPiece vocabulary cannot be recovered without it"
            )
        # llama.cpp writes BERT's vocabulary in "phantom space" form: "##ab" as "ab", "ab" as "\u2581ab"
        toks = [t if ty in (TokenType.CONTROL, TokenType.UNKNOWN, TokenType.USER_DEFINED, TokenType.UNUSED)
                else (t[1:] if t.startswith(SPIECE) else "##" + t) for t, ty in zip(tokens, types)]
        vocab = {t: i for i, t in enumerate(toks)}
        unk = toks[ids["unk"]] if ids["unk"] is not None else ("[UNK]" if "[UNK]" in vocab else None)
        if unk is None:
            raise m.error(_T.UNK_ID, "is missing and the vocabulary has no [UNK]")
        try:
            wp = models.WordPiece(vocab=vocab, unk_token=unk, max_input_chars_per_word=100)
        except Exception as e:
            raise model_error(_T.LIST, e) from None
        tok = Tokenizer(wp)
        # llama.cpp's WPM tokenizer always lowercases (as uncased BERT: lowercase + strip accents)
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        add_bos = m.get(_T.ADD_BOS, bool, ids["bos"] is not None or "[CLS]" in vocab)
        add_eos = m.get(_T.ADD_SEP, bool, None)
        if add_eos is None:
            add_eos = m.get(_T.ADD_EOS, bool, True)
        if ids["sep"] is None:
            ids["sep"] = ids["eos"]
        if ids["bos"] is None and "[CLS]" in vocab:
            ids["bos"] = vocab["[CLS]"]
        if ids["sep"] is None and "[SEP]" in vocab:
            ids["sep"] = vocab["[SEP]"]
        if ids["eos"] is None:
            ids["eos"] = ids["sep"]
        _add_tokens(tok, toks, types)
        bos, sep = pair("bos", toks) if add_bos else None, pair("sep", toks) if add_eos else None
        if add_bos and bos is None:
            raise m.error(_T.BOS_ID, "is missing: the [CLS] token is unknown")
        if add_eos and sep is None:
            raise m.error(_T.SEP_ID, "is missing: the [SEP] token is unknown")
        tok = _set_template(tok, bos, sep, bert=True)
        return GGUFTokenizer(
            tok, kind, template, ids["bos"], ids["eos"], ids["unk"], ids["pad"], add_bos, add_eos
        )
    elif kind == "t5":
        tok = _unigram_from_gguf(m, tokens, types, ids, add_space)
        # llama.cpp's defaults for this tokenizer (T5): no BOS, EOS after the text
        add_bos = m.get(_T.ADD_BOS, bool, False)
        add_eos = m.get(_T.ADD_EOS, bool, ids["eos"] is not None)
        toks = tokens
    else:
        raise m.error(_T.MODEL, f"names an unsupported tokenizer {kind!r} (supported: gpt2, llama, gemma4, bert, "
                                "t5)")

    bos = pair("bos", toks) if add_bos else None
    eos = pair("eos", toks) if add_eos else None
    if add_bos and bos is None:
        raise m.error(_T.BOS_ID, f"is missing but '{_T.ADD_BOS}' is true")
    if add_eos and eos is None:
        raise m.error(_T.EOS_ID, f"is missing but '{_T.ADD_EOS}' is true")
    if bos or eos:
        tok = _set_template(tok, bos, eos)
    elif kind == "gpt2":
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return GGUFTokenizer(
        tok, kind, template, ids["bos"], ids["eos"], ids["unk"], ids["pad"], add_bos, add_eos
    )


# -- tokenizer.json -> GGUF tokenizer metadata ---------------------------------------------------------------

def _steps(node: Optional[dict], key: str) -> List[dict]:
    """The steps of a (possibly Sequence) normalizer / pre-tokenizer / decoder node."""
    if not node:
        return []
    if node.get("type") == "Sequence":
        out = []
        for sub in node.get(key, []) or []:
            out.extend(_steps(sub, key))
        return out
    return [node]


def _token_content(v: Any) -> Optional[str]:
    if isinstance(v, dict):
        v = v.get("content")
    return v if isinstance(v, str) else None


def _bpe_merges(path: str, model: dict) -> List[Tuple[str, str]]:
    out = []
    for mg in model.get("merges") or []:
        if isinstance(mg, str):
            i = mg.find(" ", 1)
            if i < 0:
                raise ValueError(
                    f"{path}: field 'model.merges' holds {mg!r}, not two tokens separated by a space"
                )
            out.append((mg[:i], mg[i + 1:]))
        elif isinstance(mg, (list, tuple)) and len(mg) == 2 and all(isinstance(x, str) for x in mg):
            out.append((mg[0], mg[1]))
        else:
            raise ValueError(f"{path}: field 'model.merges' holds {_short(mg)}, not a pair of tokens")
    return out


def _detect_specials(tok, path: str) -> Tuple[List[int], List[int]]:
    """The ids the post-processor puts before and after a single sequence."""
    probe = "a"
    with_sp = tok.encode(probe, add_special_tokens=True).ids
    without = tok.encode(probe, add_special_tokens=False).ids
    n = len(without)
    for k in range(len(with_sp) - n + 1):
        if with_sp[k:k + n] == without:
            return with_sp[:k], with_sp[k + n:]
    raise ValueError(
        f"{path}: field 'post_processor' changes the tokens of the text itself; not representable in GGUF"
    )


def gguf_tokenizer_metadata(
    tokenizer_json_path: str, tokenizer_config: Union[None, str, Dict[str, Any]] = None,
    vocab_size: Optional[int] = None, spm_model: str = "llama",
) -> Dict[str, Any]:
    """The ``tokenizer.*`` GGUF metadata for a tokenizer.json: the ``gpt2`` form (tokens, merges, token
    types) for byte-level BPE, the ``llama`` form (tokens, scores, token types) for SentencePiece-style BPE
    (Metaspace / "\u2581" normalizer, byte fallback), the ``bert`` form for WordPiece, the ``t5`` form (tokens,
    scores, token types, precompiled_charsmap) for SentencePiece's unigram model.

    tokenizer_config: tokenizer_config.json's dict (or its path), for bos/eos tokens and the chat template.
    vocab_size: the model's vocabulary (embedding rows); a shorter token list is padded with unused ``[PADi]``.
    llama-form scores are ``-rank`` of the first merge producing each token (0 for the others), so that the
    merges rebuilt from them (:func:`merges_from_scores`) keep the merge order.
    spm_model: "gemma4" writes SentencePiece-style BPE as llama.cpp's converter writes Gemma 4's (its merges, no
    space prefix; llama.cpp splits newline runs off first and always adds BOS).
    """
    from tokenizers import Tokenizer

    path = os.fspath(tokenizer_json_path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        tok = Tokenizer.from_file(path)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the tokenizer ({e})") from None
    except Exception as e:  # the tokenizers library raises its own exception type
        raise ValueError(f"{path}: cannot read the tokenizer ({e})") from None
    tok.no_padding()
    tok.no_truncation()
    if isinstance(tokenizer_config, (str, os.PathLike)):
        from .tokenizer import _read_json

        tokenizer_config = _read_json(os.fspath(tokenizer_config))
    tcfg = tokenizer_config or {}
    if not isinstance(tcfg, dict):
        raise ValueError(f"{path}: tokenizer_config must be a dict, got {type(tcfg).__name__}")

    model = data.get("model") or {}
    mtype = model.get("type")
    norms = _steps(data.get("normalizer"), "normalizers")
    pres = _steps(data.get("pre_tokenizer"), "pretokenizers")
    decs = _steps(data.get("decoder"), "decoders")
    byte_level = any(s.get("type") == "ByteLevel" for s in pres + decs)
    spm_like = (model.get("byte_fallback") or any(s.get("type") == "Metaspace" for s in pres + decs)
                or any(s.get("type") == "Replace" and s.get("content") == SPIECE for s in norms))

    vocab = tok.get_vocab(with_added_tokens=True)
    # (an embedding with more rows than the tokenizer has tokens: llama.cpp takes the vocabulary's size from the
    # token list, so the list is padded to the rows, as its converter pads it)
    n = max(max(vocab.values()) + 1 if vocab else 0, vocab_size or 0)
    tokens: List[Optional[str]] = [None] * n
    for t, i in vocab.items():
        tokens[i] = t
    types = [int(TokenType.NORMAL)] * n
    for i, t in enumerate(tokens):
        if t is None:  # a hole in the ids: what llama.cpp's converter writes there
            tokens[i] = f"[PAD{i}]"
            types[i] = int(TokenType.UNUSED)
    for i, added in tok.get_added_tokens_decoder().items():
        types[i] = int(TokenType.CONTROL if added.special else TokenType.USER_DEFINED)

    out: Dict[str, Any] = {}
    if mtype == "BPE" and byte_level and not spm_like:
        if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
            raise ValueError(
                f"{path}: field 'model.continuing_subword_prefix' / 'end_of_word_suffix' is set; "
                "not representable in GGUF"
            )
        out[_T.MODEL] = "gpt2"
        out[_T.PRE] = _detect_pre(path, pres, bool(model.get("ignore_merges")))
        if norms:
            warnings.warn(
                f"{path}: field 'normalizer' ({norms[0].get('type')}) is not representable in GGUF's "
                "byte-level BPE and is dropped",
                stacklevel=2,
            )
        if any(s.get("type") == "ByteLevel" and s.get("add_prefix_space") for s in pres):
            out[_T.ADD_PREFIX] = True
        merges = _bpe_merges(path, model)
        out[_T.LIST] = tokens
        out[_T.TOKEN_TYPE] = types
        out[_T.MERGES] = [f"{a} {b}" for a, b in merges]
    elif mtype == "BPE" and spm_like:
        if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
            raise ValueError(
                f"{path}: field 'model.continuing_subword_prefix' / 'end_of_word_suffix' is set; "
                "not representable in GGUF"
            )
        out[_T.MODEL] = "llama"
        out[_T.PRE] = "default"
        if any(s.get("type") == "Metaspace" for s in pres):
            warnings.warn(
                f"{path}: field 'pre_tokenizer' is Metaspace; GGUF's llama tokenizer (llama.cpp, and "
                "tokenizer_from_gguf) prepends \u2581 as the legacy normalizer does, which differs for text "
                "that starts with a space or follows a special token",
                stacklevel=2,
            )
        merges = _bpe_merges(path, model)
        unk = model.get("unk_token")
        for i, t in enumerate(tokens):
            if _BYTE_TOKEN.match(t) and types[i] == TokenType.NORMAL:
                types[i] = int(TokenType.BYTE)
            if unk is not None and t == unk:
                types[i] = int(TokenType.UNKNOWN)
        rank: Dict[str, int] = {}
        for r, (a, b) in enumerate(merges):
            rank.setdefault(a + b, r)
        scores = []
        for i, t in enumerate(tokens):
            if types[i] != TokenType.NORMAL or len(t) == 1:
                scores.append(0.0)
            elif t in rank:
                scores.append(-float(rank[t]))
            else:  # a multi-character token no merge produces: rank it after every merge
                scores.append(-float(len(merges) + i))
        rebuilt = merges if spm_model == "gemma4" else merges_from_scores(tokens, scores)
        if rebuilt != merges:
            warnings.warn(
                f"{path}: the merges are not exactly those a SentencePiece vocabulary implies (some "
                "token has a second split into vocabulary tokens); llama.cpp will rank merges by the "
                "scores, which may tokenize some words differently",
                stacklevel=2,
            )
        prefix = (any(s.get("type") == "Prepend" and s.get("prepend") == SPIECE for s in norms)
                  or any(s.get("type") == "Metaspace" and s.get("prepend_scheme", "always") != "never"
                         and s.get("add_prefix_space", True) for s in pres))
        out[_T.LIST] = tokens
        out[_T.SCORES] = scores
        out[_T.TOKEN_TYPE] = types
        out[_T.ADD_PREFIX] = bool(prefix)
        if spm_model == "gemma4":
            if prefix:
                raise ValueError(f"{path}: the tokenizer prepends \u2581: llama.cpp's gemma4 tokenizer never does")
            out.update({_T.MODEL: "gemma4", _T.PRE: "gemma4", _T.MERGES: [f"{a} {b}" for a, b in merges]})
    elif mtype == "WordPiece":
        prefix = model.get("continuing_subword_prefix", "##")
        if prefix != "##":
            raise ValueError(
                f"{path}: field 'model.continuing_subword_prefix' is {prefix!r}; GGUF's bert form "
                "needs '##'"
            )
        lower = any(s.get("type") == "BertNormalizer" and s.get("lowercase", True) for s in norms) or \
            any(s.get("type") == "Lowercase" for s in norms)
        if not lower:
            warnings.warn(
                f"{path}: a cased WordPiece tokenizer; llama.cpp's (and the reader's) bert tokenizer "
                "lowercases",
                stacklevel=2,
            )
        unk = model.get("unk_token")
        for i, t in enumerate(tokens):
            if unk is not None and t == unk and types[i] == TokenType.NORMAL:
                types[i] = int(TokenType.UNKNOWN)
        phantom = [t if types[i] != TokenType.NORMAL else (t[2:] if t.startswith("##") else SPIECE + t)
                   for i, t in enumerate(tokens)]
        out[_T.MODEL] = "bert"
        out[_T.PRE] = "default"
        out[_T.LIST] = phantom
        out[_T.TOKEN_TYPE] = types
    elif mtype == "Unigram":
        out.update(_unigram_metadata(path, model, norms, pres + decs, tokens, types))
    else:
        raise ValueError(
            f"{path}: field 'model.type' is {mtype!r} (with this normalizer / pre-tokenizer); GGUF "
            "export supports byte-level BPE, SentencePiece-style BPE, WordPiece and unigram"
        )

    # special tokens: what the post-processor adds, and tokenizer_config.json's names
    before, after = _detect_specials(tok, path)
    if len(before) > 1 or len(after) > 1:
        raise ValueError(
            f"{path}: field 'post_processor' adds {len(before)} tokens before and {len(after)} after "
            "a sequence; GGUF can say one BOS and one EOS"
        )

    def cfg_id(name: str) -> Optional[int]:
        t = _token_content(tcfg.get(name))
        return None if t is None else tok.token_to_id(t)

    bos = before[0] if before else cfg_id("bos_token")
    eos = cfg_id("eos_token")
    if out[_T.MODEL] == "bert":
        cls = cfg_id("cls_token")
        bos = before[0] if before else (cls if cls is not None else bos)
        sep = after[0] if after else cfg_id("sep_token")
        eos = eos if eos is not None else sep
        if sep is not None:
            out[_T.SEP_ID] = sep
        out[_T.ADD_SEP] = bool(after)
    elif after:
        eos_added = after[0]
        if eos is None:
            eos = eos_added
        elif eos != eos_added:
            raise ValueError(
                f"{path}: field 'post_processor' appends token {eos_added} but eos_token is {eos}; "
                "GGUF has one EOS"
            )
    unk_t = model.get("unk_token")
    unk = tok.token_to_id(unk_t) if isinstance(unk_t, str) else cfg_id("unk_token")
    if mtype == "Unigram" and isinstance(model.get("unk_id"), int):  # a unigram model names its id
        unk = model["unk_id"]
    pad = cfg_id("pad_token")
    for key, v in ((_T.BOS_ID, bos), (_T.EOS_ID, eos), (_T.UNK_ID, unk), (_T.PAD_ID, pad)):
        if v is not None:
            out[key] = v
    out[_T.ADD_BOS] = bool(before)
    out[_T.ADD_EOS] = bool(after) if out[_T.MODEL] != "bert" else False
    from .tokenizer import TokenizerInfo

    chat = TokenizerInfo._template(tcfg.get("chat_template"))
    if chat:
        out[_T.CHAT_TEMPLATE] = chat
    return out


def _unigram_metadata(path: str, model: dict, norms: List[dict], steps: List[dict], tokens: List[str],
                      types: List[int]) -> Dict[str, Any]:
    """The ``t5`` form of a unigram tokenizer.json: its pieces' scores, the unknown and byte pieces, and the
    normalization llama.cpp's UGM tokenizer can express (SentencePiece's precompiled character map, whitespace
    runs collapsed, the "\u2581" prefix); any other normalizer step is refused."""
    import base64

    scores = [0.0] * len(tokens)
    for i, entry in enumerate(model.get("vocab") or []):
        if i < len(scores) and isinstance(entry, (list, tuple)) and len(entry) == 2:
            scores[i] = float(entry[1])
    unk = model.get("unk_id")
    if isinstance(unk, int) and 0 <= unk < len(types):
        types[unk] = int(TokenType.UNKNOWN)
    if model.get("byte_fallback"):
        for i, t in enumerate(tokens):
            if _BYTE_TOKEN.match(t) and types[i] == TokenType.NORMAL:
                types[i] = int(TokenType.BYTE)
    out: Dict[str, Any] = {_T.MODEL: "t5", _T.PRE: "default", _T.LIST: tokens, _T.SCORES: scores,
                           _T.TOKEN_TYPE: types}
    collapse = False
    for st in steps:  # pre-tokenizer and decoder steps: whitespace splitting and the "\u2581" prefix only
        kind = st.get("type")
        if kind == "WhitespaceSplit":
            collapse = True
        elif kind == "Metaspace" and st.get("replacement", SPIECE) == SPIECE and st.get("split", True):
            pass
        elif kind not in ("Strip", "Replace", "ByteFallback", "Fuse"):  # (decoder steps that undo the above)
            raise ValueError(f"{path}: a {kind} pre-tokenizer or decoder step, which GGUF's t5 (unigram) "
                             "tokenizer cannot express (it splits on whitespace and marks words with \u2581)")
    for st in norms:
        kind = st.get("type")
        pattern = (st.get("pattern") or {}) if kind == "Replace" else {}
        if kind == "Precompiled":
            try:
                charsmap = base64.b64decode(st.get("precompiled_charsmap") or "", validate=True)
            except (ValueError, TypeError) as e:
                raise ValueError(f"{path}: field 'normalizer' Precompiled holds no valid base64 ({e})") from None
            if charsmap:
                out[_T.PRECOMPILED_CHARSMAP] = charsmap
        elif (kind == "Replace" and st.get("content") == " " and pattern.get("Regex") == " {2,}") or kind == "Strip":
            collapse = True
        else:
            raise ValueError(f"{path}: field 'normalizer' has a {kind} step, which GGUF's t5 (unigram) tokenizer "
                             "cannot express (it knows SentencePiece's precompiled character map and whitespace "
                             "collapsing)")
    meta = next((s for s in steps if s.get("type") == "Metaspace"), None)
    out[_T.ADD_PREFIX] = bool(meta) and meta.get("prepend_scheme", "always") != "never" and \
        meta.get("add_prefix_space", True)
    out[_T.REMOVE_EXTRA_WS] = collapse
    return out


def _detect_pre(path: str, pres: List[dict], ignore_merges: bool) -> str:
    splits = [s for s in pres if s.get("type") == "Split"]
    bl = [s for s in pres if s.get("type") == "ByteLevel"]
    others = [s for s in pres if s.get("type") not in ("Split", "ByteLevel")]
    if others:
        raise ValueError(
            f"{path}: field 'pre_tokenizer' has a {others[0].get('type')} step; GGUF's byte-level BPE "
            "knows only the regex splits of its pre-tokenizer types"
        )
    if not splits:
        if not bl or not bl[0].get("use_regex", True):
            raise ValueError(
                f"{path}: field 'pre_tokenizer' does not split the text (no regex); not representable "
                "in GGUF"
            )
        pre = "gpt-2"
    else:
        if len(splits) != 1 or bl and bl[0].get("use_regex", True):
            raise ValueError(f"{path}: field 'pre_tokenizer' splits twice; not representable in GGUF")
        pattern = (splits[0].get("pattern") or {}).get("Regex")
        if (splits[0].get("behavior") or "").lower() != "isolated" or splits[0].get("invert"):
            raise ValueError(f"{path}: field 'pre_tokenizer' Split must be behavior Isolated, invert false")
        if pattern == GPT2_SPLIT:
            pre = "gpt-2"
        elif pattern == LLAMA3_SPLIT:
            pre = "llama-bpe"
        elif pattern == QWEN2_SPLIT:
            pre = "qwen2"
        else:
            raise ValueError(
                f"{path}: field 'pre_tokenizer' splits with a regex no known GGUF pre-tokenizer type "
                f"uses ({_short(pattern)})"
            )
    if ignore_merges != (pre in _IGNORE_MERGES_PRE):
        warnings.warn(
            f"{path}: model.ignore_merges={ignore_merges} but llama.cpp's {pre!r} pre-tokenizer type "
            f"implies {pre in _IGNORE_MERGES_PRE}",
            stacklevel=3,
        )
    return pre
