"""What the GGUF modules share: llama.cpp's architecture names, gguf-py's metadata key tables under short
names, and typed access to a GGUF metadata dict.

A reader (the C++ one, or gguf-py's ``GGUFReader``) hands over the metadata as a plain dict ``{key: value}``
(int / float / bool / str / list of those, exactly what ``GGUFReader``'s ``field.contents()`` yields);
:class:`_Meta` reads it with every error a ValueError naming the source (file) and the GGUF key at fault.
Users: gguf_config.py (config.json <-> metadata), gguf_names.py (tensor names and layouts),
gguf_tokenizer.py (tokenizer.json <-> metadata).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import numpy as np
from gguf.constants import MODEL_ARCH, MODEL_ARCH_NAMES, Keys

__all__ = ["SUPPORTED_ARCHS"]

LLAMA = MODEL_ARCH_NAMES[MODEL_ARCH.LLAMA]
GPT2 = MODEL_ARCH_NAMES[MODEL_ARCH.GPT2]
BLOOM = MODEL_ARCH_NAMES[MODEL_ARCH.BLOOM]
MPT = MODEL_ARCH_NAMES[MODEL_ARCH.MPT]
FALCON = MODEL_ARCH_NAMES[MODEL_ARCH.FALCON]
BERT = MODEL_ARCH_NAMES[MODEL_ARCH.BERT]
T5 = MODEL_ARCH_NAMES[MODEL_ARCH.T5]
QWEN2 = MODEL_ARCH_NAMES[MODEL_ARCH.QWEN2]
QWEN3 = MODEL_ARCH_NAMES[MODEL_ARCH.QWEN3]
QWEN2MOE = MODEL_ARCH_NAMES[MODEL_ARCH.QWEN2MOE]
QWEN3MOE = MODEL_ARCH_NAMES[MODEL_ARCH.QWEN3MOE]
PHI3 = MODEL_ARCH_NAMES[MODEL_ARCH.PHI3]
GEMMA = MODEL_ARCH_NAMES[MODEL_ARCH.GEMMA]
GPTNEOX = MODEL_ARCH_NAMES[MODEL_ARCH.GPTNEOX]
PHI2 = MODEL_ARCH_NAMES[MODEL_ARCH.PHI2]
STARCODER2 = MODEL_ARCH_NAMES[MODEL_ARCH.STARCODER2]
STABLELM = MODEL_ARCH_NAMES[MODEL_ARCH.STABLELM]
GRANITE = MODEL_ARCH_NAMES[MODEL_ARCH.GRANITE]
GRANITEMOE = MODEL_ARCH_NAMES[MODEL_ARCH.GRANITE_MOE]
GPT_OSS = MODEL_ARCH_NAMES[MODEL_ARCH.GPT_OSS]
OLMO2 = MODEL_ARCH_NAMES[MODEL_ARCH.OLMO2]
OLMOE = MODEL_ARCH_NAMES[MODEL_ARCH.OLMOE]
SMOLLM3 = MODEL_ARCH_NAMES[MODEL_ARCH.SMOLLM3]
COMMAND_R = MODEL_ARCH_NAMES[MODEL_ARCH.COMMAND_R]
GEMMA2 = MODEL_ARCH_NAMES[MODEL_ARCH.GEMMA2]
GEMMA3 = MODEL_ARCH_NAMES[MODEL_ARCH.GEMMA3]
ERNIE4_5 = MODEL_ARCH_NAMES[MODEL_ARCH.ERNIE4_5]
EXAONE4 = MODEL_ARCH_NAMES[MODEL_ARCH.EXAONE4]
GLM4 = MODEL_ARCH_NAMES[MODEL_ARCH.GLM4]
HUNYUAN_DENSE = MODEL_ARCH_NAMES[MODEL_ARCH.HUNYUAN_DENSE]
ERNIE4_5_MOE = MODEL_ARCH_NAMES[MODEL_ARCH.ERNIE4_5_MOE]
GLM4_MOE = MODEL_ARCH_NAMES[MODEL_ARCH.GLM4_MOE]
DEEPSEEK2 = MODEL_ARCH_NAMES[MODEL_ARCH.DEEPSEEK2]
INTERNLM2 = MODEL_ARCH_NAMES[MODEL_ARCH.INTERNLM2]
EXAONE = MODEL_ARCH_NAMES[MODEL_ARCH.EXAONE]
COHERE2 = MODEL_ARCH_NAMES[MODEL_ARCH.COHERE2]
ARCEE = MODEL_ARCH_NAMES[MODEL_ARCH.ARCEE]
SEED_OSS = MODEL_ARCH_NAMES[MODEL_ARCH.SEED_OSS]
MISTRAL3 = MODEL_ARCH_NAMES[MODEL_ARCH.MISTRAL3]
QWEN35 = MODEL_ARCH_NAMES[MODEL_ARCH.QWEN35]
QWEN35MOE = MODEL_ARCH_NAMES[MODEL_ARCH.QWEN35MOE]
QWEN3NEXT = MODEL_ARCH_NAMES[MODEL_ARCH.QWEN3NEXT]
LFM2 = MODEL_ARCH_NAMES[MODEL_ARCH.LFM2]
LFM2MOE = MODEL_ARCH_NAMES[MODEL_ARCH.LFM2MOE]
GRANITE_HYBRID = MODEL_ARCH_NAMES[MODEL_ARCH.GRANITE_HYBRID]
MAMBA = MODEL_ARCH_NAMES[MODEL_ARCH.MAMBA]
FALCON_H1 = MODEL_ARCH_NAMES[MODEL_ARCH.FALCON_H1]
JAMBA = MODEL_ARCH_NAMES[MODEL_ARCH.JAMBA]
STARCODER = MODEL_ARCH_NAMES[MODEL_ARCH.STARCODER]
MAMBA2 = MODEL_ARCH_NAMES[MODEL_ARCH.MAMBA2]
NEMOTRON_H = MODEL_ARCH_NAMES[MODEL_ARCH.NEMOTRON_H]
NEMOTRON_H_MOE = MODEL_ARCH_NAMES[MODEL_ARCH.NEMOTRON_H_MOE]
GEMMA4 = MODEL_ARCH_NAMES[MODEL_ARCH.GEMMA4]
GEMMA3N = MODEL_ARCH_NAMES[MODEL_ARCH.GEMMA3N]
BITNET = MODEL_ARCH_NAMES[MODEL_ARCH.BITNET]
NEMOTRON = MODEL_ARCH_NAMES[MODEL_ARCH.NEMOTRON]
OLMO = MODEL_ARCH_NAMES[MODEL_ARCH.OLMO]
SUPPORTED_ARCHS = (LLAMA, QWEN2, QWEN3, QWEN2MOE, QWEN3MOE, PHI3, GEMMA, GEMMA2, GEMMA3, GPT2, GPTNEOX, PHI2, STARCODER2,
                   STABLELM, GRANITE, GRANITEMOE, GPT_OSS, OLMO2, OLMOE, SMOLLM3, COMMAND_R, ERNIE4_5, EXAONE4, GLM4,
                   HUNYUAN_DENSE, ERNIE4_5_MOE, GLM4_MOE, DEEPSEEK2, INTERNLM2, EXAONE, COHERE2, ARCEE, SEED_OSS, MISTRAL3,
                   QWEN35, QWEN35MOE, QWEN3NEXT, LFM2, LFM2MOE, GRANITE_HYBRID, MAMBA, MAMBA2, NEMOTRON_H,
                   NEMOTRON_H_MOE, FALCON_H1, JAMBA, STARCODER, GEMMA4, GEMMA3N, BITNET, NEMOTRON, OLMO, BLOOM, MPT, FALCON, BERT,
                   T5)

# HF model_type -> llama.cpp architecture
_ARCH_OF_MODEL_TYPE = {"llama": LLAMA, "mistral": LLAMA, "mixtral": LLAMA, "qwen2": QWEN2, "qwen3": QWEN3,
                       "qwen2_moe": QWEN2MOE, "qwen3_moe": QWEN3MOE, "phi3": PHI3, "gemma": GEMMA, "gemma2": GEMMA2, "gemma3_text": GEMMA3, "gpt2": GPT2, "gpt_neox": GPTNEOX, "phi": PHI2,
                       "starcoder2": STARCODER2, "stablelm": STABLELM, "granite": GRANITE, "granitemoe": GRANITEMOE,
                       "gpt_oss": GPT_OSS, "olmo2": OLMO2, "olmoe": OLMOE,
                       "smollm3": SMOLLM3, "cohere": COMMAND_R, "ernie4_5": ERNIE4_5, "exaone4": EXAONE4,
                       "glm4": GLM4, "hunyuan_v1_dense": HUNYUAN_DENSE, "internlm3": LLAMA,
                       "ernie4_5_moe": ERNIE4_5_MOE, "glm4_moe": GLM4_MOE, "deepseek_v2": DEEPSEEK2,
                       "deepseek_v3": DEEPSEEK2, "glm4_moe_lite": DEEPSEEK2,
                       "exaone": EXAONE, "cohere2": COHERE2, "arcee": ARCEE, "seed_oss": SEED_OSS,
                       "ministral3": MISTRAL3, "olmo3": OLMO2, "nemotron": NEMOTRON, "olmo": OLMO,
                       # (Qwen3.5's image-and-text checkpoints are written as their language model)
                       "qwen3_5_text": QWEN35, "qwen3_5": QWEN35, "qwen3_5_moe_text": QWEN35MOE, "qwen3_5_moe": QWEN35MOE,
                       "qwen3_next": QWEN3NEXT, "lfm2": LFM2, "lfm2_moe": LFM2MOE,
                       "granitemoehybrid": GRANITE_HYBRID, "mamba2": MAMBA2, "nemotron_h": NEMOTRON_H,
                       "mamba": MAMBA, "falcon_mamba": MAMBA, "falcon_h1": FALCON_H1,
                       "jamba": JAMBA, "gpt_bigcode": STARCODER, "gemma4_text": GEMMA4,
                       "gemma3n_text": GEMMA3N, "bitnet": BITNET,
                       "bloom": BLOOM, "mpt": MPT, "falcon": FALCON, "bert": BERT, "t5": T5,
                       # (llama.cpp writes RoBERTa's as BERT files: the position rows before the first token's dropped)
                       "roberta": BERT, "xlm-roberta": BERT, "camembert": BERT}

_REQUIRED = object()
_K = Keys.LLM
_A = Keys.Attention
_R = Keys.Rope
_T = Keys.Tokenizer


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


# falcon's variant decides its GGUF metadata (gguf_config) and its tensor names and row orders (gguf_names)
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
