"""Gemma 4 in GGUF (llama.cpp's ``gemma4``): tensor names, config.json from the metadata, and the metadata from a
config. llama.cpp's converter writes the full layers' head size as key_length (the sliding layers' as
key_length_swa), their key/value heads in a per-layer head_count_kv, which layers slide as sliding_window_pattern,
the double-wide MLPs in a per-layer feed_forward_length, and the full layers' proportional rotary as factors in
``rope_freqs`` (1 on the rotated pairs, 1e30 on the rest); the full layers that reuse keys as values have no
attn_v; the norms are stored as they are (no 1 added); layer_scalar is ``blk.N.layer_output_scale``."""

from __future__ import annotations

import math
from typing import Any, Dict, List

import numpy as np
from gguf.constants import MODEL_TENSOR, Keys

from .gguf_common import _Meta

_K, _A, _R = Keys.LLM, Keys.Attention, Keys.Rope
_T = MODEL_TENSOR
_W = (".weight",)
_UNROTATED = 1e30  # (llama.cpp's factor for a pair proportional rotary leaves alone)


def _k(template: str, arch: str) -> str:
    return template.format(arch=arch)


def gemma4_name_table() -> List[tuple]:
    """(llama.cpp tensor, HF name, suffixes, stack) as gguf_names' tables."""
    L = "model.layers.{i}."
    return [
        (_T.TOKEN_EMBD, "model.embed_tokens", _W, None),
        (_T.OUTPUT_NORM, "model.norm", _W, None),
        (_T.OUTPUT, "lm_head", _W, None),
        (_T.PER_LAYER_TOKEN_EMBD, "model.embed_tokens_per_layer", _W, None),
        (_T.PER_LAYER_MODEL_PROJ, "model.per_layer_model_projection", _W, None),
        (_T.PER_LAYER_PROJ_NORM, "model.per_layer_projection_norm", _W, None),
        (_T.ATTN_NORM, L + "input_layernorm", _W, "blk"),
        (_T.ATTN_Q, L + "self_attn.q_proj", _W, "blk"),
        (_T.ATTN_K, L + "self_attn.k_proj", _W, "blk"),
        (_T.ATTN_V, L + "self_attn.v_proj", _W, "blk"),
        (_T.ATTN_OUT, L + "self_attn.o_proj", _W, "blk"),
        (_T.ATTN_Q_NORM, L + "self_attn.q_norm", _W, "blk"),
        (_T.ATTN_K_NORM, L + "self_attn.k_norm", _W, "blk"),
        (_T.ATTN_POST_NORM, L + "post_attention_layernorm", _W, "blk"),
        (_T.FFN_NORM, L + "pre_feedforward_layernorm", _W, "blk"),
        (_T.FFN_POST_NORM, L + "post_feedforward_layernorm", _W, "blk"),
        (_T.FFN_GATE, L + "mlp.gate_proj", _W, "blk"),
        (_T.FFN_UP, L + "mlp.up_proj", _W, "blk"),
        (_T.FFN_DOWN, L + "mlp.down_proj", _W, "blk"),
        (_T.PER_LAYER_INP_GATE, L + "per_layer_input_gate", _W, "blk"),
        (_T.PER_LAYER_PROJ, L + "per_layer_projection", _W, "blk"),
        (_T.PER_LAYER_POST_NORM, L + "post_per_layer_input_norm", _W, "blk"),
        (_T.LAYER_OUT_SCALE, L + "layer_scalar", ((".weight", ""),), "blk"),
        # 26B-A4B: the router (its input scale and each expert's weight scale under ".scale" names), the norms of
        # the two branches (the experts themselves: gguf_names.expert_tensor)
        (_T.FFN_GATE_INP, L + "router.proj", _W, "blk"),
        (_T.FFN_GATE_INP, L + "router.scale", ((".scale", ""),), "blk"),
        (_T.FFN_DOWN_EXP, L + "router.per_expert_scale", ((".scale", ""),), "blk"),
        (_T.FFN_PRE_NORM_2, L + "pre_feedforward_layernorm_2", _W, "blk"),
        (_T.FFN_POST_NORM_1, L + "post_feedforward_layernorm_1", _W, "blk"),
        (_T.FFN_POST_NORM_2, L + "post_feedforward_layernorm_2", _W, "blk"),
    ]


def _per_layer(m: _Meta, key: str, n: int) -> List[int]:
    """A positive count per layer: one value for all, or an array of n."""
    v = m.raw(key)
    v = [v] * n if isinstance(v, int) and not isinstance(v, bool) else v
    if not (isinstance(v, list) and len(v) == n and all(isinstance(x, int) and not isinstance(x, bool) and x > 0
                                                        for x in v)):
        raise m.error(key, f"expected a positive count or {n} of them, got {v!r}"[:200])
    return v


def _sliding_pattern(m: _Meta, arch: str, n: int, every: int = 0) -> List[bool]:
    """sliding_window_pattern: n booleans (true: a sliding layer); where the file has none and `every` is set, every
    `every`-th layer full, as llama.cpp's load_swa_pattern."""
    key = _k(_A.SLIDING_WINDOW_PATTERN, arch)
    pattern = m.raw(key)
    if pattern is None and every:
        pattern = [(i + 1) % every != 0 for i in range(n)]
    if not (isinstance(pattern, list) and len(pattern) == n and all(isinstance(x, bool) for x in pattern)):
        raise m.error(key, f"expected {n} booleans (true: a sliding layer)")
    return pattern


def _full_rope(m: _Meta, arch: str, head_dim: int, rope_freqs: Any) -> Dict[str, Any]:
    """The full layers' rotary: proportional where the file has its factors (rope_freqs: the rotated pairs first,
    at factor f, then pairs at 1e30), else every pair of the head."""
    theta = m.get(_k(_R.FREQ_BASE, arch), float, 1_000_000.0)
    if rope_freqs is None:
        return {"rope_type": "default", "rope_theta": theta}
    f = np.asarray(rope_freqs, dtype=np.float64).reshape(-1)
    rotated = int((f < 1e20).sum())
    if f.size != head_dim // 2 or not (f[:rotated] < 1e20).all() or (rotated and not np.allclose(f[:rotated], f[0])):
        raise ValueError(f"{m.source}: tensor 'rope_freqs.weight' must hold {head_dim // 2} factors, the rotated "
                         "pairs' (one value) before the unrotated ones' (1e30)")
    return {"rope_type": "proportional", "rope_theta": theta, "partial_rotary_factor": 2 * rotated / head_dim,
            **({"factor": float(f[0])} if rotated and f[0] != 1.0 else {})}


def config_gemma4(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """Gemma 4's config from llama.cpp's keys (vocab_size_per_layer_input: the loader sets it from the table)."""
    from .gguf_config import _special_ids, _vocab_size

    moe = "blk.0.ffn_gate_inp.weight" in names
    n = m.positive(_k(_K.BLOCK_COUNT, arch))
    hidden = m.positive(_k(_K.EMBEDDING_LENGTH, arch))
    heads = m.uniform_positive(_k(_A.HEAD_COUNT, arch))
    kv = _per_layer(m, _k(_A.HEAD_COUNT_KV, arch), n)
    full_hd, swa_hd = m.positive(_k(_A.KEY_LENGTH, arch)), m.positive(_k(_A.KEY_LENGTH_SWA, arch))
    for key, want in ((_A.VALUE_LENGTH, full_hd), (_A.VALUE_LENGTH_SWA, swa_hd)):
        if m.positive(_k(key, arch), want) != want:
            raise m.error(_k(key, arch), "differs from the key length: Gemma 4's values are as wide as its keys")
    pattern = _sliding_pattern(m, arch, n)
    types = ["sliding_attention" if x else "full_attention" for x in pattern]
    shared = m.get(_k(_A.SHARED_KV_LAYERS, arch), int, 0)
    first_shared = n - shared
    ff = _per_layer(m, _k(_K.FEED_FORWARD_LENGTH, arch), n)
    double = shared > 0 and ff[-1] == 2 * ff[0]
    if ff != [ff[0] * (2 if double and i >= first_shared else 1) for i in range(n)]:
        raise m.error(_k(_K.FEED_FORWARD_LENGTH, arch), "must be one width, or twice it on the layers sharing keys "
                                                        "and values (use_double_wide_mlp)")
    swa_kv = {kv[i] for i in range(n) if pattern[i]}
    if len(swa_kv) > 1:
        raise m.error(_k(_A.HEAD_COUNT_KV, arch), "differs between the sliding layers")
    full = [i for i in range(n) if not pattern[i]]
    own_full = [i for i in full if i < first_shared]
    k_eq_v = bool(own_full) and all(f"blk.{i}.attn_v.weight" not in names for i in own_full)
    rot_swa = m.positive(_k(_R.DIMENSION_COUNT_SWA, arch), swa_hd)
    if rot_swa != swa_hd:
        raise m.error(_k(_R.DIMENSION_COUNT_SWA, arch), f"({rot_swa}) is not the sliding layers' head size "
                                                         f"({swa_hd}): their rotary turns every pair")
    cap = m.get(_k(_K.FINAL_LOGIT_SOFTCAPPING, arch), float, None)
    cfg: Dict[str, Any] = {
        "architectures": ["Gemma4ForCausalLM"], "model_type": "gemma4_text", "vocab_size": _vocab_size(m, arch),
        "hidden_size": hidden, "intermediate_size": ff[0], "num_hidden_layers": n, "num_attention_heads": heads,
        "num_key_value_heads": swa_kv.pop() if swa_kv else kv[0], "head_dim": swa_hd,
        "per_layer_config": {str(i): {"head_dim": full_hd, "num_key_value_heads": kv[i]} for i in full},
        "max_position_embeddings": m.positive(_k(_K.CONTEXT_LENGTH, arch), 131072),
        "rms_norm_eps": m.get(_k(_A.LAYERNORM_RMS_EPS, arch), float, 1e-6),
        "sliding_window": m.positive(_k(_A.SLIDING_WINDOW, arch), 512), "layer_types": types,
        "final_logit_softcapping": cap, "hidden_activation": "gelu_pytorch_tanh",
        "rope_parameters": {"full_attention": _full_rope(m, arch, full_hd, rope_freqs),
                            "sliding_attention": {"rope_type": "default",
                                                  "rope_theta": m.get(_k(_R.FREQ_BASE_SWA, arch), float, 10000.0)}},
        "hidden_size_per_layer_input": m.get(_k(_K.EMBD_LENGTH_PER_LAYER_INP, arch), int, 0),
        "attention_k_eq_v": k_eq_v, "num_kv_shared_layers": shared, "use_double_wide_mlp": double,
        "tie_word_embeddings": "output.weight" not in names,
    }
    if moe:  # (26B-A4B: experts beside every layer's MLP)
        cfg.update(enable_moe_block=True, num_experts=m.positive(_k(_K.EXPERT_COUNT, arch)),
                   top_k_experts=m.positive(_k(_K.EXPERT_USED_COUNT, arch)),
                   moe_intermediate_size=m.uniform_positive(_k(_K.EXPERT_FEED_FORWARD_LENGTH, arch)))
    _special_ids(m, cfg, cfg["vocab_size"])
    return cfg


def _common_metadata(cfg, config: Dict[str, Any], put):
    """The keys gemma4 and gemma3n share, from the spec the config builds: returns (spec, which layers slide, the
    first layer sharing another's keys and values, whether every later one reads the layer llama.cpp reuses for
    it: the last full layer before them, or the sliding one before that)."""
    from .archs import spec_from_config

    s = spec_from_config(config, cfg.source)[0]
    n = s.n_layers
    sliding = [w > 0 for w in s.layer_windows] if s.layer_windows else [False] * n
    first = n - sum(1 for x in s.layer_kv_source if x >= 0)
    llama_cpp_kv = list(s.layer_kv_source)[first:] == [first - (2 if sliding[i] else 1) for i in range(first, n)]
    put(_K.CONTEXT_LENGTH, s.max_position)
    put(_K.EMBEDDING_LENGTH, s.hidden_size)
    put(_K.BLOCK_COUNT, n)
    put(_K.FEED_FORWARD_LENGTH, list(s.layer_ffn) if s.layer_ffn else s.ffn_size)
    put(_A.HEAD_COUNT, s.n_heads)
    put(_A.LAYERNORM_RMS_EPS, s.norm_eps)
    put(_A.SLIDING_WINDOW, max(s.layer_windows) if s.layer_windows else cfg.positive("sliding_window", 512))
    put(_A.SLIDING_WINDOW_PATTERN, sliding)
    put(_A.SHARED_KV_LAYERS, n - first)
    put(_K.EMBD_LENGTH_PER_LAYER_INP, s.ple_dim)
    put(_R.FREQ_BASE, s.rope.theta)
    put(_R.FREQ_BASE_SWA, s.rope_local.theta)
    return s, sliding, first, llama_cpp_kv


def gemma4_metadata(cfg, config: Dict[str, Any], put) -> None:
    """llama.cpp's gemma4 keys for a config (as its converter writes them), from the spec the config builds."""
    s, sliding, _, llama_cpp_kv = _common_metadata(cfg, config, put)
    if not llama_cpp_kv:
        raise cfg.error("num_kv_shared_layers", "leaves layers sharing keys and values with other layers than "
                                                "llama.cpp's gemma4 reads: the last full layer before them and the "
                                                "sliding one before that")
    full = sliding.index(False)
    kv = list(s.layer_kv_heads)
    put(_A.HEAD_COUNT_KV, kv if len(set(kv)) > 1 else kv[0])
    put(_A.KEY_LENGTH, s.layer_head_dim[full])
    put(_A.VALUE_LENGTH, s.layer_head_dim[full])
    put(_A.KEY_LENGTH_SWA, s.head_dim)
    put(_A.VALUE_LENGTH_SWA, s.head_dim)
    put(_R.DIMENSION_COUNT, s.rope.rotary_dim)
    put(_R.DIMENSION_COUNT_SWA, s.rope_local.rotary_dim)
    if s.logit_softcap > 0:
        put(_K.FINAL_LOGIT_SOFTCAPPING, s.logit_softcap)
    if s.n_experts:
        put(_K.EXPERT_COUNT, s.n_experts)
        put(_K.EXPERT_USED_COUNT, s.n_experts_used)
        put(_K.EXPERT_FEED_FORWARD_LENGTH, s.moe_ffn_size)


def gemma4_rope_freqs(spec) -> np.ndarray:
    """The full layers' ``rope_freqs.weight`` (llama.cpp reads no other form of their proportional rotary)."""
    f = list(spec.rope.freq_factors) or [1.0] * (spec.rope.rotary_dim // 2)
    return np.asarray([_UNROTATED if not np.isfinite(x) else x for x in f], np.float32)


# -- Gemma 3n (llama.cpp's gemma3n) ---------------------------------------------------------------------------------
# What llama.cpp's gemma3n fixes rather than reads: four AltUp streams computing on the first, LAuReL of rank 64,
# per-layer inputs of 256, keys and values computed by the first 20 layers only (each later layer reads the last full
# or sliding one of them), activation sparsity 0.95 in the first 10 layers, a final soft cap of 30.
_G3N = {"altup": 4, "laurel": 64, "ple": 256, "kv_layers": 20, "sparse_layers": 10, "sparsity": 0.95, "cap": 30.0}


def gemma3n_name_table() -> List[tuple]:
    """(llama.cpp tensor, HF name, suffixes, stack) as gguf_names' tables (the AltUp projections, stacked in the file:
    gguf_names.expert_tensor)."""
    L = "model.layers.{i}."
    scale = ((".weight", ""),)  # (the converter names a *_scale parameter with .weight)
    return [e for e in gemma4_name_table() if e[0] not in (_T.LAYER_OUT_SCALE, _T.FFN_GATE_INP, _T.FFN_DOWN_EXP,
                                                          _T.FFN_PRE_NORM_2, _T.FFN_POST_NORM_1, _T.FFN_POST_NORM_2)] + [
        (_T.ALTUP_CORRECT_COEF, L + "altup.correction_coefs", _W, "blk"),
        (_T.ALTUP_CORRECT_SCALE, L + "altup.correct_output_scale", scale, "blk"),
        (_T.ALTUP_PREDICT_COEF, L + "altup.prediction_coefs", _W, "blk"),
        (_T.ALTUP_ROUTER, L + "altup.modality_router", _W, "blk"),
        (_T.ALTUP_ROUTER_NORM, L + "altup.router_norm", _W, "blk"),
        (_T.LAUREL_L, L + "laurel.linear_left", _W, "blk"),
        (_T.LAUREL_R, L + "laurel.linear_right", _W, "blk"),
        (_T.LAUREL_POST_NORM, L + "laurel.post_laurel_norm", _W, "blk"),
    ]


def config_gemma3n(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """Gemma 3n's config as llama.cpp computes the file (its fixed facts: _G3N)."""
    from .gguf_config import _special_ids, _vocab_size

    n = m.positive(_k(_K.BLOCK_COUNT, arch))
    hidden = m.positive(_k(_K.EMBEDDING_LENGTH, arch))
    heads = m.uniform_positive(_k(_A.HEAD_COUNT, arch))
    pattern = _sliding_pattern(m, arch, n, every=5)
    sparse = min(n, _G3N["sparse_layers"])
    cfg: Dict[str, Any] = {
        "architectures": ["Gemma3nForCausalLM"], "model_type": "gemma3n_text", "vocab_size": _vocab_size(m, arch),
        "hidden_size": hidden, "intermediate_size": _per_layer(m, _k(_K.FEED_FORWARD_LENGTH, arch), n),
        "num_hidden_layers": n, "num_attention_heads": heads,
        "num_key_value_heads": m.uniform_positive(_k(_A.HEAD_COUNT_KV, arch), heads),
        "head_dim": m.positive(_k(_A.KEY_LENGTH, arch), hidden // heads),
        "max_position_embeddings": m.positive(_k(_K.CONTEXT_LENGTH, arch), 32768),
        "rms_norm_eps": m.get(_k(_A.LAYERNORM_RMS_EPS, arch), float, 1e-6),
        "sliding_window": m.positive(_k(_A.SLIDING_WINDOW, arch), 512),
        "layer_types": ["sliding_attention" if x else "full_attention" for x in pattern],
        "rope_parameters": {"full_attention": {"rope_type": "default",
                                               "rope_theta": m.get(_k(_R.FREQ_BASE, arch), float, 1_000_000.0)},
                            "sliding_attention": {"rope_type": "default",
                                                  "rope_theta": m.get(_k(_R.FREQ_BASE_SWA, arch), float, 10000.0)}},
        "hidden_activation": "gelu_pytorch_tanh", "final_logit_softcapping": _G3N["cap"],
        "altup_num_inputs": _G3N["altup"], "altup_active_idx": 0, "laurel_rank": _G3N["laurel"],
        "hidden_size_per_layer_input": _G3N["ple"], "num_kv_shared_layers": max(0, n - _G3N["kv_layers"]),
        "activation_sparsity_pattern": [_G3N["sparsity"]] * sparse + [0.0] * (n - sparse),
        "tie_word_embeddings": "output.weight" not in names,
    }
    _special_ids(m, cfg, cfg["vocab_size"])
    return cfg


def gemma3n_metadata(cfg, config: Dict[str, Any], put) -> None:
    """llama.cpp's gemma3n keys for a config, refusing what llama.cpp fixes otherwise (_G3N)."""
    from statistics import NormalDist

    s, _, first, llama_cpp_kv = _common_metadata(cfg, config, put)
    n = s.n_layers
    sparse = min(n, _G3N["sparse_layers"])
    sigma = list(s.layer_gate_sigma)
    cut = NormalDist().inv_cdf(_G3N["sparsity"])  # (the gate's cutoff, in standard deviations)
    checks = [("altup_num_inputs", s.altup == _G3N["altup"], "4 streams"),
              ("laurel_rank", s.laurel_rank == _G3N["laurel"], "LAuReL of rank 64"),
              ("hidden_size_per_layer_input", s.ple_dim == _G3N["ple"], "per-layer inputs of 256"),
              ("final_logit_softcapping", abs(s.logit_softcap - _G3N["cap"]) < 1e-6, "a final soft cap of 30"),
              ("num_kv_shared_layers", first == min(n, _G3N["kv_layers"]) and llama_cpp_kv,
               "keys and values from the first 20 layers only (the last full and sliding ones of them shared)"),
              ("activation_sparsity_pattern",
               [x == x for x in sigma] == [i < sparse for i in range(n)] and  # (NaN: no cutoff)
               all(abs(x - cut) < 1e-6 for x in sigma if x == x) if sigma else not sparse,
               "activation sparsity 0.95 in the first 10 layers")]
    for field, ok, what in checks:
        if not ok:
            raise cfg.error(field, f"differs from what llama.cpp's gemma3n fixes: {what}")
    put(_A.HEAD_COUNT_KV, s.n_kv_heads)
    put(_A.KEY_LENGTH, s.head_dim)
    put(_A.VALUE_LENGTH, s.head_dim)
    put(_K.ALTUP_ACTIVE_IDX, 0)
    put(_K.ALTUP_NUM_INPUTS, s.altup)
    put(_K.FINAL_LOGIT_SOFTCAPPING, s.logit_softcap)
    put(_K.ACTIVATION_SPARSITY_SCALE, [x if x == x else -math.inf for x in sigma] if sigma else [-math.inf] * n)


def gemma3n_shared_kv(spec) -> Dict[str, tuple]:
    """The keys' and values' tensors llama.cpp's gemma3n requires of every layer, for the layers that share another
    layer's (zeros there: it never reads them), with the k norm's ones."""
    from . import _core

    out: Dict[str, tuple] = {}
    kd = spec.n_kv_heads * spec.head_dim
    for i, src in enumerate(spec.layer_kv_source):
        if src >= 0:
            for p in ("k", "v"):
                out[f"blk.{i}.attn_{p}.weight"] = (np.zeros((kd, spec.hidden_size), np.float16), _core.DType.f16)
            out[f"blk.{i}.attn_k_norm.weight"] = (np.ones(spec.head_dim, np.float32), _core.DType.f32)
    return out
