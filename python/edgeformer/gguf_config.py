"""GGUF (llama.cpp's format) metadata <-> Hugging Face config.json, and metadata into a ``gguf.GGUFWriter``.

* :func:`config_from_gguf` builds the config.json dict that ``archs.py`` reads from a file's metadata dict and
  tensor names, for the architectures llama.cpp calls ``llama`` (also Mistral and Mixtral), ``qwen2``, ``qwen3``,
  ``qwen2moe``, ``qwen3moe``, ``phi3``, ``gemma``, ``gemma2``, ``gemma3``, ``gpt2``, ``gptneox``, ``phi2``,
  ``starcoder2``, ``stablelm``, ``granite``, ``granitemoe``, ``gpt-oss``, ``olmo2``, ``olmoe``, ``smollm3``,
  ``command-r``, ``qwen35``, ``qwen35moe``, ``qwen3next``, ``lfm2``, ``lfm2moe``, ``granitehybrid``, ``mamba``,
  ``mamba2``, ``nemotron_h``, ``nemotron_h_moe``, ``falcon-h1``, ``jamba``, ``starcoder``, ``bloom``,
  ``falcon``, ``bert`` and ``t5``;
* :func:`gguf_metadata_from_config` goes the other way, for a writer (llama3 rope scaling is a tensor,
  :func:`llama3_rope_freqs` / :func:`llama3_rope_freqs_from_config`), and :func:`add_metadata_to_writer`
  puts such a dict (with gguf_tokenizer.py's tokenizer keys) into a ``gguf.GGUFWriter``.

Every error is a ValueError naming the source (file) and the GGUF key or field at fault.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
from gguf.constants import MODEL_TENSOR, TENSOR_NAMES, Keys, RopeScalingType

from .gguf_common import (
    _A,
    _ARCH_OF_MODEL_TYPE,
    _K,
    _R,
    _T,
    ARCEE,
    NEMOTRON,
    OLMO,
    BERT,
    BLOOM,
    MPT,
    COHERE2,
    EXAONE,
    MISTRAL3,
    QWEN35,
    QWEN35MOE,
    QWEN3NEXT,
    LFM2,
    LFM2MOE,
    GRANITE_HYBRID,
    MAMBA,
    FALCON_H1,
    JAMBA,
    STARCODER,
    MAMBA2,
    NEMOTRON_H,
    NEMOTRON_H_MOE,
    GEMMA4,
    GEMMA3N,
    BITNET,
    SEED_OSS,
    FALCON,
    GPT2,
    LLAMA,
    QWEN2,
    QWEN3,
    QWEN2MOE,
    QWEN3MOE,
    PHI3,
    GEMMA,
    GPTNEOX,
    PHI2,
    STARCODER2,
    STABLELM,
    GRANITE,
    GRANITEMOE,
    GPT_OSS,
    OLMO2,
    OLMOE,
    SMOLLM3,
    COMMAND_R,
    GEMMA2,
    GEMMA3,
    ERNIE4_5,
    EXAONE4,
    GLM4,
    HUNYUAN_DENSE,
    ERNIE4_5_MOE,
    GLM4_MOE,
    DEEPSEEK2,
    INTERNLM2,
    SUPPORTED_ARCHS,
    T5,
    _clean_float,
    _falcon_variant,
    _Meta,
    _short,
)

__all__ = [
    "config_from_gguf",
    "gguf_metadata_from_config",
    "llama3_rope_freqs",
    "llama3_rope_freqs_from_config",
    "add_metadata_to_writer",
]

_ROPE_FREQS = TENSOR_NAMES[MODEL_TENSOR.ROPE_FREQS] + ".weight"
_OUTPUT = TENSOR_NAMES[MODEL_TENSOR.OUTPUT] + ".weight"


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


def _variant_metadata(cfg, config: Dict[str, Any], mt: str, params: Dict[str, Any], put) -> None:
    """Command R7B, OLMo 3, Ministral 3, Seed-OSS: what llama.cpp reads of them, and what it would read otherwise
    refused by name (its sliding layers are every layer but each 4th, fixed by the architecture)."""
    from .archs import spec_from_config

    spec = spec_from_config(config, "config.json")[0]
    n = spec.n_layers
    if mt in ("cohere2", "olmo3"):
        windows = list(spec.layer_windows)
        if windows:
            want = [int(bool(w)) for w in windows]
            if want != [int((i + 1) % 4 != 0) for i in range(n)] or len(set(w for w in windows if w)) != 1:
                raise cfg.error("layer_types", "differs from llama.cpp's fixed pattern (three sliding layers to one "
                                               "full) or gives the sliding layers windows of several sizes")
            put(_A.SLIDING_WINDOW, max(windows))
    if mt == "cohere2" and cfg.get("attention_bias", bool, False):
        raise cfg.error("attention_bias", "is true: llama.cpp's cohere2 has no biases")
    if mt == "olmo3":
        full, local = spec.rope, spec.rope_local
        if spec.layer_rope and local.theta != full.theta:
            put(_R.FREQ_BASE_SWA, local.theta)
        if spec.layer_rope and local.scaling != _core_scaling_none():
            raise cfg.error("rope_parameters.sliding_attention", "scales its rotary: llama.cpp's olmo2 scales the "
                                                                 "full layers' only")
        _default_yarn_attention(cfg, full)
    if mt == "ministral3":
        if spec.q_temp_beta:
            put(_A.TEMPERATURE_SCALE, spec.q_temp_beta)
        if params.get("mscale") is not None and params.get("mscale_all_dim") is not None:
            if float(params["mscale"]) != 1.0:
                raise cfg.error("rope_parameters.mscale", "is not 1: llama.cpp's mistral3 assumes it")
            put(_R.SCALING_YARN_LOG_MUL, float(params["mscale_all_dim"]))
        if spec.q_temp_beta and spec.rope.scaling == _core_scaling_none():
            raise cfg.error("rope_parameters", "has llama_4_scaling_beta without yarn: llama.cpp's mistral3 counts "
                                               "the query scaling's length from yarn's original context")
        if spec.q_temp_beta and spec.q_temp_length != int(params.get("original_max_position_embeddings") or 0):
            raise cfg.error("rope_parameters.original_max_position_embeddings", "differs from the query scaling's "
                                                                               "length")
    if mt == "seed_oss" and spec.attn_out_bias:
        raise cfg.error("attention_out_bias", "is true: llama.cpp's seed_oss has no o_proj bias")


def _core_scaling_none():
    from . import _core

    return _core.RopeScaling.none


def _default_yarn_attention(cfg, rope) -> None:
    """llama.cpp gives yarn the magnitude 1 + 0.1 ln(factor) (no attention factor key is read): others refused."""
    from . import _core

    if rope.scaling != _core.RopeScaling.yarn:
        return

    def m(scale: float, k: float) -> float:  # (transformers' get_mscale)
        return 1.0 if scale <= 1 else 0.1 * k * math.log(scale) + 1.0

    f = rope.factor
    ours = (rope.attention_factor if rope.attention_factor > 0 else
            m(f, rope.mscale) / m(f, rope.mscale_all_dim) if rope.mscale and rope.mscale_all_dim else m(f, 1.0))
    if abs(ours - m(f, 1.0)) > 1e-6:
        raise cfg.error("rope_parameters.attention_factor", f"makes yarn's magnitude {ours}, not 1 + 0.1 ln(factor) "
                                                            f"= {m(f, 1.0)}, the only one llama.cpp computes here")


def _has(names: set, tensor: MODEL_TENSOR, suffix: str, bid: int = 0) -> bool:
    return TENSOR_NAMES[tensor].format(bid=bid) + suffix in names


# the readers, in a module of their own (imported here, after the helpers above that they use)
from .gguf_hybrid import config_lfm2, config_qwen35  # noqa: E402
from .gguf_ssm import SSM_CONFIG, nemotron_has_experts as _nemotron_has_experts  # noqa: E402
from .gguf_gemma import config_gemma3n, config_gemma4  # noqa: E402
from .bitnet import config_bitnet  # noqa: E402
from .gguf_readers import (  # noqa: E402
    _config_bert, _config_bloom, _config_mpt, _config_falcon, _config_gemma, _config_gemma1, _config_gpt2, _config_gpt_oss, _config_llama, _config_llama_like, _config_neox_phi, _config_olmo, _config_phi3, _config_qwen, _config_recent, _config_deepseek_moe, _config_deepseek2, _config_smollm3_cohere, _config_variants,
    _config_t5,
)

_CONFIG_BUILDERS = {LLAMA: _config_llama, INTERNLM2: _config_llama, QWEN2: _config_qwen, QWEN3: _config_qwen, QWEN2MOE: _config_qwen,
                    QWEN3MOE: _config_qwen, PHI3: _config_phi3, GEMMA: _config_gemma1, GEMMA2: _config_gemma, GEMMA3: _config_gemma, GPT2: _config_gpt2, STARCODER: _config_gpt2, GPTNEOX: _config_neox_phi, PHI2: _config_neox_phi,
                    STARCODER2: _config_llama_like, STABLELM: _config_llama_like, GRANITE: _config_llama_like,
                    GRANITEMOE: _config_llama_like,
                    GPT_OSS: _config_gpt_oss, OLMO2: _config_olmo, OLMOE: _config_olmo,
                    SMOLLM3: _config_smollm3_cohere, COMMAND_R: _config_smollm3_cohere,
                    ERNIE4_5: _config_recent, EXAONE4: _config_recent, GLM4: _config_recent,
                    HUNYUAN_DENSE: _config_recent, ERNIE4_5_MOE: _config_deepseek_moe, GLM4_MOE: _config_deepseek_moe,
                    DEEPSEEK2: _config_deepseek2, EXAONE: _config_variants, COHERE2: _config_variants,
                    ARCEE: _config_variants, SEED_OSS: _config_variants, MISTRAL3: _config_variants,
                    NEMOTRON: _config_variants, OLMO: _config_variants,
                    QWEN35: config_qwen35, QWEN35MOE: config_qwen35, QWEN3NEXT: config_qwen35, LFM2: config_lfm2,
                    LFM2MOE: config_lfm2, **SSM_CONFIG, GEMMA4: config_gemma4, GEMMA3N: config_gemma3n,
                    BITNET: config_bitnet,
                    BLOOM: _config_bloom, MPT: _config_mpt, FALCON: _config_falcon,
                    BERT: _config_bert, T5: _config_t5}


def config_from_gguf(meta: Dict[str, Any], tensor_names: Iterable[str], source: str,
                     rope_freqs: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """A Hugging Face config.json dict for the model a GGUF file describes.

    meta: the file's metadata {key: value}; tensor_names: the names of its tensors (``output.weight`` absent
    means a tied head, bias tensors switch biases on, ...); source: the file, named in every error.
    rope_freqs: the values of the ``rope_freqs.weight`` tensor when the file has one (llama3 rope scaling
    is stored as that tensor, not as metadata); without them such a file raises ValueError. For phi3, a dict
    {tensor name: values} of its longrope factor tensors (``rope_factors_long.weight``, ``..._short.weight``).
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

def _gemma_metadata(cfg, config: Dict[str, Any], mt: str, put) -> None:
    """What llama.cpp's Gemma converters write beyond a Llama's, after checking that the model is what
    llama.cpp assumes of the architecture (its layer pattern, local rotary base, attention scale)."""
    n_layers, hidden, nh = cfg.positive("num_hidden_layers"), cfg.positive("hidden_size"), cfg.positive("num_attention_heads")
    head_dim = cfg.positive("head_dim", 256)
    gemma2 = mt == "gemma2"
    big = n_layers == (46 if gemma2 else 62)
    pattern = 2 if gemma2 else 6
    want = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n_layers)]
    if config.get("layer_types") not in (None, want):
        raise cfg.error("layer_types", f"differs from llama.cpp's fixed pattern for {mt} (every {pattern}th layer full)")
    scalar = cfg.positive("query_pre_attn_scalar", head_dim)
    if scalar != (hidden // nh if big else head_dim):
        raise cfg.error("query_pre_attn_scalar", f"({scalar}) differs from what llama.cpp assumes for {mt}")
    if not gemma2 and cfg.get("rope_local_base_freq", float, 10000.0) != 10000.0:
        raise cfg.error("rope_local_base_freq", "llama.cpp assumes 10000")
    put(_A.KEY_LENGTH, head_dim)
    put(_A.VALUE_LENGTH, head_dim)
    put(_A.SLIDING_WINDOW, cfg.positive("sliding_window", 4096))
    if gemma2:
        for field in ("attn_logit_softcapping", "final_logit_softcapping"):  # (absent: Gemma2Config's 50 / 30)
            if field in config and config[field] is None:
                raise cfg.error(field, "is null (no capping): llama.cpp's gemma2 always caps")
        put(_K.ATTN_LOGIT_SOFTCAPPING, cfg.get("attn_logit_softcapping", float, 50.0))
        put(_K.FINAL_LOGIT_SOFTCAPPING, cfg.get("final_logit_softcapping", float, 30.0))
        return
    # Gemma 3's full layers: their rotary base and scaling (transformers 5 nests them under full_attention)
    rp = config.get("rope_parameters")
    if isinstance(rp, dict) and isinstance(rp.get("full_attention"), dict):
        full = rp["full_attention"]
    else:
        full = {**(config.get("rope_scaling") or {}), "rope_theta": config.get("rope_theta", 1_000_000.0)}
    put(_R.FREQ_BASE, float(full.get("rope_theta", 1_000_000.0)))
    rtype = full.get("rope_type", full.get("type", "default"))
    if rtype == "linear":
        put(_R.SCALING_TYPE, RopeScalingType.LINEAR.value)
        put(_R.SCALING_FACTOR, float(full["factor"]))
    elif rtype != "default":
        raise cfg.error("rope_parameters.full_attention.rope_type", f"{rtype!r} has no GGUF equivalent for gemma3")


def _put_experts(cfg, put, field: str, *used_default: int) -> None:
    """expert_count from `field` (num_experts or num_local_experts) and expert_used_count."""
    put(_K.EXPERT_COUNT, cfg.positive(field))
    put(_K.EXPERT_USED_COUNT, cfg.positive("num_experts_per_tok", *used_default))


def _gpt_oss_metadata(cfg, config: Dict[str, Any], rope: Dict[str, Any], put) -> None:
    """What llama.cpp's gpt-oss converter writes beyond a Llama's, after checking that the model is what llama.cpp
    assumes of the architecture (layers alternating from a sliding one, the gate's clamp, yarn as trained)."""
    n = cfg.positive("num_hidden_layers")
    want = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n)]
    if config.get("layer_types") not in (None, want):
        raise cfg.error("layer_types", "differs from llama.cpp's fixed pattern for gpt-oss (sliding, full, ...)")
    for field, value in (("swiglu_limit", 7.0), ("swiglu_alpha", 1.702)):
        if cfg.get(field, float, value) != value:
            raise cfg.error(field, f"differs from what llama.cpp assumes for gpt-oss ({value})")
    if not cfg.get("attention_bias", bool, True):
        raise cfg.error("attention_bias", "is false: llama.cpp's gpt-oss (and our reader) has the biases")
    if rope.get("rope_type") == "yarn" and rope.get("truncate", True) is not False:
        raise cfg.error("rope_parameters.truncate", "must be false for gpt-oss (as it was trained and as read back)")
    _put_experts(cfg, put, "num_local_experts", 4)
    put(_K.EXPERT_FEED_FORWARD_LENGTH, cfg.positive("intermediate_size"))
    put(_A.SLIDING_WINDOW, cfg.positive("sliding_window", 128))


def _moe_metadata(cfg, config: Dict[str, Any], mt: str, put) -> None:
    """The expert counts and widths llama.cpp's converters write, after checking that llama.cpp computes the model
    as transformers does: every layer sparse, and the expert weights renormalized as llama.cpp fixes them per
    architecture (Mixtral and Qwen3-MoE: over the chosen experts; Qwen2-MoE: not)."""
    mixtral = mt == "mixtral"
    field = "num_local_experts" if mixtral or "num_experts" not in config else "num_experts"
    _put_experts(cfg, put, field, 2)
    if mixtral:
        return
    if config.get("mlp_only_layers") or cfg.get("decoder_sparse_step", int, 1) != 1:
        raise cfg.error("mlp_only_layers", "names dense layers: llama.cpp reads every layer of a "
                                           f"{mt} file as sparse")
    norm = cfg.get("norm_topk_prob", bool, False)
    if norm != (mt == "qwen3_moe"):
        raise cfg.error("norm_topk_prob", f"is {str(norm).lower()}: llama.cpp's {mt} "
                                          f"{'always' if mt == 'qwen3_moe' else 'never'} renormalizes")
    put(_K.EXPERT_FEED_FORWARD_LENGTH, cfg.positive("moe_intermediate_size"))
    if mt == "qwen2_moe":  # (llama.cpp's qwen2moe always has the shared expert: 0 would read as the dense width)
        put(_K.EXPERT_SHARED_FEED_FORWARD_LENGTH, cfg.positive("shared_expert_intermediate_size", 5632))


def _deepseek_moe_metadata(cfg, config: Dict[str, Any], mt: str, source: str, put) -> None:
    """ERNIE 4.5 MoE and GLM-4.5: the expert counts and widths, the leading dense layers (ERNIE: then every
    interleave-th layer sparse, which must be how the config lays them out), and GLM's router (sigmoid, scale,
    renormalization, groups), as llama.cpp's converters write them."""
    from .archs import spec_from_config

    s = spec_from_config(config, source)[0]
    n = s.n_layers
    put(_K.EXPERT_COUNT, s.n_experts)
    put(_K.EXPERT_USED_COUNT, s.n_experts_used)
    put(_K.EXPERT_FEED_FORWARD_LENGTH, s.moe_ffn_size)
    put(_K.EXPERT_SHARED_COUNT, s.shared_ffn_size // s.moe_ffn_size)
    if s.shared_ffn_size:
        put(_K.EXPERT_SHARED_FEED_FORWARD_LENGTH, s.shared_ffn_size)
    sparse = list(s.layer_moe) or [1] * n
    lead = sparse.index(1) if 1 in sparse else n
    put(_K.LEADING_DENSE_BLOCK_COUNT, lead)
    if mt == "ernie4_5_moe":
        step = cfg.positive("moe_layer_interval", 1)
        if sparse != [int(i >= lead and (i + 1) % step == 0) for i in range(n)]:
            raise cfg.error("moe_layer_end_index", "leaves dense layers at the end: llama.cpp's ernie4_5-moe makes "
                                                   "every interleave-th layer after the leading ones sparse")
        put(_K.INTERLEAVE_MOE_LAYER_STEP, step)
        return
    if sparse != [int(i >= lead) for i in range(n)]:
        raise cfg.error("mlp_layer_types", f"makes dense layers after sparse ones: llama.cpp's {mt} has leading "
                                           "dense layers only")
    put(_K.EXPERT_GATING_FUNC, 2 if s.moe_sigmoid else 1)  # (sigmoid, softmax)
    put(_K.EXPERT_WEIGHTS_SCALE, s.moe_routed_scale)
    put(_K.EXPERT_WEIGHTS_NORM, s.moe_norm_topk)
    if s.moe_groups > 1:
        if s.moe_group_top != 2:
            raise cfg.error("topk_method", "is group_limited_greedy (a group scored by its best): llama.cpp scores "
                                           "a group by its two best")
        put(_K.EXPERT_GROUP_COUNT, s.moe_groups)
        put(_K.EXPERT_GROUP_USED_COUNT, s.moe_groups_used)
    if s.mla_kv_lora > 0:
        _deepseek2_metadata(cfg, s, put)


def _deepseek2_metadata(cfg, s, put) -> None:
    """Latent attention as llama.cpp's deepseek2 reads it (its MLA mode): one kv head of kv_lora_rank + rope dims,
    values kv_lora_rank wide, the heads' own sizes in the *_mla keys; yarn's mscale_all_dim as its log multiplier."""
    from . import _core

    if s.rope.style != _core.RopeStyle.interleaved:
        raise cfg.error("rope_interleave", "is false: llama.cpp's deepseek2 rotates interleaved pairs")
    dr = s.rope.rotary_dim
    put(_A.HEAD_COUNT_KV, 1)
    put(_A.KEY_LENGTH, s.head_dim)
    put(_A.VALUE_LENGTH, s.v_head_dim or s.head_dim)
    put(_A.KEY_LENGTH_MLA, s.mla_nope + dr)
    put(_A.VALUE_LENGTH_MLA, s.mla_v)
    put(_A.KV_LORA_RANK, s.mla_kv_lora)
    if s.mla_q_lora:
        put(_A.Q_LORA_RANK, s.mla_q_lora)
    elif s.n_layers != 27:  # (llama.cpp tells V2-Lite's queries without q_a / q_b by its 27 layers)
        raise cfg.error("q_lora_rank", "is null: llama.cpp's deepseek2 takes queries without q_lora_rank in "
                                       "27-layer models only (DeepSeek-V2-Lite, Moonlight)")
    put(_R.DIMENSION_COUNT, dr)
    field = "rope_parameters" if cfg.data.get("rope_parameters") is not None else "rope_scaling"
    params = cfg.get(field, dict, {}) or {}
    if s.rope.scaling == _core.RopeScaling.yarn:
        if params.get("mscale", params.get("mscale_all_dim")) != params.get("mscale_all_dim"):
            raise cfg.error(field + ".mscale", "differs from mscale_all_dim: llama.cpp's deepseek2 has one of them")
        put(_R.SCALING_YARN_LOG_MUL, 0.1 * float(params.get("mscale_all_dim") or 0.0))


def _exaone4_metadata(cfg, put) -> None:
    """EXAONE 4's window: its width and which layers have it (the others are global, without rotary). llama.cpp
    gives the window to the 64-layer model only (EXAONE 4.0 32B), three sliding layers to one global, whatever the
    file says: other windowed layouts would load there and answer otherwise, so they are refused."""
    from .archs_recent import _exaone4_layers

    n = cfg.positive("num_hidden_layers")
    types = _exaone4_layers(cfg, n)
    if types is not None:
        if n != 64 or types != ["sliding_attention" if (i + 1) % 4 else "full_attention" for i in range(n)]:
            raise cfg.error("sliding_window", "is set: llama.cpp's exaone4 has a window only in the 64-layer model "
                                              "(three sliding layers to one global)")
        put(_A.SLIDING_WINDOW, cfg.positive("sliding_window", 4096))
        put(_A.SLIDING_WINDOW_PATTERN, [t == "sliding_attention" for t in types])


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
    if mt == "nemotron_h" and _nemotron_has_experts(config):  # (Nemotron 3: llama.cpp's nemotron_h_moe)
        arch = NEMOTRON_H_MOE
    out: Dict[str, Any] = {Keys.General.ARCHITECTURE: arch}

    def put(template: str, value: Any) -> None:
        if value is not None:
            out[_k(template, arch)] = value

    if arch in (LLAMA, QWEN2, QWEN3, QWEN2MOE, QWEN3MOE, PHI3, GEMMA, GEMMA2, GEMMA3, STARCODER2, STABLELM, GRANITE,
                GRANITEMOE, GPT_OSS, OLMO2, OLMOE, SMOLLM3, COMMAND_R, ERNIE4_5, EXAONE4, GLM4, HUNYUAN_DENSE,
                ERNIE4_5_MOE, GLM4_MOE, DEEPSEEK2, EXAONE, COHERE2, ARCEE, SEED_OSS, MISTRAL3, QWEN35, QWEN35MOE,
                QWEN3NEXT, BITNET, NEMOTRON, OLMO):
        from .archs_recent import CLASS_DEFAULTS  # (where a family's config class differs from Llama's)
        from .archs_variants import variant_config
        from .gguf_hybrid import qwen35_metadata, with_defaults

        if arch in (QWEN35, QWEN35MOE, QWEN3NEXT):
            config = with_defaults(mt, config)
        config = variant_config({**CLASS_DEFAULTS.get(mt, {}), **config})
        cfg = Config(config, source)
        hidden, nh = cfg.positive("hidden_size"), cfg.positive("num_attention_heads")
        head_dim = cfg.positive("head_dim", hidden // nh)
        put(_K.VOCAB_SIZE, cfg.positive("vocab_size"))
        put(_K.CONTEXT_LENGTH, cfg.positive("max_position_embeddings", 2048))
        put(_K.EMBEDDING_LENGTH, hidden)
        put(_K.BLOCK_COUNT, cfg.positive("num_hidden_layers"))
        put(_K.FEED_FORWARD_LENGTH, cfg.positive("intermediate_size"))
        put(_A.HEAD_COUNT, nh)
        put(_A.HEAD_COUNT_KV, cfg.positive("num_key_value_heads", nh))
        if mt == "starcoder2":
            put(_A.LAYERNORM_EPS, cfg.get("norm_epsilon", float, 1e-5))
        elif mt in ("stablelm", "cohere", "cohere2"):
            put(_A.LAYERNORM_EPS, cfg.get("layer_norm_eps", float, 1e-5))
        elif mt == "nemotron":
            put(_A.LAYERNORM_EPS, cfg.get("norm_eps", float, 1e-5))
        elif mt == "olmo":  # (fixed by OLMo's LayerNorm; the clamp where set)
            put(_A.LAYERNORM_EPS, 1e-5)
            if config.get("clip_qkv") is not None:
                put(_A.CLAMP_KQV, float(config["clip_qkv"]))
        else:  # (transformers' default where a config leaves it out)
            put(_A.LAYERNORM_RMS_EPS, cfg.get("rms_norm_eps", float,
                                              1e-5 if mt in ("gpt_oss", "olmo2", "olmoe", "olmo3") else 1e-6))
        if mt == "hunyuan_v1_dense":  # NTK-alpha: llama.cpp's converter writes the base it makes
            from .archs import spec_from_config

            theta = spec_from_config(config, source)[0].rope.theta
            config = {**config, "rope_parameters": {"rope_type": "default", "rope_theta": theta}}
            cfg = Config(config, source)
        field = "rope_parameters" if config.get("rope_parameters") is not None else "rope_scaling"
        params = cfg.get(field, dict, {}) or {}
        if mt == "olmo3" and isinstance(params.get("full_attention"), dict):  # (GGUF's rotary: the full layers')
            field, params = field + ".full_attention", params["full_attention"]
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
        elif rtype == "longrope" and mt == "phi3":  # (its factors are tensors: longrope_factor_tensors)
            orig = params.get("original_max_position_embeddings") or config.get("original_max_position_embeddings")
            put(_R.SCALING_ORIG_CTX_LEN, int(orig))
            max_pos = cfg.positive("max_position_embeddings")
            factor = params.get("factor") or max_pos / orig
            att = params.get("attention_factor")
            put(_R.SCALING_ATTN_FACTOR, float(att) if att is not None else (
                math.sqrt(1 + math.log(factor) / math.log(orig)) if factor > 1 else 1.0))
        elif rtype not in ("default", "llama3"):
            raise cfg.error(
                field + ".rope_type",
                f"{rtype!r} has no GGUF equivalent (supported: default, linear, " "yarn, llama3)",
            )
        if mt in ("mistral", "mixtral") and config.get("sliding_window"):
            put(_A.SLIDING_WINDOW, cfg.positive("sliding_window"))
        if mt in ("gemma2", "gemma3_text"):
            _gemma_metadata(cfg, config, mt, put)
        if mt == "phi3":  # llama.cpp's converter writes 0 for none
            put(_A.SLIDING_WINDOW, int(config.get("sliding_window") or 0))
        if mt in ("qwen2", "qwen3", "qwen2_moe", "qwen3_moe") and cfg.get("use_sliding_window", bool, False):
            raise cfg.error("use_sliding_window", f"a {mt} sliding window has no GGUF key llama.cpp reads")
        if mt in ("mixtral", "qwen2_moe", "qwen3_moe"):
            _moe_metadata(cfg, config, mt, put)
        if mt == "starcoder2" and config.get("sliding_window"):  # (ours; llama.cpp's starcoder2 attends to all)
            put(_A.SLIDING_WINDOW, cfg.positive("sliding_window"))
        if mt == "gpt_oss":
            _gpt_oss_metadata(cfg, config, params, put)
        if mt == "smollm3":
            if cfg.get("use_sliding_window", bool, False):
                raise cfg.error("use_sliding_window", "is true: llama.cpp's smollm3 has no window")
            want = [int((i + 1) % 4 != 0) for i in range(cfg.positive("num_hidden_layers"))]
            if config.get("no_rope_layers") not in (None, want) or cfg.get("no_rope_layer_interval", int, 4) != 4:
                raise cfg.error("no_rope_layers", "differs from llama.cpp's fixed pattern (no rotary every 4th layer)")
        if mt in ("cohere", "cohere2"):
            put(_K.LOGIT_SCALE, cfg.get("logit_scale", float, 0.0625))
        if mt in ("cohere2", "olmo3", "ministral3", "seed_oss"):
            _variant_metadata(cfg, config, mt, params, put)
        if mt == "exaone4":
            _exaone4_metadata(cfg, put)
        if mt == "bitnet":  # (the key of llama.cpp's fix; without it llama.cpp's bitnet computes SiLU)
            put("{arch}.hidden_activation", cfg.get("hidden_act", str))
        if arch in (QWEN35, QWEN35MOE, QWEN3NEXT):
            qwen35_metadata(cfg, config, mt, params, put)
        if mt in ("ernie4_5", "ernie4_5_moe") and cfg.get("use_bias", bool, False):
            raise cfg.error("use_bias", "is true: llama.cpp's ernie4_5 has no MLP biases")
        if mt in ("ernie4_5_moe", "glm4_moe", "deepseek_v2", "deepseek_v3", "glm4_moe_lite"):
            _deepseek_moe_metadata(cfg, config, mt, source, put)
        if mt == "cohere" and cfg.get("use_qk_norm", bool, False) and cfg.positive("num_hidden_layers") != 64:
            raise cfg.error("use_qk_norm", "is true: llama.cpp's command-r reads q/k norms in 64-layer models only "
                                           "(Command R+)")
        if mt == "olmoe":
            if cfg.get("norm_topk_prob", bool, False):
                raise cfg.error("norm_topk_prob", "is true: llama.cpp's olmoe never renormalizes")
            if cfg.positive("num_key_value_heads", nh) != nh:  # (its k norm spans hidden_size)
                raise cfg.error("num_key_value_heads", "differs from num_attention_heads: llama.cpp's olmoe has "
                                                       "no key/value groups")
            _put_experts(cfg, put, "num_experts")
        if mt == "granitemoe":
            _put_experts(cfg, put, "num_local_experts", 2)
            put(_K.EXPERT_FEED_FORWARD_LENGTH, cfg.positive("intermediate_size"))
        if mt in ("granite", "granitemoe"):
            for key, field in ((_K.EMBEDDING_SCALE, "embedding_multiplier"), (_A.SCALE, "attention_multiplier"),
                               (_K.RESIDUAL_SCALE, "residual_multiplier"), (_K.LOGIT_SCALE, "logits_scaling")):
                put(key, cfg.get(field, float, 1.0))
    elif arch in (GEMMA4, GEMMA3N):
        from .gguf_gemma import gemma3n_metadata, gemma4_metadata

        (gemma4_metadata if arch == GEMMA4 else gemma3n_metadata)(cfg, config, put)
    elif arch in (LFM2, LFM2MOE):
        from .gguf_hybrid import lfm2_metadata

        lfm2_metadata(cfg, config, put)
    elif arch in (GRANITE_HYBRID, MAMBA, MAMBA2, NEMOTRON_H, NEMOTRON_H_MOE,
             FALCON_H1, JAMBA):
        from .gguf_ssm import SSM_METADATA

        SSM_METADATA[arch](cfg, config, put)
    elif arch in (GPT2, STARCODER):
        if arch == STARCODER:  # (llama.cpp's: attn_qkv as [all q, k, v], one key/value head)
            if not cfg.get("multi_query", bool, True):
                raise cfg.error("multi_query", "is false: llama.cpp's starcoder reads attn_qkv as all queries, "
                                               "then the keys and values of one head group, not per head")
            if not cfg.get("scale_attn_weights", bool, True):
                raise cfg.error("scale_attn_weights", "is false: llama.cpp's starcoder scales the attention scores")
            put(_A.HEAD_COUNT_KV, 1)
        hidden = cfg.positive("n_embd")
        put(_K.CONTEXT_LENGTH, cfg.positive("n_positions", 1024))
        put(_K.EMBEDDING_LENGTH, hidden)
        put(_K.BLOCK_COUNT, cfg.positive("n_layer"))
        put(_K.FEED_FORWARD_LENGTH, cfg.positive("n_inner", 4 * hidden))
        put(_A.HEAD_COUNT, cfg.positive("n_head"))
        put(_A.LAYERNORM_EPS, cfg.get("layer_norm_epsilon", float, 1e-5))
    elif arch in (GPTNEOX, PHI2):
        data = dict(config)
        for old, new in (("rotary_pct", "partial_rotary_factor"), ("rotary_emb_base", "rope_theta")):
            if old in data and new not in data:
                data[new] = data[old]
        c = Config(data, source)
        hidden, nh = c.positive("hidden_size"), c.positive("num_attention_heads")
        field = "rope_parameters" if data.get("rope_parameters") is not None else "rope_scaling"
        params = c.get(field, dict, {}) or {}
        if params.get("rope_type", params.get("type", "default")) != "default":
            raise c.error(field + ".rope_type", f"has no GGUF key llama.cpp's {arch} reads")
        partial = c.get("partial_rotary_factor", float, None, data=params, prefix=field + ".")
        partial = partial if partial is not None else c.get("partial_rotary_factor", float, 0.25 if arch == GPTNEOX else 0.5)
        theta = c.get("rope_theta", float, None, data=params, prefix=field + ".")
        put(_K.CONTEXT_LENGTH, c.positive("max_position_embeddings", 2048))
        put(_K.EMBEDDING_LENGTH, hidden)
        put(_K.FEED_FORWARD_LENGTH, c.positive("intermediate_size"))
        put(_K.BLOCK_COUNT, c.positive("num_hidden_layers"))
        put(_A.HEAD_COUNT, nh)
        put(_A.HEAD_COUNT_KV, c.positive("num_key_value_heads", nh))
        put(_A.LAYERNORM_EPS, c.get("layer_norm_eps", float, 1e-5))
        put(_R.DIMENSION_COUNT, int(hidden // nh * partial))
        put(_R.FREQ_BASE, theta if theta is not None else c.get("rope_theta", float, 10000.0))
        if arch == GPTNEOX:
            put(_K.USE_PARALLEL_RESIDUAL, c.get("use_parallel_residual", bool, True))
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
    elif arch == MPT:
        hidden, nh = cfg.positive("d_model"), cfg.positive("n_heads")
        attn = cfg.get("attn_config", dict, {}) or {}
        put(_K.CONTEXT_LENGTH, cfg.positive("max_seq_len", 2048))
        put(_K.EMBEDDING_LENGTH, hidden)
        put(_K.FEED_FORWARD_LENGTH, cfg.positive("expansion_ratio", 4) * hidden)
        put(_K.BLOCK_COUNT, cfg.positive("n_layers"))
        put(_A.HEAD_COUNT, nh)
        put(_A.LAYERNORM_EPS, cfg.get("layer_norm_epsilon", float, 1e-5))
        put(_A.MAX_ALIBI_BIAS, cfg.get("alibi_bias_max", float, 8.0, data=attn, prefix="attn_config."))
        clip = cfg.get("clip_qkv", float, None, data=attn, prefix="attn_config.")
        if clip is not None:
            put(_A.CLAMP_KQV, clip)
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
        from .archs_encoders import PADDED_POSITIONS

        # RoBERTa's: the table's rows up to the padding id's are no token's (the writer drops them)
        skip = cfg.get("pad_token_id", int, 1) + 1 if config.get("model_type") in PADDED_POSITIONS else 0
        put(_K.CONTEXT_LENGTH, cfg.positive("max_position_embeddings", 512) - skip)
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
# metadata into a gguf.GGUFWriter
# ------------------------------------------------------------------------------------------------------------

_INT32_ARRAYS = {_T.TOKEN_TYPE}


def add_metadata_to_writer(writer: Any, meta: Dict[str, Any]) -> None:
    """Adds metadata {key: value} to a ``gguf.GGUFWriter`` with llama.cpp's value types: non-negative ints as
    uint32 (uint64 if larger), negative ints as int32 / int64, floats as float32, bools, strings, arrays
    of those (token types as int32), and bytes as a uint8 array. ``general.architecture`` is the writer's own and is skipped."""
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
        elif isinstance(v, (bytes, bytearray)):  # a byte array (precompiled_charsmap): uint8 elements
            if v:
                writer.add_key_value(key, bytes(v), GGUFValueType.ARRAY)  # gguf-py packs bytes as uint8
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
