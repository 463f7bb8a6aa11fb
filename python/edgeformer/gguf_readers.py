"""GGUF metadata -> config.json, one reader per llama.cpp architecture (gguf_config.config_from_gguf picks the
reader by ``general.architecture``). Each takes the file's metadata (gguf_common._Meta: every error names the file
and the key), its tensor names and the rope tables, and returns the config.json dict archs.py reads."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np
from gguf.constants import MODEL_TENSOR, TENSOR_NAMES

from .gguf_common import (
    _A,
    _K,
    _R,
    _T,
    LLAMA,
    QWEN2,
    QWEN3,
    QWEN2MOE,
    QWEN3MOE,
    GPTNEOX,
    STARCODER2,
    STABLELM,
    GRANITEMOE,
    OLMO2,
    SMOLLM3,
    COMMAND_R,
    COHERE2,
    EXAONE,
    ARCEE,
    NEMOTRON,
    OLMO,
    SEED_OSS,
    GEMMA2,
    ERNIE4_5,
    EXAONE4,
    GLM4,
    ERNIE4_5_MOE,
    _Meta,
)
from .gguf_config import _k, _vocab_size, _special_ids, _rope_scaling, _heads, _even_heads, _has, _OUTPUT


def _expert_counts(m: _Meta, arch: str) -> Tuple[int, int]:
    """A mixture of experts' expert_count and expert_used_count."""
    return m.positive(_k(_K.EXPERT_COUNT, arch)), m.positive(_k(_K.EXPERT_USED_COUNT, arch))


def _config_llama(m: _Meta, arch: str, names: set, rope_freqs: Any, window: bool = True) -> Dict[str, Any]:
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
        # (the LayerNorm variants, StarCoder2 and StableLM, store layer_norm_epsilon instead)
        "rms_norm_eps": m.get(_k(_A.LAYERNORM_EPS if arch in (STARCODER2, STABLELM, COMMAND_R, COHERE2, NEMOTRON, OLMO)
                                 else _A.LAYERNORM_RMS_EPS, arch), float),
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
    window = m.positive(swkey, None) if window else None
    if window is not None:
        cfg["model_type"] = "mistral"
        cfg["architectures"] = ["MistralForCausalLM"]
        cfg["sliding_window"] = window
    if arch == LLAMA and m.get(_k(_K.EXPERT_COUNT, arch), int, 0):  # Mixtral: a Llama (or Mistral) with experts
        n, used = _expert_counts(m, arch)
        cfg.update(model_type="mixtral", architectures=["MixtralForCausalLM"], sliding_window=window,
                   num_local_experts=n, num_experts_per_tok=used)
    _special_ids(m, cfg, n_vocab)
    return cfg


_QWEN_TYPES = {QWEN2: ("qwen2", "Qwen2ForCausalLM"), QWEN3: ("qwen3", "Qwen3ForCausalLM"),
               QWEN2MOE: ("qwen2_moe", "Qwen2MoeForCausalLM"), QWEN3MOE: ("qwen3_moe", "Qwen3MoeForCausalLM")}


def _config_qwen(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """Qwen2 (q/k/v biases, always) and Qwen3 (a norm over each head's query and key): Llamas whose q and k rows
    are as Hugging Face stores them (no permutation); a window in the file is every layer's. Their MoE variants
    (every layer sparse, as llama.cpp reads them): Qwen2-MoE's shared expert and unnormalized expert weights,
    Qwen3-MoE's weights renormalized over the chosen experts."""
    cfg = _config_llama(m, arch, names, rope_freqs)
    model_type, cls = _QWEN_TYPES[arch]
    cfg.update(model_type=model_type, architectures=[cls])
    if arch in (QWEN2, QWEN2MOE):
        cfg.pop("attention_bias", None)
    window = cfg.pop("sliding_window", None)
    if window is not None:
        cfg.update(use_sliding_window=True, sliding_window=window, max_window_layers=0)
        if arch in (QWEN2MOE, QWEN3MOE):
            cfg["layer_types"] = ["sliding_attention"] * cfg["num_hidden_layers"]
    if arch in (QWEN2MOE, QWEN3MOE):
        n, used = _expert_counts(m, arch)
        # (files converted before llama.cpp wrote the expert widths: its own fallbacks)
        cfg.update(num_experts=n, num_experts_per_tok=used,
                   moe_intermediate_size=m.positive(_k(_K.EXPERT_FEED_FORWARD_LENGTH, arch),
                                                    max(cfg["intermediate_size"] // used, 1)),
                   norm_topk_prob=arch == QWEN3MOE)
    if arch == QWEN2MOE:
        shared = _has(names, MODEL_TENSOR.FFN_GATE_SHEXP, ".weight")
        cfg["shared_expert_intermediate_size"] = m.positive(_k(_K.EXPERT_SHARED_FEED_FORWARD_LENGTH, arch),
                                                            cfg["intermediate_size"]) if shared else 0
        cfg["qkv_bias"] = _has(names, MODEL_TENSOR.ATTN_Q, ".bias")
    return cfg


_ROPE_LONG = TENSOR_NAMES[MODEL_TENSOR.ROPE_FACTORS_LONG] + ".weight"


_ROPE_SHORT = TENSOR_NAMES[MODEL_TENSOR.ROPE_FACTORS_SHORT] + ".weight"


def _config_phi3(m: _Meta, arch: str, names: set, extra: Any) -> Dict[str, Any]:
    """Phi-3 / Phi-4: llama.cpp's converter writes longrope's factors as the tensors rope_factors_long / _short
    (their values come in extra, {tensor name: values}), sliding_window 0 for none."""
    cfg = _config_llama(m, arch, names, None, window=False)
    cfg.update(model_type="phi3", architectures=["Phi3ForCausalLM"])
    for k in ("attention_bias", "mlp_bias"):
        cfg.pop(k, None)
    window = m.get(_k(_A.SLIDING_WINDOW, arch), int, 0)
    if window < 0:
        raise m.error(_k(_A.SLIDING_WINDOW, arch), f"must be non-negative, got {window}")
    cfg["sliding_window"] = window or None
    have = [n for n in (_ROPE_LONG, _ROPE_SHORT) if n in names]
    if have:
        if len(have) != 2:
            raise ValueError(f"{m.source}: tensor '{have[0]}' without its pair (longrope needs both factor tensors)")
        if not isinstance(extra, dict) or not all(n in extra for n in have):
            raise ValueError(f"{m.source}: the longrope factor tensors are in the file: pass their values as "
                             "config_from_gguf(..., rope_freqs={name: values})")
        orig_key = _k(_R.SCALING_ORIG_CTX_LEN, arch)
        scaling = {"rope_type": "longrope", "rope_theta": cfg["rope_theta"],
                   "long_factor": [float(x) for x in np.asarray(extra[_ROPE_LONG], np.float64).reshape(-1)],
                   "short_factor": [float(x) for x in np.asarray(extra[_ROPE_SHORT], np.float64).reshape(-1)],
                   "original_max_position_embeddings": m.positive(orig_key)}
        att = m.get(_k(_R.SCALING_ATTN_FACTOR, arch), float, None)
        if att is not None:
            scaling["attention_factor"] = att
        if "partial_rotary_factor" in cfg:
            scaling["partial_rotary_factor"] = cfg["partial_rotary_factor"]
        cfg["rope_scaling"] = scaling
        cfg["original_max_position_embeddings"] = scaling["original_max_position_embeddings"]
    return cfg


def _config_llama_like(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """StarCoder2 (LayerNorms, a plain GELU MLP, biases), StableLM (LayerNorms, partial rotary, the parallel
    residual where layers have no ffn_norm) and Granite (a Llama with four multipliers): Llama's metadata, q and
    k rows as Hugging Face stores them (Granite's permuted, as Llama's)."""
    cfg = _config_llama(m, arch, names, rope_freqs, window=False)
    eps = cfg.pop("rms_norm_eps")
    bias = _has(names, MODEL_TENSOR.ATTN_Q, ".bias")
    for k in ("attention_bias", "mlp_bias"):
        cfg.pop(k, None)
    if arch == STARCODER2:
        cfg.update(model_type="starcoder2", architectures=["Starcoder2ForCausalLM"], norm_epsilon=eps,
                   hidden_act="gelu_pytorch_tanh", use_bias=bias,
                   sliding_window=m.positive(_k(_A.SLIDING_WINDOW, arch), None))
    elif arch == STABLELM:
        cfg.update(model_type="stablelm", architectures=["StableLmForCausalLM"], layer_norm_eps=eps,
                   use_qkv_bias=bias, use_parallel_residual=not _has(names, MODEL_TENSOR.FFN_NORM, ".weight"),
                   qk_layernorm=_has(names, MODEL_TENSOR.ATTN_Q_NORM, ".weight"))
    else:
        cfg.update(model_type="granite", architectures=["GraniteForCausalLM"], rms_norm_eps=eps,
                   attention_bias=bias, mlp_bias=_has(names, MODEL_TENSOR.FFN_UP, ".bias"))
        if arch == GRANITEMOE:
            n, used = _expert_counts(m, arch)
            cfg.update(model_type="granitemoe", architectures=["GraniteMoeForCausalLM"],
                       num_local_experts=n, num_experts_per_tok=used,
                       intermediate_size=m.positive(_k(_K.EXPERT_FEED_FORWARD_LENGTH, arch), cfg["intermediate_size"]))
        for key, field in ((_K.EMBEDDING_SCALE, "embedding_multiplier"), (_A.SCALE, "attention_multiplier"),
                           (_K.RESIDUAL_SCALE, "residual_multiplier"), (_K.LOGIT_SCALE, "logits_scaling")):
            cfg[field] = m.get(_k(key, arch), float, 1.0)
    return cfg


def _config_gpt_oss(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """gpt-oss as llama.cpp reads it: every other layer sliding (from the first), biases everywhere, sink logits,
    experts with the clamped gate (limit 7, alpha 1.702: fixed by the architecture), yarn computed as the model was
    trained (transformers' truncate=False)."""
    cfg = _config_llama(m, arch, names, None, window=False)
    n = cfg["num_hidden_layers"]
    n_experts, used = _expert_counts(m, arch)
    cfg.update(model_type="gpt_oss", architectures=["GptOssForCausalLM"],
               num_local_experts=n_experts, num_experts_per_tok=used,
               intermediate_size=m.positive(_k(_K.EXPERT_FEED_FORWARD_LENGTH, arch), cfg["intermediate_size"]),
               sliding_window=m.positive(_k(_A.SLIDING_WINDOW, arch), 128),
               layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n)],
               attention_bias=True, swiglu_limit=7.0, swiglu_alpha=1.702)
    if isinstance(cfg.get("rope_scaling"), dict) and cfg["rope_scaling"].get("rope_type") == "yarn":
        cfg["rope_scaling"]["truncate"] = False
    elif "rope_scaling" not in cfg:  # (said outright: the builder's default for a config without one is yarn)
        cfg["rope_scaling"] = {"rope_type": "default", "rope_theta": cfg["rope_theta"]}
    for k in ("mlp_bias", "hidden_act", "partial_rotary_factor"):
        cfg.pop(k, None)
    return cfg


def _config_olmo(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """OLMo 2 (norms after attention and MLP only, whole-width q/k norms) and OLMoE (a Llama with whole-width q/k
    norms and experts whose weights llama.cpp does not renormalize): q and k rows as Hugging Face stores them."""
    cfg = _config_llama(m, arch, names, rope_freqs, window=False)
    for k in ("mlp_bias",):
        cfg.pop(k, None)
    window = m.positive(_k(_A.SLIDING_WINDOW, arch), None) if arch == OLMO2 else None
    if window is not None:  # OLMo 3 (llama.cpp's olmo2 with a window: three sliding layers to one full)
        n = cfg["num_hidden_layers"]
        full = {"rope_type": "default", **cfg.pop("rope_scaling", {}), "rope_theta": cfg["rope_theta"]}
        local = {"rope_type": "default", "rope_theta": m.get(_k(_R.FREQ_BASE_SWA, arch), float, cfg["rope_theta"])}
        cfg.update(model_type="olmo3", architectures=["Olmo3ForCausalLM"], sliding_window=window,
                   layer_types=["sliding_attention" if (i + 1) % 4 else "full_attention" for i in range(n)],
                   rope_parameters={"full_attention": full, "sliding_attention": local})
    elif arch == OLMO2:
        cfg.update(model_type="olmo2", architectures=["Olmo2ForCausalLM"])
    else:
        n, used = _expert_counts(m, arch)
        cfg.update(model_type="olmoe", architectures=["OlmoeForCausalLM"], num_experts=n, num_experts_per_tok=used,
                   norm_topk_prob=False)
    return cfg


def _config_smollm3_cohere(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """SmolLM3 (a Llama whose every 4th layer has no rotary, fixed by the architecture as llama.cpp fixes it) and
    Command-R (bias-free LayerNorms, attention and MLP in parallel, interleaved rotary as stored, logit_scale)."""
    cfg = _config_llama(m, arch, names, rope_freqs, window=False)
    if arch == SMOLLM3:
        cfg.update(model_type="smollm3", architectures=["SmolLM3ForCausalLM"], no_rope_layer_interval=4)
        return cfg
    cfg.update(model_type="cohere", architectures=["CohereForCausalLM"], layer_norm_eps=cfg.pop("rms_norm_eps"),
               logit_scale=m.get(_k(_K.LOGIT_SCALE, arch), float),
               use_qk_norm=_has(names, MODEL_TENSOR.ATTN_Q_NORM, ".weight"))  # (Command R+)
    return cfg


def _config_recent(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """ERNIE 4.5 (biases everywhere or nowhere), EXAONE 4 (the sliding layers in the window pattern; the others
    global and without rotary), GLM-4-0414 (q/k/v biases, rotary on part of each head) and HunYuan (its NTK-alpha
    base as written): Llamas whose q and k rows are as Hugging Face stores them."""
    cfg = _config_llama(m, arch, names, rope_freqs, window=False)
    bias = cfg.pop("attention_bias")
    cfg.pop("mlp_bias")
    if arch == ERNIE4_5:
        cfg.update(model_type="ernie4_5", architectures=["Ernie4_5ForCausalLM"], use_bias=bias)
    elif arch == GLM4:  # (the builder's default rotary fraction is GLM's half: always say it)
        cfg.update(model_type="glm4", architectures=["Glm4ForCausalLM"], attention_bias=bias,
                   partial_rotary_factor=cfg.get("partial_rotary_factor", 1.0))
    elif arch == EXAONE4:
        n = cfg["num_hidden_layers"]
        # (llama.cpp gives the 64-layer model, EXAONE 4.0 32B, its 4096 window whether the file says so or not)
        window = m.positive(_k(_A.SLIDING_WINDOW, arch), 4096 if n == 64 else None)
        key = _k(_A.SLIDING_WINDOW_PATTERN, arch)
        pattern = m.raw(key) if m.has(key) else None
        if window is None:
            types = ["full_attention"] * n
        elif pattern is None:  # (llama.cpp's: three sliding layers to one global)
            types = ["sliding_attention" if (i + 1) % 4 else "full_attention" for i in range(n)]
        elif isinstance(pattern, list) and len(pattern) == n and all(isinstance(v, bool) for v in pattern):
            types = ["sliding_attention" if v else "full_attention" for v in pattern]
        else:
            raise m.error(key, f"expected {n} booleans (true: a sliding layer), got {pattern!r}"[:200])
        cfg.update(model_type="exaone4", architectures=["Exaone4ForCausalLM"], sliding_window=window,
                   layer_types=types)
    else:
        cfg.update(model_type="hunyuan_v1_dense", architectures=["HunYuanDenseV1ForCausalLM"], attention_bias=bias)
    return cfg


def _config_variants(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """EXAONE 3 (a Llama), Command R7B (Command-R's block, three sliding layers to one full without rotary),
    Arcee AFM (a Llama with a squared-ReLU MLP and no gate), Nemotron (LayerNorms with biases, norms + 1, no gate), OLMo 1 (no norm weights, clamped q/k/v), Seed-OSS (q/k/v biases, no o bias) and Ministral 3
    (a Mistral whose queries grow with the position: attention.temperature_scale over yarn's original context)."""
    cfg = _config_llama(m, arch, names, rope_freqs, window=False)
    if arch == EXAONE:
        cfg.update(model_type="exaone", architectures=["ExaoneForCausalLM"])
    elif arch == COHERE2:
        n = cfg["num_hidden_layers"]
        key = _k(_A.SLIDING_WINDOW_PATTERN, arch)
        pattern = m.raw(key) if m.has(key) else 4  # (an older llama.cpp fixes 4; a newer reads it)
        if isinstance(pattern, bool) or not isinstance(pattern, int) or pattern <= 0:
            raise m.error(key, f"expected a positive integer, got {pattern!r}"[:200])
        cfg.update(model_type="cohere2", architectures=["Cohere2ForCausalLM"], layer_norm_eps=cfg.pop("rms_norm_eps"),
                   logit_scale=m.get(_k(_K.LOGIT_SCALE, arch), float),
                   sliding_window=m.positive(_k(_A.SLIDING_WINDOW, arch)),
                   layer_types=["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n)])
        cfg.pop("attention_bias")
    elif arch == ARCEE:
        cfg.update(model_type="arcee", architectures=["ArceeForCausalLM"], hidden_act="relu2")
    elif arch == OLMO:  # (norms without weights: none in the file; the epsilon fixed at 1e-5)
        cfg.pop("rms_norm_eps")
        cfg.update(model_type="olmo", architectures=["OlmoForCausalLM"],
                   clip_qkv=m.get(_k(_A.CLAMP_KQV, arch), float, None))
    elif arch == NEMOTRON:  # (norm weights stored with their 1 added, as llama.cpp's converter writes them)
        cfg.update(model_type="nemotron", architectures=["NemotronForCausalLM"], hidden_act="relu2",
                   norm_eps=cfg.pop("rms_norm_eps"), _gguf_norms_plus_one=True)
    elif arch == SEED_OSS:
        cfg.update(model_type="seed_oss", architectures=["SeedOssForCausalLM"], attention_out_bias=False)
    else:  # MISTRAL3
        scaling = cfg.pop("rope_scaling", None) or {"rope_type": "default"}
        beta = m.get(_k(_A.TEMPERATURE_SCALE, arch), float, 0.0)
        if beta:
            scaling["llama_4_scaling_beta"] = beta
            scaling.setdefault("original_max_position_embeddings", cfg["max_position_embeddings"])
        log_mul = m.get(_k(_R.SCALING_YARN_LOG_MUL, arch), float, None)
        if log_mul is not None and scaling.get("rope_type") == "yarn":
            scaling.update(mscale=1.0, mscale_all_dim=log_mul)
        cfg.update(model_type="ministral3", architectures=["Ministral3ForCausalLM"], rope_scaling=scaling)
    return cfg


def _deepseek_experts(m: _Meta, arch: str, ffe: int, shared: int) -> Dict[str, Any]:
    """DeepSeek's expert fields (GLM-4.5 and GLM-4.7-Flash share them) from llama.cpp's keys: counts, widths, the
    leading dense layers, the router's scale, renormalization and groups."""
    n_experts, used = _expert_counts(m, arch)
    groups = m.get(_k(_K.EXPERT_GROUP_COUNT, arch), int, 1)
    return {"n_routed_experts": n_experts, "num_experts_per_tok": used, "moe_intermediate_size": ffe,
            "n_shared_experts": shared,
            "first_k_dense_replace": m.get(_k(_K.LEADING_DENSE_BLOCK_COUNT, arch), int, 0),
            "routed_scaling_factor": m.get(_k(_K.EXPERT_WEIGHTS_SCALE, arch), float, 1.0),
            "norm_topk_prob": m.get(_k(_K.EXPERT_WEIGHTS_NORM, arch), bool, False),
            "n_group": groups, "topk_group": m.get(_k(_K.EXPERT_GROUP_USED_COUNT, arch), int, groups)}


def _config_deepseek_moe(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """ERNIE 4.5 MoE (leading dense layers, then every interleave-th layer sparse; softmax router with a selection
    bias) and GLM-4.5 (leading dense layers; sigmoid router with a selection bias, scale, renormalization and
    groups; its multi-token-prediction layers, counted in block_count, left out): DeepSeek's MoE under llama.cpp's
    names, q and k rows as Hugging Face stores them."""
    cfg = _config_llama(m, arch, names, rope_freqs, window=False)
    bias = cfg.pop("attention_bias")
    cfg.pop("mlp_bias")
    n_experts, used = _expert_counts(m, arch)
    ffe = m.positive(_k(_K.EXPERT_FEED_FORWARD_LENGTH, arch))
    shared_ff = m.positive(_k(_K.EXPERT_SHARED_FEED_FORWARD_LENGTH, arch), None)
    lead = m.get(_k(_K.LEADING_DENSE_BLOCK_COUNT, arch), int, 0)
    has_shared = any(_has(names, MODEL_TENSOR.FFN_GATE_SHEXP, ".weight", i) for i in range(cfg["num_hidden_layers"]))
    shared = (shared_ff // ffe if shared_ff else m.get(_k(_K.EXPERT_SHARED_COUNT, arch), int, 1)) if has_shared else 0
    if arch == ERNIE4_5_MOE:
        cfg.update(model_type="ernie4_5_moe", architectures=["Ernie4_5_MoeForCausalLM"], use_bias=bias,
                   moe_num_experts=n_experts, moe_k=used, moe_intermediate_size=ffe, moe_num_shared_experts=shared,
                   moe_layer_start_index=lead, moe_layer_end_index=-1,
                   moe_layer_interval=m.positive(_k(_K.INTERLEAVE_MOE_LAYER_STEP, arch), 1))
        return cfg
    gating = m.get(_k(_K.EXPERT_GATING_FUNC, arch), int, 2)
    if gating != 2:
        raise m.error(_k(_K.EXPERT_GATING_FUNC, arch), f"is {gating}: GLM-4.5's router is a sigmoid (2)")
    cfg["num_hidden_layers"] -= m.get(_k(_K.NEXTN_PREDICT_LAYERS, arch), int, 0)
    cfg.update(model_type="glm4_moe", architectures=["Glm4MoeForCausalLM"], attention_bias=bias,
               partial_rotary_factor=cfg.get("partial_rotary_factor", 1.0),
               use_qk_norm=_has(names, MODEL_TENSOR.ATTN_Q_NORM, ".weight"), **_deepseek_experts(m, arch, ffe, shared))
    return cfg


def _config_deepseek2(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """DeepSeek-V2 (softmax router) and V3 (sigmoid router with a selection bias and groups) from llama.cpp's
    deepseek2 files of its latent-attention mode (attn_k_b / attn_v_b, the *_mla head sizes); their
    multi-token-prediction blocks left out. Yarn's log multiplier is 0.1 mscale_all_dim (mscale: the same)."""
    dq_key = _k(_A.KEY_LENGTH_MLA, arch)
    if not m.has(dq_key):
        raise m.error(dq_key, "is missing: a latent-attention file of an older converter (one attn_kv_b); convert "
                              "the checkpoint again with a current llama.cpp, or load the checkpoint itself")
    hidden = m.positive(_k(_K.EMBEDDING_LENGTH, arch))
    nh = m.uniform_positive(_k(_A.HEAD_COUNT, arch))
    dr = m.positive(_k(_R.DIMENSION_COUNT, arch))
    dq = m.positive(dq_key)
    if dq <= dr:
        raise m.error(dq_key, f"({dq}) must exceed {arch}.rope.dimension_count ({dr})")
    theta = m.get(_k(_R.FREQ_BASE, arch), float, 10000.0)
    n_vocab = _vocab_size(m, arch)
    ffe = m.positive(_k(_K.EXPERT_FEED_FORWARD_LENGTH, arch))
    shared_ff = m.positive(_k(_K.EXPERT_SHARED_FEED_FORWARD_LENGTH, arch), None)
    shared = shared_ff // ffe if shared_ff else m.get(_k(_K.EXPERT_SHARED_COUNT, arch), int, 0)
    experts = _deepseek_experts(m, arch, ffe, shared)
    v3 = m.get(_k(_K.EXPERT_GATING_FUNC, arch), int, 1) == 2
    q_lora = m.positive(_k(_A.Q_LORA_RANK, arch), None)
    cfg = {
        "architectures": ["DeepseekV3ForCausalLM" if v3 else "DeepseekV2ForCausalLM"],
        "model_type": "deepseek_v3" if v3 else "deepseek_v2",
        "vocab_size": n_vocab,
        "hidden_size": hidden,
        "num_hidden_layers": m.positive(_k(_K.BLOCK_COUNT, arch)) - m.get(_k(_K.NEXTN_PREDICT_LAYERS, arch), int, 0),
        "intermediate_size": m.uniform_positive(_k(_K.FEED_FORWARD_LENGTH, arch)),
        "num_attention_heads": nh,
        "num_key_value_heads": nh,
        "max_position_embeddings": m.positive(_k(_K.CONTEXT_LENGTH, arch)),
        "rms_norm_eps": m.get(_k(_A.LAYERNORM_RMS_EPS, arch), float),
        "rope_theta": theta,
        "q_lora_rank": q_lora,
        "kv_lora_rank": m.positive(_k(_A.KV_LORA_RANK, arch)),
        "qk_nope_head_dim": dq - dr,
        "qk_rope_head_dim": dr,
        "v_head_dim": m.positive(_k(_A.VALUE_LENGTH_MLA, arch)),
        **experts,
        # (V2 with groups: the group-limited routing it was trained with, each group scored by its best)
        "topk_method": "group_limited_greedy" if experts["n_group"] > 1 and not v3 else "greedy",
        "rope_interleave": True,
        "tie_word_embeddings": _OUTPUT not in names,
    }
    if not v3 and cfg["norm_topk_prob"]:
        raise m.error(_k(_K.EXPERT_WEIGHTS_NORM, arch), "is true with a softmax router: DeepSeek-V2 never "
                                                        "renormalizes (transformers)")
    scaling = _rope_scaling(m, arch, names, theta, dr, rope_freqs)
    if scaling and scaling.get("rope_type") == "yarn":
        mul = m.get(_k(_R.SCALING_YARN_LOG_MUL, arch), float, 0.0)
        scaling.update(mscale=mul / 0.1, mscale_all_dim=mul / 0.1, rope_theta=theta)
    cfg["rope_scaling"] = scaling or {"rope_type": "default", "rope_theta": theta}
    _special_ids(m, cfg, n_vocab)
    return cfg


def _config_gemma1(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """Gemma (the first): a Llama whose q and k rows are as Hugging Face stores them, with its norms stored with
    Gemma's 1 added (the loader takes them as they are)."""
    cfg = _config_llama(m, arch, names, rope_freqs, window=False)
    cfg.update(model_type="gemma", architectures=["GemmaForCausalLM"], hidden_act="gelu_pytorch_tanh",
               _gguf_norms_plus_one=True)
    for k in ("attention_bias", "mlp_bias", "partial_rotary_factor"):
        cfg.pop(k, None)
    return cfg


def _config_gemma(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """Gemma 2 and 3 as llama.cpp reads them: the layer pattern (every other layer sliding for Gemma 2; five of
    six for Gemma 3), the sliding layers' rotary base (10000) and query_pre_attn_scalar (hidden / heads for the
    27B models, else the head size) are not in the file but fixed by the architecture; the norms are stored
    with Gemma's 1 added (the loader takes them as they are)."""
    cfg = _config_llama(m, arch, names, None, window=False)
    gemma2 = arch == GEMMA2
    n_layers, hidden = cfg["num_hidden_layers"], cfg["hidden_size"]
    big = n_layers == (46 if gemma2 else 62)  # the 27B models, as llama.cpp tells them apart
    cfg.update(model_type="gemma2" if gemma2 else "gemma3_text",
               architectures=["Gemma2ForCausalLM" if gemma2 else "Gemma3ForCausalLM"],
               hidden_activation="gelu_pytorch_tanh",
               query_pre_attn_scalar=hidden // cfg["num_attention_heads"] if big else cfg["head_dim"],
               sliding_window=m.positive(_k(_A.SLIDING_WINDOW, arch), 4096),
               _gguf_norms_plus_one=True)
    for k in ("attention_bias", "mlp_bias", "hidden_act", "partial_rotary_factor"):
        cfg.pop(k, None)
    pattern = 2 if gemma2 else 6
    cfg["layer_types"] = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n_layers)]
    if gemma2:
        for key, default in (("attn_logit_softcapping", 50.0), ("final_logit_softcapping", 30.0)):
            cfg[key] = m.get(f"{arch}.{key}", float, default)
    else:
        cfg["rope_local_base_freq"] = 10000.0
    return cfg


def _config_gpt2(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """GPT-2's config, or StarCoder's (gpt_bigcode: one key/value head, its Linear weights)."""
    hidden = m.positive(_k(_K.EMBEDDING_LENGTH, arch))
    n_heads = m.uniform_positive(_k(_A.HEAD_COUNT, arch))
    _even_heads(m, arch, hidden, n_heads)
    starcoder = arch == "starcoder"
    if starcoder:
        kv_key = _k(_A.HEAD_COUNT_KV, arch)
        if m.get(kv_key, int, 1) != 1:
            raise m.error(kv_key, "is not 1: only multi-query StarCoder files are read (llama.cpp's attn_qkv "
                                  "layout for more key/value heads differs from the checkpoint's)")
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
    if starcoder:
        cfg.update(architectures=["GPTBigCodeForCausalLM"], model_type="gpt_bigcode", multi_query=True,
                   activation_function="gelu_pytorch_tanh")
    _special_ids(m, cfg, n_vocab)
    return cfg


def _alibi_shape(m: _Meta, arch: str) -> Tuple[int, int, str, int]:
    """BLOOM's and MPT's width, heads (as many key/value heads, dividing the width) and FFN width (its key too)."""
    hidden = m.positive(_k(_K.EMBEDDING_LENGTH, arch))
    n_heads, n_kv = _heads(m, arch, hidden)
    if n_kv != n_heads:
        raise m.error(_k(_A.HEAD_COUNT_KV, arch), f"({n_kv}) must equal the head count ({n_heads}) for {arch}")
    _even_heads(m, arch, hidden, n_heads)
    fkey = _k(_K.FEED_FORWARD_LENGTH, arch)
    return hidden, n_heads, fkey, m.uniform_positive(fkey, 4 * hidden)


def _config_bloom(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    hidden, n_heads, fkey, ffn = _alibi_shape(m, arch)
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


def _config_mpt(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """llama.cpp's mpt: ALiBi (max_alibi_bias, 8 in every MPT), q/k/v fused, clamp_kqv where set; no biases."""
    hidden, n_heads, fkey, ffn = _alibi_shape(m, arch)
    if ffn % hidden:
        raise m.error(fkey, f"({ffn}) must be a multiple of embedding_length ({hidden}) for mpt")
    akey = _k(_A.MAX_ALIBI_BIAS, arch)
    bias_max = m.get(akey, float, 8.0)
    if bias_max <= 0:  # (llama.cpp writes 0 for an MPT without ALiBi, which transformers does not compute)
        raise m.error(akey, f"({bias_max:g}): an MPT without ALiBi is not supported")
    for t in ("attn_q_norm", "attn_k_norm", "position_embd"):
        if any(n.startswith(t) or f".{t}." in n for n in names):
            raise m.error(t, "tensors (q/k norms or learned positions) are not what transformers' MPT computes")
    n_vocab = _vocab_size(m, arch)
    cfg = {
        "architectures": ["MptForCausalLM"],
        "model_type": "mpt",
        "vocab_size": n_vocab,
        "d_model": hidden,
        "n_layers": m.positive(_k(_K.BLOCK_COUNT, arch)),
        "n_heads": n_heads,
        "expansion_ratio": ffn // hidden,
        "max_seq_len": m.positive(_k(_K.CONTEXT_LENGTH, arch)),
        "layer_norm_epsilon": m.get(_k(_A.LAYERNORM_EPS, arch), float, 1e-5),
        "no_bias": True,
        "attn_config": {"alibi": True, "alibi_bias_max": bias_max,
                        "clip_qkv": m.get(_k(_A.CLAMP_KQV, arch), float, None)},
        "tie_word_embeddings": _OUTPUT not in names,
    }
    _special_ids(m, cfg, n_vocab)
    return cfg


def _config_neox_phi(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """GPT-NeoX (LayerNorms, fused QKV, partial rotary, parallel residual by use_parallel_residual) and Phi-2 (one
    LayerNorm for attention and MLP in parallel, partial rotary, a head with a bias)."""
    hidden = m.positive(_k(_K.EMBEDDING_LENGTH, arch))
    n_heads, n_kv = _heads(m, arch, hidden)
    head_dim = _even_heads(m, arch, hidden, n_heads)
    rkey = _k(_R.DIMENSION_COUNT, arch)
    rotary_dim = m.positive(rkey, head_dim)
    if rotary_dim > head_dim or rotary_dim % 2:
        raise m.error(rkey, f"({rotary_dim}) must be even and at most the head size ({head_dim})")
    n_vocab = _vocab_size(m, arch)
    neox = arch == GPTNEOX
    cfg = {
        "architectures": ["GPTNeoXForCausalLM" if neox else "PhiForCausalLM"],
        "model_type": "gpt_neox" if neox else "phi",
        "vocab_size": n_vocab,
        "hidden_size": hidden,
        "num_hidden_layers": m.positive(_k(_K.BLOCK_COUNT, arch)),
        "intermediate_size": m.uniform_positive(_k(_K.FEED_FORWARD_LENGTH, arch), 4 * hidden),
        "num_attention_heads": n_heads,
        "max_position_embeddings": m.positive(_k(_K.CONTEXT_LENGTH, arch)),
        "layer_norm_eps": m.get(_k(_A.LAYERNORM_EPS, arch), float, 1e-5),
        "partial_rotary_factor": rotary_dim / head_dim,
        "rope_theta": m.get(_k(_R.FREQ_BASE, arch), float, 10000.0),
        "tie_word_embeddings": _OUTPUT not in names,
    }
    if neox:
        if n_kv != n_heads:
            raise m.error(_k(_A.HEAD_COUNT_KV, arch), f"({n_kv}) must equal the head count ({n_heads}) for gptneox")
        cfg.update(hidden_act="gelu", use_parallel_residual=m.get(_k(_K.USE_PARALLEL_RESIDUAL, arch), bool, True),
                   attention_bias=_has(names, MODEL_TENSOR.ATTN_QKV, ".bias"))
    else:
        cfg.update(hidden_act="gelu_new", num_key_value_heads=n_kv)
    _special_ids(m, cfg, n_vocab)
    return cfg


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
