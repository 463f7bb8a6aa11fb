"""Gemma 4 (gemma4_text; gemma4's text_config): Gemma 3's block (GeGLU, sandwich norms, per-head q/k norms, sliding
and full layers with rotary tables of their own) with value norms, an attention scale of 1, heads of their own size
on the full layers (global_head_dim, num_global_key_value_heads), keys as values there (attention_k_eq_v),
proportional rotary on them, the last layers reading earlier layers' keys and values (num_kv_shared_layers, with
double-wide MLPs where use_double_wide_mlp), per-layer inputs (hidden_size_per_layer_input), a scalar per layer,
and in 26B-A4B (enable_moe_block) experts beside every layer's MLP.
See archs.py (the spec's fields: cpp/include/edgeformer/arch.h)."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Tuple

from . import _core
from .archs import _REQUIRED, Config, NameMap, _activation, _layer_types_ok, language_model
from .archs_llama import _experts, _gemma_names, expert_names


def _types(cfg: Config, n: int) -> List[str]:
    """layer_types (default: every 6th layer full), the last layer full, as transformers forces it."""
    types = cfg.data.get("layer_types")
    if types is None:
        types = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n)]
    if not _layer_types_ok(types, n):
        raise cfg.error("layer_types", f"expected {n} of 'sliding_attention' / 'full_attention'")
    return list(types[:-1]) + ["full_attention"]


def _rope_of(cfg: Config, params: Any, kind: str, head_dim: int, theta: float) -> "_core.RopeSpec":
    """One layer type's rotary table: default (every pair of the head), or proportional (the first
    partial_rotary_factor of the pairs at the head's frequencies, the rest unrotated), frequencies / factor."""
    field = f"rope_parameters.{kind}"
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise cfg.error(field, "expected an object")
    rtype = params.get("rope_type", "default")
    if rtype not in ("default", "proportional"):
        raise cfg.error(field + ".rope_type", f"names an unsupported rotary type {rtype!r} for Gemma 4 (supported: "
                                              "default, proportional)")
    r = _core.RopeSpec()
    r.theta = float(params.get("rope_theta", theta))
    if not r.theta > 0:
        raise cfg.error(field + ".rope_theta", f"must be positive, got {r.theta}")
    r.rotary_dim = head_dim
    if rtype == "proportional":
        part = float(params.get("partial_rotary_factor", 1.0))
        factor = float(params.get("factor", 1.0))
        if not (0 <= part <= 1 and factor > 0):
            raise cfg.error(field, "needs a partial_rotary_factor in [0, 1] and a positive factor")
        rotated = int(part * head_dim // 2)
        r.freq_factors = [factor] * rotated + [math.inf] * (head_dim // 2 - rotated)
    return r


def kv_sources(types: List[str], shared: int, cfg: Config, field: str = "num_kv_shared_layers") -> List[int]:
    """Each layer's KV source as transformers' kv_sharing_modes: the last `shared` layers read the keys and values
    of the last earlier layer of their type; the others their own (-1)."""
    n = len(types)
    first = n - shared
    if shared < 0 or first < 1:
        raise cfg.error(field, f"must be in [0, {n - 1}] (some layer must compute keys and values), got {shared}")
    producer: Dict[str, int] = {}
    for i in range(first):
        producer[types[i]] = i
    if shared and set(types[first:]) - set(producer):
        raise cfg.error(field, "leaves a layer type without an earlier layer of its type to share keys and values")
    return [-1 if i < first else producer[types[i]] for i in range(n)]


def _gemma4_text(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    if cfg.data.get("use_bidirectional_attention") == "all":
        raise cfg.error("use_bidirectional_attention", "must not be 'all' for a decoder")
    s = _core.ArchSpec()
    s.model_type = "gemma4_text"
    s.vocab_size = cfg.positive("vocab_size", 262_144)
    s.hidden_size = cfg.positive("hidden_size", 2304)
    s.n_layers = n = cfg.positive("num_hidden_layers", 30)
    s.n_heads = cfg.positive("num_attention_heads", 8)
    s.n_kv_heads = cfg.positive("num_key_value_heads", 4)
    s.head_dim = cfg.positive("head_dim", 256)
    ffn = cfg.positive("intermediate_size", 9216)
    s.ffn_size = ffn
    s.max_position = cfg.positive("max_position_embeddings", 131_072)
    s.norm = _core.NormKind.rms
    s.norm_eps = cfg.get("rms_norm_eps", float, 1e-6)
    s.act = _activation(cfg, "hidden_activation", "gelu_pytorch_tanh")
    s.gated_mlp = True
    s.pos = _core.PosKind.rotary
    s.attn_bias = s.attn_out_bias = cfg.get("attention_bias", bool, False)
    s.tie_embeddings = cfg.get("tie_word_embeddings", bool, True)
    s.qk_norm = True
    s.v_norm = True
    s.post_norms = True
    s.layer_scale = True
    s.emb_scale = math.sqrt(s.hidden_size)
    s.attn_scale = 1.0
    cap = cfg.get("final_logit_softcapping", float, None)
    if cap is not None and cap <= 0:
        raise cfg.error("final_logit_softcapping", f"must be positive, got {cap}")
    s.logit_softcap = cap or 0.0
    types = _types(cfg, n)
    window = cfg.positive("sliding_window", 512)
    s.layer_windows = [window if t == "sliding_attention" else 0 for t in types]

    # the full layers' heads: per_layer_config's overrides, else global_head_dim / num_global_key_value_heads
    k_eq_v = cfg.get("attention_k_eq_v", bool, False)
    per_layer = cfg.data.get("per_layer_config")
    head_dims, kv_heads = [s.head_dim] * n, [s.n_kv_heads] * n
    if per_layer is not None:
        if not isinstance(per_layer, dict):
            raise cfg.error("per_layer_config", "expected an object of layer index -> overrides")
        for key, over in per_layer.items():
            if not (str(key).isdigit() and int(key) < n and isinstance(over, dict)):
                raise cfg.error("per_layer_config", f"has an entry {key!r} that is not a layer index below {n}")
            sub = Config(over, cfg.source)
            i = int(key)
            head_dims[i] = sub.positive("head_dim", head_dims[i])
            kv_heads[i] = sub.positive("num_key_value_heads", kv_heads[i])
    else:
        full_hd = cfg.positive("global_head_dim", 512)
        full_kv = cfg.positive("num_global_key_value_heads", s.n_kv_heads) if k_eq_v else s.n_kv_heads
        for i, t in enumerate(types):
            if t == "full_attention":
                head_dims[i], kv_heads[i] = full_hd, full_kv
    shapes = {t: {(head_dims[i], kv_heads[i]) for i in range(n) if types[i] == t} for t in set(types)}
    if any(len(v) > 1 for v in shapes.values()):
        raise cfg.error("per_layer_config", "gives layers of one type different head sizes (one rotary table each)")
    s.layer_head_dim, s.layer_kv_heads = head_dims, kv_heads

    shared = cfg.get("num_kv_shared_layers", int, 0)
    sources = kv_sources(types, shared, cfg)
    if shared:
        s.layer_kv_source = sources
    if cfg.get("use_double_wide_mlp", bool, False) and shared:
        s.layer_ffn = [ffn * 2 if src >= 0 else ffn for src in sources]

    ple = cfg.get("hidden_size_per_layer_input", int, 256) or 0
    if ple < 0:
        raise cfg.error("hidden_size_per_layer_input", f"must be non-negative, got {ple}")
    s.ple_dim = ple
    if ple:
        s.ple_vocab = cfg.positive("vocab_size_per_layer_input", 262_144)

    moe = cfg.get("enable_moe_block", bool, False)
    if moe:  # (26B-A4B: experts beside every layer's MLP)
        _experts(cfg, s, "num_experts", _REQUIRED, "top_k_experts")
        s.moe_ffn_size = cfg.positive("moe_intermediate_size")
        s.moe_norm_topk = True
        s.moe_beside_mlp = s.moe_router_norm = s.moe_expert_scale = True

    params = cfg.data.get("rope_parameters") or {}
    if not isinstance(params, dict):
        raise cfg.error("rope_parameters", "expected an object keyed by layer type")
    full_hd = next(head_dims[i] for i in range(n) if types[i] == "full_attention")
    s.rope = _rope_of(cfg, params.get("full_attention", {"rope_type": "proportional", "partial_rotary_factor": 0.25}),
                      "full_attention", full_hd, 1_000_000.0)
    s.layer_rope = [1 if t == "sliding_attention" else 0 for t in types]
    s.rope_local = _rope_of(cfg, params.get("sliding_attention"), "sliding_attention", s.head_dim, 10_000.0)

    names = _gemma_names(s, tensor_names, add_one=False)
    pre = names["tok_embeddings.weight"][: -len("embed_tokens.weight")]
    if ple:
        names["ple.embed.weight"] = pre + "embed_tokens_per_layer.weight"
        names["ple.proj.weight"] = pre + "per_layer_model_projection.weight"
        names["ple.norm.weight"] = pre + "per_layer_projection_norm.weight"
    have = set(tensor_names)
    for i in range(n):
        src, dst = f"{pre}layers.{i}.", f"layers.{i}."
        if sources[i] >= 0:  # (its keys and values are another layer's)
            for k in ("attn.k.weight", "attn.v.weight", "attn.k_norm.weight", "attn.k.bias", "attn.v.bias"):
                names.pop(dst + k, None)
        elif k_eq_v and types[i] == "full_attention":  # (the keys' projection serves as the values')
            names[dst + "attn.v.weight"] = names[dst + "attn.k.weight"]
            if s.attn_bias:
                names[dst + "attn.v.bias"] = names[dst + "attn.k.bias"]
        if ple:
            names[dst + "ple.gate.weight"] = src + "per_layer_input_gate.weight"
            names[dst + "ple.proj.weight"] = src + "per_layer_projection.weight"
            names[dst + "ple.norm.weight"] = src + "post_per_layer_input_norm.weight"
        names[dst + "out_scale"] = src + "layer_scalar"
        if moe:
            names[dst + "moe.router.weight"] = src + "router.proj.weight"
            names[dst + "moe.router.in_scale"] = src + "router.scale"
            names[dst + "moe.router.expert_scale"] = src + "router.per_expert_scale"
            for d, h in (("post_mlp_norm_1", "post_feedforward_layernorm_1"), ("moe_norm", "pre_feedforward_layernorm_2"),
                         ("post_moe_norm", "post_feedforward_layernorm_2")):
                names[f"{dst}{d}.weight"] = f"{src}{h}.weight"
            expert_names(s, names, src + "experts.", dst + "moe.experts.", have)
    return s, names


GEMMA = {"gemma4_text": _gemma4_text, "gemma4": language_model(_gemma4_text, "gemma4_text")}


def _gemma3n_text(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Gemma 3n (gemma3n_text; gemma3n's text_config): AltUp streams around Gemma 4's kind of layer (value norms,
    an attention scale of 1, shared keys and values in the last num_kv_shared_layers, per-layer inputs), with a
    LAuReL branch beside each attention, an MLP width per layer (MatFormer) and activation sparsity in the first
    layers' gates (activation_sparsity_pattern)."""
    from statistics import NormalDist

    if cfg.get("altup_active_idx", int, 0) != 0:
        raise cfg.error("altup_active_idx", "must be 0 (the stream the layers compute on)")
    n = cfg.positive("num_hidden_layers", 35)
    sizes = cfg.data.get("intermediate_size", 16_384)
    sizes = [sizes] * n if isinstance(sizes, int) and not isinstance(sizes, bool) else sizes
    if not (isinstance(sizes, list) and len(sizes) == n and all(isinstance(x, int) and x > 0 for x in sizes)):
        raise cfg.error("intermediate_size", f"expected a positive width or {n} of them")
    sparsity = cfg.data.get("activation_sparsity_pattern")
    if sparsity is None:
        sparsity = [0.95] * (10 if n > 10 else 0) + [0.0] * (n - (10 if n > 10 else 0))
    if not (isinstance(sparsity, list) and len(sparsity) == n and
            all(isinstance(x, (int, float)) and 0 <= x < 1 for x in sparsity)):
        raise cfg.error("activation_sparsity_pattern", f"expected {n} target sparsities in [0, 1)")
    types = cfg.data.get("layer_types") or ["full_attention" if (i + 1) % 5 == 0 else "sliding_attention"
                                            for i in range(n)]
    params = cfg.data.get("rope_parameters")
    if not isinstance(params, dict) or "full_attention" not in params:  # (older configs: rope_theta, rope_local_base_freq)
        params = {"full_attention": {"rope_type": "default", "rope_theta": cfg.get("rope_theta", float, 1_000_000.0)},
                  "sliding_attention": {"rope_type": "default",
                                        "rope_theta": cfg.get("rope_local_base_freq", float, 10_000.0)}}
    data = {**cfg.data, "model_type": "gemma4_text", "intermediate_size": sizes[0], "layer_types": types,
            "per_layer_config": {}, "use_double_wide_mlp": False, "attention_k_eq_v": False,
            "enable_moe_block": False, "rope_parameters": params, "num_hidden_layers": n,
            "final_logit_softcapping": cfg.data.get("final_logit_softcapping", 30.0),
            "hidden_size_per_layer_input": cfg.get("hidden_size_per_layer_input", int, 256),
            "num_kv_shared_layers": cfg.get("num_kv_shared_layers", int, 15)}
    s, names = _gemma4_text(Config(data, cfg.source), tensor_names)
    s.model_type = "gemma3n_text"
    s.layer_scale = False
    if len(set(sizes)) > 1:
        s.layer_ffn = sizes
    if any(sparsity):
        s.layer_gate_sigma = [NormalDist().inv_cdf(p) if p > 0 else math.nan for p in sparsity]
    s.altup = cfg.positive("altup_num_inputs", 4)
    s.altup_correct_scale = cfg.get("altup_correct_scale", bool, True)
    s.laurel_rank = cfg.positive("laurel_rank", 64)
    pre = names["tok_embeddings.weight"][: -len("embed_tokens.weight")]
    for i in range(1, s.altup):
        names[f"altup.proj.{i - 1}.weight"] = f"{pre}altup_projections.{i - 1}.weight"
        names[f"altup.unembed.{i - 1}.weight"] = f"{pre}altup_unembed_projections.{i - 1}.weight"
    for i in range(n):
        src, dst = f"{pre}layers.{i}.", f"layers.{i}."
        names.pop(dst + "out_scale")
        for d, h in (("altup.norm.weight", "altup.router_norm.weight"), ("altup.router.weight", "altup.modality_router.weight"),
                     ("altup.pred.weight", "altup.prediction_coefs.weight"),
                     ("altup.corr.weight", "altup.correction_coefs.weight"),
                     ("laurel.l.weight", "laurel.linear_left.weight"), ("laurel.r.weight", "laurel.linear_right.weight"),
                     ("laurel.norm.weight", "laurel.post_laurel_norm.weight")):
            names[dst + d] = src + h
        if s.altup_correct_scale:
            names[dst + "altup.out_scale"] = src + "altup.correct_output_scale"
    return s, names


GEMMA.update({"gemma3n_text": _gemma3n_text, "gemma3n": language_model(_gemma3n_text, "gemma3n_text")})
