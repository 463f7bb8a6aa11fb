"""GGUF (llama.cpp's format) metadata <-> Hugging Face config.json and tokenizer.json; tensor names, layouts.

This module is the pure-Python half of GGUF support. A reader (the C++ one, or gguf-py's ``GGUFReader``)
hands over the metadata as a plain dict ``{key: value}`` (int / float / bool / str / list of those, exactly
what ``GGUFReader``'s ``field.contents()`` yields) and the list of tensor names; from those:

* :func:`config_from_gguf` builds the config.json dict that ``archs.py`` reads, for the architectures
  llama.cpp calls ``llama`` (also Mistral), ``gpt2``, ``bloom``, ``falcon``, ``bert`` and ``t5``;
* :func:`hf_names_from_gguf` / :func:`gguf_names_from_hf` map tensor names both ways, and
  :func:`to_hf_layout` / :func:`to_gguf_layout` (with :func:`permute_qk` / :func:`unpermute_qk`) undo or
  redo the layout changes llama.cpp's converter makes (row orders, transposes);
* :func:`tokenizer_from_gguf` builds a ``tokenizers.Tokenizer`` from the ``tokenizer.ggml.*`` keys, and
  :func:`gguf_tokenizer_metadata` / :func:`gguf_metadata_from_config` go the other way, for a writer
  (:func:`add_metadata_to_writer` puts such a dict into a ``gguf.GGUFWriter``).

Every error is a ValueError naming the source (file) and the GGUF key, tensor or field at fault.

Layout changes made by llama.cpp's convert_hf_to_gguf.py (undone by :func:`to_hf_layout`):

* llama / mistral: ``attn_q`` rows permuted with ``permute(w, n_head)``, ``attn_k`` with ``n_head_kv``
  (weights and biases); only whole rows move, so quantized rows can be reordered as they are.
* gpt2: the Conv1D matrices (``attn_qkv``, ``attn_output``, ``ffn_up``, ``ffn_down``) are stored
  transposed, i.e. already as [out, in] rows (which is what the engine wants anyway; a quantized one cannot
  be transposed back).
* bloom: ``attn_qkv`` rows regrouped from per-head [q, k, v] to [all q, all k, all v].
* falcon: ``attn_qkv`` rows regrouped from kv groups [q..., k, v] to [all q, all k, all v].
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
from gguf.constants import (
    MODEL_ARCH,
    MODEL_ARCH_NAMES,
    MODEL_TENSOR,
    TENSOR_NAMES,
    Keys,
    RopeScalingType,
    TokenType,
)

__all__ = [
    "SUPPORTED_ARCHS",
    "config_from_gguf",
    "gguf_metadata_from_config",
    "hf_names_from_gguf",
    "gguf_names_from_hf",
    "permute_qk",
    "unpermute_qk",
    "permute_qk_rows",
    "hf_row_order",
    "needs_transpose",
    "to_hf_layout",
    "to_gguf_layout",
    "llama3_rope_freqs",
    "llama3_rope_freqs_from_config",
    "merges_from_scores",
    "GGUFTokenizer",
    "tokenizer_from_gguf",
    "gguf_tokenizer_metadata",
    "add_metadata_to_writer",
]

LLAMA = MODEL_ARCH_NAMES[MODEL_ARCH.LLAMA]
GPT2 = MODEL_ARCH_NAMES[MODEL_ARCH.GPT2]
BLOOM = MODEL_ARCH_NAMES[MODEL_ARCH.BLOOM]
FALCON = MODEL_ARCH_NAMES[MODEL_ARCH.FALCON]
BERT = MODEL_ARCH_NAMES[MODEL_ARCH.BERT]
T5 = MODEL_ARCH_NAMES[MODEL_ARCH.T5]
SUPPORTED_ARCHS = (LLAMA, GPT2, BLOOM, FALCON, BERT, T5)

# HF model_type -> llama.cpp architecture
_ARCH_OF_MODEL_TYPE = {"llama": LLAMA, "mistral": LLAMA, "gpt2": GPT2, "bloom": BLOOM, "falcon": FALCON,
                       "bert": BERT, "t5": T5}

_REQUIRED = object()
_K = Keys.LLM
_A = Keys.Attention
_R = Keys.Rope
_T = Keys.Tokenizer
_ROPE_FREQS = TENSOR_NAMES[MODEL_TENSOR.ROPE_FREQS] + ".weight"
_OUTPUT = TENSOR_NAMES[MODEL_TENSOR.OUTPUT] + ".weight"


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


def _clean_float(v: float) -> float:
    """GGUF stores these as float32; 1e-5 comes back as 9.999999747378752e-06. Give back the shortest
    decimal with the same float32 value (1e-05), so the config reads like the original config.json."""
    f32 = np.float32(v)
    if float(f32) != v:  # not a float32 value (a float64 key): leave it exactly as it is
        return float(v)
    if not math.isfinite(v):
        return float(v)
    return float(np.format_float_scientific(f32, unique=True, trim="-"))


class _Meta:
    """Typed access to GGUF metadata; every error names the source and the key."""

    def __init__(self, meta: Dict[str, Any], source: str):
        if not isinstance(meta, dict):
            raise ValueError(
                f"{source}: GGUF metadata must be a dict of key -> value, got {type(meta).__name__}"
            )
        self.meta = meta
        self.source = source

    def error(self, key: str, msg: str) -> ValueError:
        return ValueError(f"{self.source}: GGUF key '{key}' {msg}")

    def has(self, key: str) -> bool:
        return self.meta.get(key) is not None

    def raw(self, key: str) -> Any:
        v = self.meta.get(key)
        if isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, np.ndarray):
            v = v.tolist()
        return v

    def get(self, key: str, kind: type, default: Any = _REQUIRED) -> Any:
        if not self.has(key):
            if default is _REQUIRED:
                raise self.error(key, "is missing")
            return default
        return self._check(key, self.raw(key), kind)

    def _check(self, key: str, v: Any, kind: type) -> Any:
        if kind is int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise self.error(key, f"must be an integer, got {_short(v)}")
            return v
        if kind is float:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise self.error(key, f"must be a number, got {_short(v)}")
            return _clean_float(float(v))
        if kind is bool:
            if not isinstance(v, bool):
                raise self.error(key, f"must be true or false, got {_short(v)}")
            return v
        if kind is str:
            if not isinstance(v, str):
                raise self.error(key, f"must be a string, got {_short(v)}")
            return v
        raise TypeError(kind)

    def positive(self, key: str, default: Any = _REQUIRED) -> Any:
        if not self.has(key) and default is not _REQUIRED:
            return default
        v = self.get(key, int)
        if v <= 0:
            raise self.error(key, f"must be positive, got {v}")
        return v

    def uniform_positive(self, key: str, default: Any = _REQUIRED) -> Any:
        """A positive integer, or a per-layer array of them that holds one value."""
        if self.has(key) and isinstance(self.raw(key), list):
            vals = self.raw(key)
            if not vals:
                raise self.error(key, "is an empty array")
            for x in vals:
                if isinstance(x, bool) or not isinstance(x, int) or x <= 0:
                    raise self.error(key, f"must hold positive integers, got {_short(x)}")
            if len(set(vals)) != 1:
                raise self.error(
                    key, f"differs between layers ({_short(vals)}); per-layer values are not supported"
                )
            return vals[0]
        return self.positive(key, default)

    def array(self, key: str, kind: type, default: Any = _REQUIRED, length: Optional[int] = None) -> Any:
        if not self.has(key):
            if default is _REQUIRED:
                raise self.error(key, "is missing")
            return default
        v = self.raw(key)
        if not isinstance(v, (list, tuple)):
            raise self.error(key, f"must be an array, got {_short(v)}")
        if kind is str:
            bad = next((x for x in v if not isinstance(x, str)), None)
            if bad is not None:
                raise self.error(key, f"must be an array of strings, got an element {_short(bad)}")
        elif kind is int:
            bad = next((x for x in v if isinstance(x, bool) or not isinstance(x, int)), None)
            if bad is not None:
                raise self.error(key, f"must be an array of integers, got an element {_short(bad)}")
        elif kind is float:
            bad = next(
                (
                    x
                    for x in v
                    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x)
                ),
                None,
            )
            if bad is not None:
                raise self.error(key, f"must be an array of numbers, got an element {_short(bad)}")
        else:
            raise TypeError(kind)
        if length is not None and len(v) != length:
            raise self.error(key, f"has {len(v)} entries, expected {length} (one per token)")
        return list(v)

    def token_id(self, key: str, n_vocab: int) -> Optional[int]:
        v = self.get(key, int, None)
        if v is not None and not 0 <= v < n_vocab:
            raise self.error(key, f"({v}) is outside the vocabulary [0, {n_vocab})")
        return v


# ------------------------------------------------------------------------------------------------------------
# config.json from GGUF metadata
# ------------------------------------------------------------------------------------------------------------

def _k(template: str, arch: str) -> str:
    return template.format(arch=arch)


def _vocab_size(m: _Meta, arch: str) -> int:
    """llama.cpp's rule: '{arch}.vocab_size' if present, else the length of the token list."""
    key = _k(_K.VOCAB_SIZE, arch)
    if m.has(key):
        return m.positive(key)
    if not m.has(_T.LIST):
        raise m.error(_T.LIST, f"is missing (and so is '{key}'): the vocabulary size is unknown")
    n = len(m.array(_T.LIST, str))
    if n == 0:
        raise m.error(_T.LIST, "is empty")
    return n


def _special_ids(m: _Meta, cfg: Dict[str, Any], n_vocab: int) -> None:
    for name, key in (("bos_token_id", _T.BOS_ID), ("eos_token_id", _T.EOS_ID), ("pad_token_id", _T.PAD_ID)):
        v = m.token_id(key, n_vocab)
        if v is not None:
            cfg[name] = v


_USUAL_ORIG = [8192, 4096, 2048, 16384, 32768, 65536, 131072] + [2 ** k for k in range(4, 21)]


def _llama3_candidates(f: np.ndarray, theta: float, rotary_dim: int, factor: float):
    """(original_max_position, low_freq_factor, high_freq_factor) to try: those fitted to the smoothed band
    (with low_freq_factor 1), then the usual values. Only the rope factors they imply matter (and are
    checked): a band of fewer than two points leaves them underdetermined."""
    if factor > 1:
        freqs = 1.0 / (
            np.float32(theta) ** (np.arange(0, rotary_dim, 2, dtype=np.float32) / np.float32(rotary_dim))
        )
        inv_wavelen = freqs.astype(np.float64) / (2 * math.pi)
        band = (np.abs(f - 1) > 1e-5) & (np.abs(f - factor) > 1e-5 * factor)
        smooth = (1 / f[band] - 1 / factor) / (1 - 1 / factor)  # = (L / wavelen - lo) / (hi - lo)
        if band.sum() >= 2:  # a line through the band: with lo = 1, hi and L follow
            a, b = np.polyfit(inv_wavelen[band], smooth, 1)
            if b < 0:
                high, orig = 1 - 1 / b, -a / b
                high = round(high) if abs(high - round(high)) < 1e-3 else float(high)
                yield int(round(orig)), 1.0, float(high)
        elif band.sum() == 1:  # one point: with lo = 1, each L gives hi
            for orig in _USUAL_ORIG:
                high = 1 + (orig * inv_wavelen[band][0] - 1) / smooth[0]
                if high > 1:
                    yield orig, 1.0, float(high)
        else:  # no band: an L between the high and the low frequencies' wavelengths, with lo = 1, hi = 2
            wl = 1 / inv_wavelen
            hi_max = wl[np.abs(f - 1) <= 1e-5].max(initial=0.0)
            lo_min = wl[np.abs(f - factor) <= 1e-5 * factor].min(initial=np.inf)
            orig = math.floor(2 * hi_max) + 1
            if orig < lo_min:
                yield orig, 1.0, 2.0
    for orig in _USUAL_ORIG:
        for low in (1.0, 2.0, 0.5):
            for high in (4.0, 2.0, 8.0):
                if high > low:
                    yield orig, low, high


def llama3_rope_freqs(theta: float, rotary_dim: int, factor: float, low_freq_factor: float,
                      high_freq_factor: float, original_max_position: int) -> np.ndarray:
    """The ``rope_freqs.weight`` tensor llama.cpp's converter writes for rope_type llama3 (one factor per
    frequency: 1 for high frequencies, ``factor`` for low ones, smoothed in between), float32 [rotary_dim/2].
    """
    freqs = 1.0 / (
        np.float32(theta) ** (np.arange(0, rotary_dim, 2, dtype=np.float32) / np.float32(rotary_dim))
    )
    low_wavelen = original_max_position / low_freq_factor
    high_wavelen = original_max_position / high_freq_factor
    out = []
    for freq in freqs.astype(np.float64):
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (original_max_position / wavelen - low_freq_factor) / (
                high_freq_factor - low_freq_factor
            )
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def _fit_llama3(m: _Meta, rope_freqs: Any, theta: float, rotary_dim: int) -> Dict[str, Any]:
    """rope_scaling {llama3} whose factors reproduce the file's rope_freqs tensor."""
    f = np.asarray(rope_freqs, dtype=np.float64).reshape(-1)
    if f.size != rotary_dim // 2 or not np.all(np.isfinite(f)) or np.any(f <= 0):
        raise ValueError(f"{m.source}: tensor '{_ROPE_FREQS}' must hold {rotary_dim // 2} positive factors "
                         f"(one per rotary frequency), got {f.size}")
    factor = float(f.max())
    if np.allclose(f, 1.0, rtol=0, atol=1e-6):
        return {}
    for orig, low, high in _llama3_candidates(f, theta, rotary_dim, factor):
        want = llama3_rope_freqs(theta, rotary_dim, factor, low, high, orig)
        if np.allclose(want, f, rtol=1e-5, atol=0):
            return {
                "rope_type": "llama3",
                "factor": _clean_float(float(np.float32(factor))),
                "low_freq_factor": low,
                "high_freq_factor": high,
                "original_max_position_embeddings": orig,
            }
    raise ValueError(
        f"{m.source}: tensor '{_ROPE_FREQS}' holds rope factors that match no llama3 rope scaling "
        "(factor, low/high_freq_factor, original_max_position_embeddings) tried"
    )


def _rope_scaling(m: _Meta, arch: str, names: set, theta: float, rotary_dim: int,
                  rope_freqs: Any) -> Optional[Dict[str, Any]]:
    tkey = _k(_R.SCALING_TYPE, arch)
    stype = m.get(tkey, str, None)
    if _ROPE_FREQS in names:
        if stype not in (None, RopeScalingType.NONE.value):
            raise m.error(
                tkey, f"is {stype!r} but the file also has the llama3 factors tensor '{_ROPE_FREQS}'"
            )
        if rope_freqs is None:
            raise ValueError(
                f"{m.source}: tensor '{_ROPE_FREQS}' (llama3 rope scaling) is in the file: pass its "
                "values as config_from_gguf(..., rope_freqs=) to rebuild rope_scaling"
            )
        return _fit_llama3(m, rope_freqs, theta, rotary_dim) or None
    if stype is None or stype == RopeScalingType.NONE.value:
        return None
    fkey = _k(_R.SCALING_FACTOR, arch)
    if stype == RopeScalingType.LINEAR.value:
        factor = m.get(fkey, float)
        if factor <= 0:
            raise m.error(fkey, f"must be positive, got {factor}")
        return {"rope_type": "linear", "factor": factor}
    if stype == RopeScalingType.YARN.value:
        factor = m.get(fkey, float)
        if factor <= 0:
            raise m.error(fkey, f"must be positive, got {factor}")
        out = {"rope_type": "yarn", "factor": factor,
               "original_max_position_embeddings": m.positive(_k(_R.SCALING_ORIG_CTX_LEN, arch))}
        for key, name in (
            (_R.SCALING_ATTN_FACTOR, "attention_factor"),
            (_R.SCALING_YARN_BETA_FAST, "beta_fast"),
            (_R.SCALING_YARN_BETA_SLOW, "beta_slow"),
        ):
            v = m.get(_k(key, arch), float, None)
            if v is not None:
                out[name] = v
        return out
    raise m.error(
        tkey,
        f"names an unsupported rope scaling {stype!r} (supported: none, linear, yarn, and llama3 "
        f"through '{_ROPE_FREQS}')",
    )


def _heads(m: _Meta, arch: str, hidden: int) -> Tuple[int, int]:
    hkey = _k(_A.HEAD_COUNT, arch)
    n_heads = m.uniform_positive(hkey)
    kvkey = _k(_A.HEAD_COUNT_KV, arch)
    n_kv = m.uniform_positive(kvkey, n_heads)
    if n_heads % n_kv:
        raise m.error(kvkey, f"({n_kv}) must divide '{hkey}' ({n_heads})")
    return n_heads, n_kv


def _even_heads(m: _Meta, arch: str, hidden: int, n_heads: int) -> int:
    if hidden % n_heads:
        raise m.error(
            _k(_A.HEAD_COUNT, arch),
            f"({n_heads}) does not divide '{_k(_K.EMBEDDING_LENGTH, arch)}' " f"({hidden})",
        )
    return hidden // n_heads


def _has(names: set, tensor: MODEL_TENSOR, suffix: str, bid: int = 0) -> bool:
    return TENSOR_NAMES[tensor].format(bid=bid) + suffix in names


def _config_llama(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    hidden = m.positive(_k(_K.EMBEDDING_LENGTH, arch))
    n_heads, n_kv = _heads(m, arch, hidden)
    klen = m.positive(_k(_A.KEY_LENGTH, arch), None)
    head_dim = klen if klen is not None else _even_heads(m, arch, hidden, n_heads)
    vkey = _k(_A.VALUE_LENGTH, arch)
    vlen = m.positive(vkey, head_dim)
    if vlen != head_dim:
        raise m.error(vkey, f"({vlen}) differs from the key length ({head_dim}); not supported")
    rkey = _k(_R.DIMENSION_COUNT, arch)
    rotary_dim = m.positive(rkey, head_dim)
    if rotary_dim > head_dim or rotary_dim % 2:
        raise m.error(rkey, f"({rotary_dim}) must be even and at most the head size ({head_dim})")
    theta = m.get(_k(_R.FREQ_BASE, arch), float, 10000.0)
    n_vocab = _vocab_size(m, arch)
    cfg: Dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": n_vocab,
        "hidden_size": hidden,
        "num_hidden_layers": m.positive(_k(_K.BLOCK_COUNT, arch)),
        "intermediate_size": m.uniform_positive(_k(_K.FEED_FORWARD_LENGTH, arch)),
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "max_position_embeddings": m.positive(_k(_K.CONTEXT_LENGTH, arch)),
        "rms_norm_eps": m.get(_k(_A.LAYERNORM_RMS_EPS, arch), float),
        "rope_theta": theta,
        "hidden_act": "silu",
        "attention_bias": _has(names, MODEL_TENSOR.ATTN_Q, ".bias"),
        "mlp_bias": _has(names, MODEL_TENSOR.FFN_UP, ".bias"),
        "tie_word_embeddings": _OUTPUT not in names,
    }
    if rotary_dim != head_dim:
        cfg["partial_rotary_factor"] = rotary_dim / head_dim
    scaling = _rope_scaling(m, arch, names, theta, rotary_dim, rope_freqs)
    if scaling:
        cfg["rope_scaling"] = scaling
    swkey = _k(_A.SLIDING_WINDOW, arch)
    window = m.positive(swkey, None)
    if window is not None:
        cfg["model_type"] = "mistral"
        cfg["architectures"] = ["MistralForCausalLM"]
        cfg["sliding_window"] = window
    _special_ids(m, cfg, n_vocab)
    return cfg


def _config_gpt2(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    hidden = m.positive(_k(_K.EMBEDDING_LENGTH, arch))
    n_heads = m.uniform_positive(_k(_A.HEAD_COUNT, arch))
    _even_heads(m, arch, hidden, n_heads)
    ctx = m.positive(_k(_K.CONTEXT_LENGTH, arch))
    n_vocab = _vocab_size(m, arch)
    cfg = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": n_vocab,
        "n_embd": hidden,
        "n_layer": m.positive(_k(_K.BLOCK_COUNT, arch)),
        "n_head": n_heads,
        "n_inner": m.uniform_positive(_k(_K.FEED_FORWARD_LENGTH, arch)),
        "n_positions": ctx,
        "n_ctx": ctx,
        "layer_norm_epsilon": m.get(_k(_A.LAYERNORM_EPS, arch), float),
        "activation_function": "gelu_new",
        "tie_word_embeddings": _OUTPUT not in names,
    }
    _special_ids(m, cfg, n_vocab)
    return cfg


def _config_bloom(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    hidden = m.positive(_k(_K.EMBEDDING_LENGTH, arch))
    n_heads, n_kv = _heads(m, arch, hidden)
    if n_kv != n_heads:
        raise m.error(_k(_A.HEAD_COUNT_KV, arch), f"({n_kv}) must equal the head count ({n_heads}) for bloom")
    _even_heads(m, arch, hidden, n_heads)
    fkey = _k(_K.FEED_FORWARD_LENGTH, arch)
    ffn = m.uniform_positive(fkey, 4 * hidden)
    if ffn != 4 * hidden:
        raise m.error(fkey, f"({ffn}) must be 4 * embedding_length ({4 * hidden}) for bloom")
    n_vocab = _vocab_size(m, arch)
    cfg = {
        "architectures": ["BloomForCausalLM"],
        "model_type": "bloom",
        "vocab_size": n_vocab,
        "hidden_size": hidden,
        "n_layer": m.positive(_k(_K.BLOCK_COUNT, arch)),
        "n_head": n_heads,
        "seq_length": m.positive(_k(_K.CONTEXT_LENGTH, arch)),
        "layer_norm_epsilon": m.get(_k(_A.LAYERNORM_EPS, arch), float),
        "apply_residual_connection_post_layernorm": False,
        "tie_word_embeddings": _OUTPUT not in names,
    }
    _special_ids(m, cfg, n_vocab)
    return cfg


def _falcon_variant(cfg: Dict[str, Any]) -> Tuple[bool, int, int]:
    """(new_decoder_architecture with two norms, n_heads, n_kv_heads) of a falcon config."""
    nh = cfg.get("num_attention_heads", cfg.get("n_head"))
    new = bool(cfg.get("new_decoder_architecture", False))
    if new:
        nkv = cfg.get("num_kv_heads", nh)
    else:
        nkv = 1 if cfg.get("multi_query", True) else nh
    n_ln = cfg.get("num_ln_in_parallel_attn")
    if n_ln is None and new:
        n_ln = 2
    two = bool(new and n_ln == 2 and cfg.get("parallel_attn", True))
    return two, nh, nkv


def _config_falcon(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    hidden = m.positive(_k(_K.EMBEDDING_LENGTH, arch))
    n_heads, n_kv = _heads(m, arch, hidden)
    _even_heads(m, arch, hidden, n_heads)
    n_vocab = _vocab_size(m, arch)
    cfg: Dict[str, Any] = {
        "architectures": ["FalconForCausalLM"],
        "model_type": "falcon",
        "vocab_size": n_vocab,
        "hidden_size": hidden,
        "num_hidden_layers": m.positive(_k(_K.BLOCK_COUNT, arch)),
        "num_attention_heads": n_heads,
        "ffn_hidden_size": m.uniform_positive(_k(_K.FEED_FORWARD_LENGTH, arch), 4 * hidden),
        "max_position_embeddings": m.positive(_k(_K.CONTEXT_LENGTH, arch)),
        "layer_norm_epsilon": m.get(_k(_A.LAYERNORM_EPS, arch), float),
        "rope_theta": m.get(_k(_R.FREQ_BASE, arch), float, 10000.0),
        "alibi": False,
        "parallel_attn": True,
        "bias": _has(names, MODEL_TENSOR.ATTN_QKV, ".bias"),
        "tie_word_embeddings": _OUTPUT not in names,
    }
    if _has(names, MODEL_TENSOR.ATTN_NORM_2, ".weight"):  # Falcon-40B/180B: ln_attn + ln_mlp
        cfg.update(new_decoder_architecture=True, num_kv_heads=n_kv, num_ln_in_parallel_attn=2)
    elif n_kv == 1:  # Falcon-7B: multi-query, one LayerNorm
        cfg.update(new_decoder_architecture=False, multi_query=True)
    else:  # kv groups with one LayerNorm
        cfg.update(new_decoder_architecture=True, num_kv_heads=n_kv, num_ln_in_parallel_attn=1)
    _special_ids(m, cfg, n_vocab)
    return cfg


def _config_bert(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    hidden = m.positive(_k(_K.EMBEDDING_LENGTH, arch))
    n_heads = m.uniform_positive(_k(_A.HEAD_COUNT, arch))
    _even_heads(m, arch, hidden, n_heads)
    n_vocab = _vocab_size(m, arch)
    causal_key = _k(_A.CAUSAL, arch)
    if m.get(causal_key, bool, False):
        raise m.error(causal_key, "is true: a causal BERT is not supported")
    cfg = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": n_vocab,
        "hidden_size": hidden,
        "num_hidden_layers": m.positive(_k(_K.BLOCK_COUNT, arch)),
        "num_attention_heads": n_heads,
        "intermediate_size": m.uniform_positive(_k(_K.FEED_FORWARD_LENGTH, arch)),
        "max_position_embeddings": m.positive(_k(_K.CONTEXT_LENGTH, arch)),
        "layer_norm_eps": m.get(_k(_A.LAYERNORM_EPS, arch), float),
        "type_vocab_size": m.positive(_T.TOKEN_TYPE_COUNT, 2),
        "hidden_act": "gelu",
        "position_embedding_type": "absolute",
    }
    v = m.token_id(_T.PAD_ID, n_vocab)
    if v is not None:
        cfg["pad_token_id"] = v
    return cfg


def _config_t5(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    hidden = m.positive(_k(_K.EMBEDDING_LENGTH, arch))
    n_heads, _ = _heads(m, arch, hidden)
    klen = m.positive(_k(_A.KEY_LENGTH, arch), None)
    d_kv = klen if klen is not None else _even_heads(m, arch, hidden, n_heads)
    rms_key, ln_key = _k(_A.LAYERNORM_RMS_EPS, arch), _k(_A.LAYERNORM_EPS, arch)
    eps = m.get(rms_key, float) if m.has(rms_key) or not m.has(ln_key) else m.get(ln_key, float)
    n_layers = m.positive(_k(_K.BLOCK_COUNT, arch))
    n_vocab = _vocab_size(m, arch)
    gated = _has(names, MODEL_TENSOR.ENC_FFN_GATE, ".weight") or _has(
        names, MODEL_TENSOR.DEC_FFN_GATE, ".weight"
    )
    cfg: Dict[str, Any] = {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "is_encoder_decoder": True,
        "vocab_size": n_vocab,
        "d_model": hidden,
        "d_ff": m.uniform_positive(_k(_K.FEED_FORWARD_LENGTH, arch)),
        "d_kv": d_kv,
        "num_heads": n_heads,
        "num_layers": n_layers,
        "num_decoder_layers": m.positive(_k(_K.DECODER_BLOCK_COUNT, arch), n_layers),
        "n_positions": m.positive(_k(_K.CONTEXT_LENGTH, arch), 512),
        "layer_norm_epsilon": eps,
        "relative_attention_num_buckets": m.positive(_k(_A.REL_BUCKETS_COUNT, arch), 32),
        "relative_attention_max_distance": 128,  # not in llama.cpp's metadata; every T5 uses 128
        # llama.cpp keeps no activation name: gated FFNs are T5 v1.1 / Flan-T5 (gated-gelu), plain ones
        # T5 v1.0 (relu)
        "feed_forward_proj": "gated-gelu" if gated else "relu",
        # T5 v1.0 ties the head (and scales the decoder output); v1.1 stores an untied lm_head
        "tie_word_embeddings": _OUTPUT not in names or not gated,
    }
    _special_ids(m, cfg, n_vocab)
    start_key = _k(_K.DECODER_START_TOKEN_ID, arch)
    start = m.get(start_key, int, None)
    if start is not None:
        if not 0 <= start < n_vocab:
            raise m.error(start_key, f"({start}) is outside the vocabulary [0, {n_vocab})")
        cfg["decoder_start_token_id"] = start
    else:
        cfg["decoder_start_token_id"] = cfg.get("pad_token_id", 0)
    return cfg


_CONFIG_BUILDERS = {LLAMA: _config_llama, GPT2: _config_gpt2, BLOOM: _config_bloom, FALCON: _config_falcon,
                    BERT: _config_bert, T5: _config_t5}


def config_from_gguf(meta: Dict[str, Any], tensor_names: Iterable[str], source: str,
                     rope_freqs: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """A Hugging Face config.json dict for the model a GGUF file describes.

    meta: the file's metadata {key: value}; tensor_names: the names of its tensors (``output.weight`` absent
    means a tied head, bias tensors switch biases on, ...); source: the file, named in every error.
    rope_freqs: the values of the ``rope_freqs.weight`` tensor when the file has one (llama3 rope scaling
    is stored as that tensor, not as metadata); without them such a file raises ValueError.
    """
    m = _Meta(meta, source)
    arch = m.get(Keys.General.ARCHITECTURE, str)
    if arch not in _CONFIG_BUILDERS:
        raise m.error(Keys.General.ARCHITECTURE, f"names an unsupported architecture {arch!r} "
                                                 f"(supported: {', '.join(SUPPORTED_ARCHS)})")
    names = set(tensor_names)
    bad = next((n for n in names if not isinstance(n, str)), None)
    if bad is not None:
        raise ValueError(f"{source}: tensor names must be strings, got {_short(bad)}")
    return _CONFIG_BUILDERS[arch](m, arch, names, rope_freqs)


# ------------------------------------------------------------------------------------------------------------
# GGUF architecture metadata from config.json (for a writer)
# ------------------------------------------------------------------------------------------------------------

def gguf_metadata_from_config(config: Dict[str, Any], source: str) -> Dict[str, Any]:
    """The architecture metadata llama.cpp's converter writes for this config.json (no tokenizer keys:
    see :func:`gguf_tokenizer_metadata`). llama3 rope scaling has no metadata: write the tensor
    :func:`llama3_rope_freqs` returns as ``rope_freqs.weight``."""
    from .archs import Config  # typed config access with the same error style (imports the extension)

    cfg = Config(config, source)
    mt = cfg.get("model_type", str)
    if mt not in _ARCH_OF_MODEL_TYPE:
        raise cfg.error("model_type", f"names an architecture GGUF export does not support {mt!r} "
                                      f"(supported: {', '.join(sorted(_ARCH_OF_MODEL_TYPE))})")
    arch = _ARCH_OF_MODEL_TYPE[mt]
    out: Dict[str, Any] = {Keys.General.ARCHITECTURE: arch}

    def put(template: str, value: Any) -> None:
        if value is not None:
            out[_k(template, arch)] = value

    if arch == LLAMA:
        hidden, nh = cfg.positive("hidden_size"), cfg.positive("num_attention_heads")
        head_dim = cfg.positive("head_dim", hidden // nh)
        put(_K.VOCAB_SIZE, cfg.positive("vocab_size"))
        put(_K.CONTEXT_LENGTH, cfg.positive("max_position_embeddings", 2048))
        put(_K.EMBEDDING_LENGTH, hidden)
        put(_K.BLOCK_COUNT, cfg.positive("num_hidden_layers"))
        put(_K.FEED_FORWARD_LENGTH, cfg.positive("intermediate_size"))
        put(_A.HEAD_COUNT, nh)
        put(_A.HEAD_COUNT_KV, cfg.positive("num_key_value_heads", nh))
        put(_A.LAYERNORM_RMS_EPS, cfg.get("rms_norm_eps", float, 1e-6))
        field = "rope_parameters" if config.get("rope_parameters") is not None else "rope_scaling"
        params = cfg.get(field, dict, {}) or {}
        theta = cfg.get("rope_theta", float, None, data=params, prefix=field + ".")
        put(_R.FREQ_BASE, theta if theta is not None else cfg.get("rope_theta", float, 10000.0))
        if config.get("head_dim") is not None:
            put(_A.KEY_LENGTH, head_dim)
            put(_A.VALUE_LENGTH, head_dim)
        partial = cfg.get("partial_rotary_factor", float, None, data=params, prefix=field + ".")
        if partial is None:
            partial = cfg.get("partial_rotary_factor", float, 1.0)
        put(_R.DIMENSION_COUNT, int(head_dim * partial))
        rtype = params.get("rope_type", params.get("type", "default"))
        if rtype == "linear":
            put(_R.SCALING_TYPE, RopeScalingType.LINEAR.value)
            put(_R.SCALING_FACTOR, float(params["factor"]))
        elif rtype == "yarn":
            put(_R.SCALING_TYPE, RopeScalingType.YARN.value)
            orig = params.get("original_max_position_embeddings") or cfg.positive("max_position_embeddings")
            put(
                _R.SCALING_FACTOR,
                float(params.get("factor") or cfg.positive("max_position_embeddings") / orig),
            )
            put(_R.SCALING_ORIG_CTX_LEN, int(orig))
            for name, key in (
                ("attention_factor", _R.SCALING_ATTN_FACTOR),
                ("beta_fast", _R.SCALING_YARN_BETA_FAST),
                ("beta_slow", _R.SCALING_YARN_BETA_SLOW),
            ):
                if params.get(name) is not None:
                    put(key, float(params[name]))
        elif rtype not in ("default", "llama3"):
            raise cfg.error(
                field + ".rope_type",
                f"{rtype!r} has no GGUF equivalent (supported: default, linear, " "yarn, llama3)",
            )
        if mt == "mistral" and config.get("sliding_window"):
            put(_A.SLIDING_WINDOW, cfg.positive("sliding_window"))
    elif arch == GPT2:
        hidden = cfg.positive("n_embd")
        put(_K.CONTEXT_LENGTH, cfg.positive("n_positions", 1024))
        put(_K.EMBEDDING_LENGTH, hidden)
        put(_K.BLOCK_COUNT, cfg.positive("n_layer"))
        put(_K.FEED_FORWARD_LENGTH, cfg.positive("n_inner", 4 * hidden))
        put(_A.HEAD_COUNT, cfg.positive("n_head"))
        put(_A.LAYERNORM_EPS, cfg.get("layer_norm_epsilon", float, 1e-5))
    elif arch == BLOOM:
        hidden = cfg.positive("hidden_size" if "hidden_size" in config else "n_embed")
        nh = cfg.positive("n_head")
        # (llama.cpp's converter writes seq_length or, oddly, n_embed; archs.py's default is 2048)
        put(_K.CONTEXT_LENGTH, cfg.positive("seq_length", 2048))
        put(_K.EMBEDDING_LENGTH, hidden)
        put(_K.FEED_FORWARD_LENGTH, 4 * hidden)
        put(_K.BLOCK_COUNT, cfg.positive("n_layer"))
        put(_A.HEAD_COUNT, nh)
        put(_A.HEAD_COUNT_KV, nh)
        put(_A.LAYERNORM_EPS, cfg.get("layer_norm_epsilon", float, 1e-5))
    elif arch == FALCON:
        if cfg.get("alibi", bool, False):
            raise cfg.error("alibi", "is true: llama.cpp's falcon has no ALiBi variant")
        if not cfg.get("parallel_attn", bool, True):
            raise cfg.error("parallel_attn", "is false: llama.cpp's falcon has no sequential variant")
        hidden = cfg.positive("hidden_size")
        two, nh, nkv = _falcon_variant(config)
        if not cfg.get("new_decoder_architecture", bool, False) and not cfg.get("multi_query", bool, True):
            raise cfg.error(
                "multi_query", "is false: llama.cpp's falcon converter supports multi-query or kv groups"
            )
        put(_K.CONTEXT_LENGTH, cfg.positive("max_position_embeddings", 2048))
        put(_K.EMBEDDING_LENGTH, hidden)
        put(_K.FEED_FORWARD_LENGTH, cfg.positive("ffn_hidden_size", 4 * hidden))
        put(_K.BLOCK_COUNT, cfg.positive("num_hidden_layers"))
        put(_A.HEAD_COUNT, nh)
        put(_A.HEAD_COUNT_KV, nkv)
        put(_A.LAYERNORM_EPS, cfg.get("layer_norm_epsilon", float, 1e-5))
        field = "rope_parameters" if config.get("rope_parameters") is not None else "rope_scaling"
        params = cfg.get(field, dict, {}) or {}
        theta = cfg.get("rope_theta", float, None, data=params, prefix=field + ".")
        put(_R.FREQ_BASE, theta if theta is not None else cfg.get("rope_theta", float, 10000.0))
    elif arch == BERT:
        put(_K.CONTEXT_LENGTH, cfg.positive("max_position_embeddings", 512))
        put(_K.EMBEDDING_LENGTH, cfg.positive("hidden_size"))
        put(_K.FEED_FORWARD_LENGTH, cfg.positive("intermediate_size"))
        put(_K.BLOCK_COUNT, cfg.positive("num_hidden_layers"))
        put(_A.HEAD_COUNT, cfg.positive("num_attention_heads"))
        put(_A.LAYERNORM_EPS, cfg.get("layer_norm_eps", float, 1e-12))
        put(_A.CAUSAL, False)
        out[_T.TOKEN_TYPE_COUNT] = cfg.positive("type_vocab_size", 2)
    elif arch == T5:
        put(_K.CONTEXT_LENGTH, cfg.positive("n_positions", 512))
        put(_K.EMBEDDING_LENGTH, cfg.positive("d_model"))
        put(_K.FEED_FORWARD_LENGTH, cfg.positive("d_ff"))
        put(_K.BLOCK_COUNT, cfg.positive("num_layers"))
        if config.get("num_decoder_layers") is not None:
            put(_K.DECODER_BLOCK_COUNT, cfg.positive("num_decoder_layers"))
        put(_A.HEAD_COUNT, cfg.positive("num_heads"))
        put(_A.KEY_LENGTH, cfg.positive("d_kv"))
        put(_A.VALUE_LENGTH, cfg.positive("d_kv"))
        eps = cfg.get("layer_norm_epsilon", float, 1e-6)
        put(_A.LAYERNORM_EPS, eps)
        put(_A.LAYERNORM_RMS_EPS, eps)
        put(_A.REL_BUCKETS_COUNT, cfg.positive("relative_attention_num_buckets", 32))
        put(_K.DECODER_START_TOKEN_ID, cfg.get("decoder_start_token_id", int, 0))
    return out


def llama3_rope_freqs_from_config(config: Dict[str, Any], source: str) -> Optional[np.ndarray]:
    """The ``rope_freqs.weight`` values a llama config with rope_type llama3 needs in GGUF (else None)."""
    field = "rope_parameters" if config.get("rope_parameters") is not None else "rope_scaling"
    params = config.get(field) or {}
    if params.get("rope_type", params.get("type")) != "llama3":
        return None
    try:
        hidden, nh = int(config["hidden_size"]), int(config["num_attention_heads"])
        head_dim = int(config.get("head_dim") or hidden // nh)
        theta = float(params.get("rope_theta", config.get("rope_theta", 10000.0)))
        partial = float(params.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0)))
        return llama3_rope_freqs(
            theta,
            int(head_dim * partial),
            float(params["factor"]),
            float(params["low_freq_factor"]),
            float(params["high_freq_factor"]),
            int(params["original_max_position_embeddings"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{source}: field '{field}' is not a complete llama3 rope scaling ({e})") from None


# ------------------------------------------------------------------------------------------------------------
# tensor names
# ------------------------------------------------------------------------------------------------------------

_W = (".weight",)
_WB = (".weight", ".bias")
_T_ = MODEL_TENSOR

# (llama.cpp tensor, HF name ({i}: layer), suffixes, stack): stack None = global, "blk" / "enc" / "dec" =
# per layer
_LLAMA_NAMES = [
    (_T_.TOKEN_EMBD, "model.embed_tokens", _W, None),
    (_T_.OUTPUT_NORM, "model.norm", _W, None),
    (_T_.OUTPUT, "lm_head", _W, None),
    (_T_.ATTN_NORM, "model.layers.{i}.input_layernorm", _W, "blk"),
    (_T_.ATTN_Q, "model.layers.{i}.self_attn.q_proj", _WB, "blk"),
    (_T_.ATTN_K, "model.layers.{i}.self_attn.k_proj", _WB, "blk"),
    (_T_.ATTN_V, "model.layers.{i}.self_attn.v_proj", _WB, "blk"),
    (_T_.ATTN_OUT, "model.layers.{i}.self_attn.o_proj", _WB, "blk"),
    (_T_.FFN_NORM, "model.layers.{i}.post_attention_layernorm", _W, "blk"),
    (_T_.FFN_GATE, "model.layers.{i}.mlp.gate_proj", _WB, "blk"),
    (_T_.FFN_UP, "model.layers.{i}.mlp.up_proj", _WB, "blk"),
    (_T_.FFN_DOWN, "model.layers.{i}.mlp.down_proj", _WB, "blk"),
]
_GPT2_NAMES = [
    (_T_.TOKEN_EMBD, "transformer.wte", _W, None),
    (_T_.POS_EMBD, "transformer.wpe", _W, None),
    (_T_.OUTPUT_NORM, "transformer.ln_f", _WB, None),
    (_T_.OUTPUT, "lm_head", _W, None),
    (_T_.ATTN_NORM, "transformer.h.{i}.ln_1", _WB, "blk"),
    (_T_.ATTN_QKV, "transformer.h.{i}.attn.c_attn", _WB, "blk"),
    (_T_.ATTN_OUT, "transformer.h.{i}.attn.c_proj", _WB, "blk"),
    (_T_.FFN_NORM, "transformer.h.{i}.ln_2", _WB, "blk"),
    (_T_.FFN_UP, "transformer.h.{i}.mlp.c_fc", _WB, "blk"),
    (_T_.FFN_DOWN, "transformer.h.{i}.mlp.c_proj", _WB, "blk"),
]
_BLOOM_NAMES = [
    (_T_.TOKEN_EMBD, "transformer.word_embeddings", _W, None),
    (_T_.TOKEN_EMBD_NORM, "transformer.word_embeddings_layernorm", _WB, None),
    (_T_.OUTPUT_NORM, "transformer.ln_f", _WB, None),
    (_T_.OUTPUT, "lm_head", _W, None),
    (_T_.ATTN_NORM, "transformer.h.{i}.input_layernorm", _WB, "blk"),
    (_T_.ATTN_QKV, "transformer.h.{i}.self_attention.query_key_value", _WB, "blk"),
    (_T_.ATTN_OUT, "transformer.h.{i}.self_attention.dense", _WB, "blk"),
    (_T_.FFN_NORM, "transformer.h.{i}.post_attention_layernorm", _WB, "blk"),
    (_T_.FFN_UP, "transformer.h.{i}.mlp.dense_h_to_4h", _WB, "blk"),
    (_T_.FFN_DOWN, "transformer.h.{i}.mlp.dense_4h_to_h", _WB, "blk"),
]


def _falcon_names(two_norms: bool):
    return (
        [
            (_T_.TOKEN_EMBD, "transformer.word_embeddings", _W, None),
            (_T_.OUTPUT_NORM, "transformer.ln_f", _WB, None),
            (_T_.OUTPUT, "lm_head", _W, None),
            # llama.cpp: attn_norm feeds the MLP (and the attention when there is one norm), attn_norm_2
            # the attention
            (
                _T_.ATTN_NORM,
                "transformer.h.{i}.ln_mlp" if two_norms else "transformer.h.{i}.input_layernorm",
                _WB,
                "blk",
            ),
        ]
        + ([(_T_.ATTN_NORM_2, "transformer.h.{i}.ln_attn", _WB, "blk")] if two_norms else [])
        + [
            (_T_.ATTN_QKV, "transformer.h.{i}.self_attention.query_key_value", _WB, "blk"),
            (_T_.ATTN_OUT, "transformer.h.{i}.self_attention.dense", _WB, "blk"),
            (_T_.FFN_UP, "transformer.h.{i}.mlp.dense_h_to_4h", _WB, "blk"),
            (_T_.FFN_DOWN, "transformer.h.{i}.mlp.dense_4h_to_h", _WB, "blk"),
        ]
    )


_BERT_NAMES = [
    (_T_.TOKEN_EMBD, "embeddings.word_embeddings", _W, None),
    (_T_.POS_EMBD, "embeddings.position_embeddings", _W, None),
    (_T_.TOKEN_TYPES, "embeddings.token_type_embeddings", _W, None),
    (_T_.TOKEN_EMBD_NORM, "embeddings.LayerNorm", _WB, None),
    (_T_.ATTN_Q, "encoder.layer.{i}.attention.self.query", _WB, "blk"),
    (_T_.ATTN_K, "encoder.layer.{i}.attention.self.key", _WB, "blk"),
    (_T_.ATTN_V, "encoder.layer.{i}.attention.self.value", _WB, "blk"),
    (_T_.ATTN_OUT, "encoder.layer.{i}.attention.output.dense", _WB, "blk"),
    (_T_.ATTN_OUT_NORM, "encoder.layer.{i}.attention.output.LayerNorm", _WB, "blk"),
    (_T_.FFN_UP, "encoder.layer.{i}.intermediate.dense", _WB, "blk"),
    (_T_.FFN_DOWN, "encoder.layer.{i}.output.dense", _WB, "blk"),
    (_T_.LAYER_OUT_NORM, "encoder.layer.{i}.output.LayerNorm", _WB, "blk"),
]


def _t5_names(gated: bool):
    up = "wi_1" if gated else "wi"
    names = [
        (_T_.TOKEN_EMBD, "shared", _W, None),
        (_T_.OUTPUT, "lm_head", _W, None),
        (_T_.ENC_OUTPUT_NORM, "encoder.final_layer_norm", _W, None),
        (_T_.DEC_OUTPUT_NORM, "decoder.final_layer_norm", _W, None),
    ]
    for stack, hf, tensors in (
        (
            "enc",
            "encoder",
            [
                (_T_.ENC_ATTN_NORM, "0.layer_norm"),
                (_T_.ENC_ATTN_Q, "0.SelfAttention.q"),
                (_T_.ENC_ATTN_K, "0.SelfAttention.k"),
                (_T_.ENC_ATTN_V, "0.SelfAttention.v"),
                (_T_.ENC_ATTN_OUT, "0.SelfAttention.o"),
                (_T_.ENC_ATTN_REL_B, "0.SelfAttention.relative_attention_bias"),
                (_T_.ENC_FFN_NORM, "1.layer_norm"),
                (_T_.ENC_FFN_GATE, "1.DenseReluDense.wi_0"),
                (_T_.ENC_FFN_UP, f"1.DenseReluDense.{up}"),
                (_T_.ENC_FFN_DOWN, "1.DenseReluDense.wo"),
            ],
        ),
        (
            "dec",
            "decoder",
            [
                (_T_.DEC_ATTN_NORM, "0.layer_norm"),
                (_T_.DEC_ATTN_Q, "0.SelfAttention.q"),
                (_T_.DEC_ATTN_K, "0.SelfAttention.k"),
                (_T_.DEC_ATTN_V, "0.SelfAttention.v"),
                (_T_.DEC_ATTN_OUT, "0.SelfAttention.o"),
                (_T_.DEC_ATTN_REL_B, "0.SelfAttention.relative_attention_bias"),
                (_T_.DEC_CROSS_ATTN_NORM, "1.layer_norm"),
                (_T_.DEC_CROSS_ATTN_Q, "1.EncDecAttention.q"),
                (_T_.DEC_CROSS_ATTN_K, "1.EncDecAttention.k"),
                (_T_.DEC_CROSS_ATTN_V, "1.EncDecAttention.v"),
                (_T_.DEC_CROSS_ATTN_OUT, "1.EncDecAttention.o"),
                (_T_.DEC_CROSS_ATTN_REL_B, "1.EncDecAttention.relative_attention_bias"),
                (_T_.DEC_FFN_NORM, "2.layer_norm"),
                (_T_.DEC_FFN_GATE, "2.DenseReluDense.wi_0"),
                (_T_.DEC_FFN_UP, f"2.DenseReluDense.{up}"),
                (_T_.DEC_FFN_DOWN, "2.DenseReluDense.wo"),
            ],
        ),
    ):
        for t, suffix in tensors:
            if not gated and t in (_T_.ENC_FFN_GATE, _T_.DEC_FFN_GATE):
                continue
            names.append((t, f"{hf}.block.{{i}}.layer.{suffix}", _W, stack))
    return names


def _gguf_arch(arch: str) -> str:
    a = _ARCH_OF_MODEL_TYPE.get(arch, arch)
    if a not in SUPPORTED_ARCHS:
        raise ValueError(f"unsupported GGUF architecture {arch!r} (supported: {', '.join(SUPPORTED_ARCHS)})")
    return a


def _name_table(arch: str, config: Optional[Dict[str, Any]]):
    a = _gguf_arch(arch)
    config = config or {}
    if a == LLAMA:
        return _LLAMA_NAMES
    if a == GPT2:
        return _GPT2_NAMES
    if a == BLOOM:
        return _BLOOM_NAMES
    if a == FALCON:
        return _falcon_names(_falcon_variant(config)[0] if config else False)
    if a == BERT:
        return _BERT_NAMES
    gated = str(config.get("feed_forward_proj", "gated-gelu")).startswith("gated-")
    return _t5_names(gated)


def _pairs(arch: str, n_layers: int, config: Optional[Dict[str, Any]]) -> List[Tuple[str, str]]:
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 0:
        raise ValueError(f"n_layers must be a non-negative integer, got {n_layers!r}")
    n_dec = n_layers
    if config and config.get("num_decoder_layers") is not None:
        n_dec = int(config["num_decoder_layers"])
    out = []
    for tensor, hf, suffixes, stack in _name_table(arch, config):
        tmpl = TENSOR_NAMES[tensor]
        layers = [None] if stack is None else range(n_dec if stack == "dec" else n_layers)
        for i in layers:
            for s in suffixes:
                if i is None:
                    out.append((tmpl + s, hf + s))
                else:
                    out.append((tmpl.format(bid=i) + s, hf.format(i=i) + s))
    return out


def hf_names_from_gguf(arch: str, n_layers: int, config: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """llama.cpp tensor name -> the Hugging Face tensor name archs.py reads, for every tensor (weights and
    biases) the architecture may have; names a file lacks are simply unused.

    arch: llama.cpp's architecture (``llama``, ``gpt2``, ``bloom``, ``falcon``, ``bert``, ``t5``; a HF
    model_type such as ``mistral`` works too). config (optional, the HF config): picks the variant where the
    names depend on it (falcon's ln_attn / ln_mlp pair, T5's ``wi`` vs ``wi_0``/``wi_1`` and decoder depth).
    The tensors' layouts may differ from the HF checkpoint's: see :func:`to_hf_layout`.
    """
    return dict(_pairs(arch, n_layers, config))


_HF_ALIASES = {GPT2: ("transformer.", ""), BLOOM: ("transformer.", ""), FALCON: ("transformer.", ""),
               BERT: ("", "bert.")}


def gguf_names_from_hf(arch: str, n_layers: int, config: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """Hugging Face tensor name -> llama.cpp tensor name (the inverse of :func:`hf_names_from_gguf`, for a
    writer). Checkpoints saved with or without the model prefix (``transformer.h.0...`` and ``h.0...``,
    ``bert.encoder...`` and ``encoder...``) are both covered."""
    a = _gguf_arch(arch)
    out: Dict[str, str] = {}
    for g, hf in _pairs(a, n_layers, config):
        out[hf] = g
        if a in _HF_ALIASES:
            have, alt = _HF_ALIASES[a]
            if hf.startswith(have) and hf != "lm_head.weight":
                out[alt + hf[len(have):]] = g
    return out


# ------------------------------------------------------------------------------------------------------------
# tensor layouts
# ------------------------------------------------------------------------------------------------------------

def permute_qk_rows(rows: int, n_head: int) -> np.ndarray:
    """Row indices of llama.cpp's Q/K permutation: ``permute(w) == w[permute_qk_rows(len(w), n_head)]``.

    convert_hf_to_gguf.py:
    ``w.reshape(n_head, 2, rows // n_head // 2, *rest).swapaxes(1, 2).reshape(w.shape)``:
    within each head, the two rotary halves (HF's rotate_half layout) are interleaved into pairs (ggml's).
    """
    if isinstance(n_head, bool) or not isinstance(n_head, (int, np.integer)) or n_head <= 0:
        raise ValueError(f"n_head must be a positive integer, got {n_head!r}")
    if rows % (2 * n_head):
        raise ValueError(
            f"cannot permute {rows} rows for {n_head} heads: rows must be a multiple of 2 * n_head"
        )
    return np.arange(rows).reshape(n_head, 2, rows // n_head // 2).swapaxes(1, 2).reshape(-1)


def _rows_of(a: Any, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim not in (1, 2):
        raise ValueError(
            f"{what}: expected a 1-D (bias) or 2-D [rows, cols] array, got shape {list(a.shape)}"
        )
    return a


def permute_qk(rows_array: Any, n_head: int) -> np.ndarray:
    """llama.cpp's permutation of q_proj / k_proj rows (n_head: that tensor's head count, i.e. the kv head
    count for k_proj). Works on [rows, cols] weights, [rows] biases, and [rows, bytes_per_row] arrays of raw
    quantized blocks (only whole rows move)."""
    a = _rows_of(rows_array, "permute_qk")
    return a[permute_qk_rows(a.shape[0], n_head)]


def unpermute_qk(rows_array: Any, n_head: int) -> np.ndarray:
    """The inverse of :func:`permute_qk`: GGUF attn_q / attn_k rows back to Hugging Face's order."""
    a = _rows_of(rows_array, "unpermute_qk")
    return a[np.argsort(permute_qk_rows(a.shape[0], n_head))]


def _cfg_int(config: Dict[str, Any], *fields: str) -> int:
    for f in fields:
        v = config.get(f)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    raise ValueError(f"config: needs a positive integer '{fields[0]}'")


def _layer_kind(gguf_name: str, suffixes: Tuple[str, ...] = (".weight", ".bias")) -> Optional[str]:
    """'attn_q' for 'blk.3.attn_q.weight' (the end of gguf-py's 'blk.{bid}.attn_q'), None off the blocks."""
    for suffix in suffixes:
        if gguf_name.endswith(suffix):
            m = re.fullmatch(_BLK_RE, gguf_name[: -len(suffix)])
            return m.group(1) if m else None
    return None


_BLK_RE = (
    re.escape(TENSOR_NAMES[MODEL_TENSOR.ATTN_Q])
    .replace(re.escape("{bid}"), r"\d+")
    .replace("attn_q", r"(\w+)")
)
_KIND = {
    t: TENSOR_NAMES[t].split(".")[-1]
    for t in (
        MODEL_TENSOR.ATTN_Q,
        MODEL_TENSOR.ATTN_K,
        MODEL_TENSOR.ATTN_QKV,
        MODEL_TENSOR.ATTN_OUT,
        MODEL_TENSOR.FFN_UP,
        MODEL_TENSOR.FFN_DOWN,
    )
}


def _gguf_row_order(arch: str, gguf_name: str, config: Dict[str, Any], rows: int) -> Optional[np.ndarray]:
    """Row indices r with gguf_tensor = hf_tensor[r] (None: same order)."""
    a = _gguf_arch(arch)
    kind = _layer_kind(gguf_name)
    if a == LLAMA and kind in (_KIND[MODEL_TENSOR.ATTN_Q], _KIND[MODEL_TENSOR.ATTN_K]):
        nh = _cfg_int(config, "num_attention_heads")
        nkv = config.get("num_key_value_heads") or nh
        return permute_qk_rows(rows, nh if kind == _KIND[MODEL_TENSOR.ATTN_Q] else nkv)
    if a in (BLOOM, FALCON) and kind == _KIND[MODEL_TENSOR.ATTN_QKV]:
        if a == BLOOM:
            nh = _cfg_int(config, "n_head", "num_attention_heads")
            if rows % (3 * nh):
                raise ValueError(f"tensor '{gguf_name}': {rows} rows do not split into 3 x {nh} heads")
            hd = rows // (3 * nh)
            # HF: [head][q, k, v][head_dim] -> GGUF: [q, k, v][head][head_dim]
            return np.arange(rows).reshape(nh, 3, hd).transpose(1, 0, 2).reshape(-1)
        _, nh, nkv = _falcon_variant(config)
        if rows % (nh + 2 * nkv):
            raise ValueError(
                f"tensor '{gguf_name}': {rows} rows do not split into {nh} q + 2 x {nkv} kv heads"
            )
        hd = rows // (nh + 2 * nkv)
        if not config.get("new_decoder_architecture", False) and nkv == nh:
            g = np.arange(rows).reshape(nh, 3, hd)  # per-head [q, k, v]
            return np.concatenate([g[:, 0].reshape(-1), g[:, 1].reshape(-1), g[:, 2].reshape(-1)])
        r = nh // nkv
        g = np.arange(rows).reshape(nkv, r + 2, hd)  # kv groups [q..., k, v]
        return np.concatenate([g[:, :r].reshape(-1), g[:, r].reshape(-1), g[:, r + 1].reshape(-1)])
    return None


def hf_row_order(arch: str, gguf_name: str, config: Dict[str, Any], rows: int) -> Optional[np.ndarray]:
    """Row indices r with ``hf_tensor = gguf_tensor[r]`` for the tensors llama.cpp's converter reorders
    (llama attn_q / attn_k, bloom and falcon attn_qkv; weights and biases), None for the others. These
    can be fed to archs.Derived(rows=...) and work on quantized rows as well."""
    order = _gguf_row_order(arch, gguf_name, config, rows)
    return None if order is None else np.argsort(order)


_GPT2_TRANSPOSED = {_KIND[t] for t in (_T_.ATTN_QKV, _T_.ATTN_OUT, _T_.FFN_UP, _T_.FFN_DOWN)}


def needs_transpose(arch: str, gguf_name: str) -> bool:
    """True for GPT-2's Conv1D weights, which GGUF stores transposed ([out, in]) relative to the HF file."""
    if _gguf_arch(arch) != GPT2:
        return False
    return _layer_kind(gguf_name, (".weight",)) in _GPT2_TRANSPOSED


def to_hf_layout(
    arch: str, gguf_name: str, array: Any, config: Dict[str, Any], quantized: bool = False
) -> np.ndarray:
    """A GGUF tensor in the Hugging Face checkpoint's layout (row order, transposition).

    quantized: the array holds raw block bytes [rows, bytes_per_row]; rows can still be reordered, but a
    transpose (GPT-2's Conv1D weights) cannot be done and raises ValueError.
    """
    a = np.asarray(array)
    if needs_transpose(arch, gguf_name):
        if quantized:
            raise ValueError(
                f"tensor '{gguf_name}': a quantized GPT-2 matrix cannot be transposed back to Conv1D "
                "layout; use it as stored ([out, in] rows)"
            )
        if a.ndim != 2:
            raise ValueError(f"tensor '{gguf_name}': expected a 2-D matrix, got shape {list(a.shape)}")
        return np.ascontiguousarray(a.T)
    if a.ndim == 0:
        return a
    order = hf_row_order(arch, gguf_name, config, a.shape[0])
    return a if order is None else a[order]


def to_gguf_layout(
    arch: str, gguf_name: str, array: Any, config: Dict[str, Any], quantized: bool = False
) -> np.ndarray:
    """A Hugging Face tensor in llama.cpp's layout for the GGUF tensor gguf_name (inverse of to_hf_layout)."""
    a = np.asarray(array)
    if needs_transpose(arch, gguf_name):
        if quantized:
            raise ValueError(
                f"tensor '{gguf_name}': cannot transpose quantized rows; transpose before quantizing"
            )
        if a.ndim != 2:
            raise ValueError(f"tensor '{gguf_name}': expected a 2-D matrix, got shape {list(a.shape)}")
        return np.ascontiguousarray(a.T)
    if a.ndim == 0:
        return a
    order = _gguf_row_order(arch, gguf_name, config, a.shape[0])
    return a if order is None else a[order]


# ------------------------------------------------------------------------------------------------------------
# tokenizers
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
    model: str  # tokenizer.ggml.model: "gpt2", "llama" or "bert"
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
        if ty in (TokenType.CONTROL, TokenType.UNKNOWN):
            special.append(AddedToken(t, special=True, normalized=False))
        elif ty == TokenType.USER_DEFINED:
            user.append(AddedToken(t, special=False, normalized=False))
    if special:
        tok.add_special_tokens(special)
    if user:
        tok.add_tokens(user)


def tokenizer_from_gguf(meta: Dict[str, Any], source: str) -> GGUFTokenizer:
    """A ``tokenizers.Tokenizer`` (and its special tokens and chat template) from the ``tokenizer.ggml.*``
    metadata: byte-level BPE (model ``gpt2``), SentencePiece BPE with byte fallback (``llama``, as LLaMA 2 and
    Mistral; merges come from the scores as transformers' LlamaConverter derives them, unless the file has
    merges), and WordPiece (``bert``)."""
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
    elif kind == "llama":
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
        prefix = True if add_space is None else add_space
        steps = ([normalizers.Prepend(SPIECE)] if prefix else []) + [normalizers.Replace(" ", SPIECE)]
        tok.normalizer = normalizers.Sequence(steps)
        dec = [decoders.Replace(SPIECE, " "), decoders.ByteFallback(), decoders.Fuse()]
        if prefix:
            dec.append(decoders.Strip(" ", 1, 0))
        tok.decoder = decoders.Sequence(dec)
        # llama.cpp and transformers add BOS to a SentencePiece vocabulary unless the file says otherwise
        add_bos = m.get(_T.ADD_BOS, bool, ids["bos"] is not None)
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
    else:
        raise m.error(_T.MODEL, f"names an unsupported tokenizer {kind!r} (supported: gpt2, llama, bert)")

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
    tokenizer_json_path: str, tokenizer_config: Union[None, str, Dict[str, Any]] = None
) -> Dict[str, Any]:
    """The ``tokenizer.*`` GGUF metadata for a tokenizer.json: the ``gpt2`` form (tokens, merges, token
    types) for byte-level BPE, the ``llama`` form (tokens, scores, token types) for SentencePiece-style BPE
    (Metaspace / "\u2581" normalizer, byte fallback), the ``bert`` form for WordPiece.

    tokenizer_config: tokenizer_config.json's dict (or its path), for bos/eos tokens and the chat template.
    llama-form scores are ``-rank`` of the first merge producing each token (0 for the others), so that the
    merges rebuilt from them (:func:`merges_from_scores`) keep the merge order.
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
    n = max(vocab.values()) + 1 if vocab else 0
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
        rebuilt = merges_from_scores(tokens, scores)
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
    else:
        raise ValueError(
            f"{path}: field 'model.type' is {mtype!r} (with this normalizer / pre-tokenizer); GGUF "
            "export supports byte-level BPE, SentencePiece-style BPE and WordPiece"
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


# -- writing -------------------------------------------------------------------------------------------------

_INT32_ARRAYS = {_T.TOKEN_TYPE}


def add_metadata_to_writer(writer: Any, meta: Dict[str, Any]) -> None:
    """Adds metadata {key: value} to a ``gguf.GGUFWriter`` with llama.cpp's value types: non-negative ints as
    uint32 (uint64 if larger), negative ints as int32 / int64, floats as float32, bools, strings, and arrays
    of those (token types as int32). ``general.architecture`` is the writer's own and is skipped."""
    from gguf.constants import GGUFValueType

    for key, v in meta.items():
        if key == Keys.General.ARCHITECTURE:
            if v != writer.arch:
                raise ValueError(f"metadata key '{key}' is {v!r} but the writer was made for {writer.arch!r}")
            continue
        if isinstance(v, bool):
            writer.add_bool(key, v)
        elif isinstance(v, int):
            if 0 <= v < 2**32:
                writer.add_uint32(key, v)
            elif 0 <= v:
                writer.add_uint64(key, v)
            elif v >= -(2**31):
                writer.add_int32(key, v)
            else:
                writer.add_int64(key, v)
        elif isinstance(v, float):
            writer.add_float32(key, v)
        elif isinstance(v, str):
            writer.add_string(key, v)
        elif isinstance(v, (list, tuple)):
            if not v:
                continue
            if all(isinstance(x, str) for x in v):
                writer.add_array(key, list(v))
            elif all(isinstance(x, bool) for x in v):
                writer.add_key_value(key, list(v), GGUFValueType.ARRAY, sub_type=GGUFValueType.BOOL)
            elif all(isinstance(x, int) and not isinstance(x, bool) for x in v):
                sub = GGUFValueType.INT32 if key in _INT32_ARRAYS or min(v) < 0 else GGUFValueType.UINT32
                writer.add_key_value(key, [int(x) for x in v], GGUFValueType.ARRAY, sub_type=sub)
            elif all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                writer.add_key_value(
                    key, [float(x) for x in v], GGUFValueType.ARRAY, sub_type=GGUFValueType.FLOAT32
                )
            else:
                raise ValueError(
                    f"metadata key '{key}': an array must hold one kind of value, got {_short(v)}"
                )
        else:
            raise ValueError(f"metadata key '{key}': unsupported value {_short(v)}")
