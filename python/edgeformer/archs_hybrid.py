"""Hybrid decoders whose layers mix tokens either by attention or through a recurrent state, as data: Qwen3.5,
dense and mixture-of-experts, and Qwen3-Next (Gated DeltaNet layers, three to each attention layer, whose output
is gated), and LFM2, dense and mixture-of-experts (gated short convolutions beside attention layers). The Mamba
family (Granite 4.0-H, Nemotron-H, Mamba, Mamba2, Falcon-H1, Jamba): archs_ssm.py.
See archs.py."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from . import _core
from .archs import _REQUIRED, Config, Derived, NameMap, _per_head_rows, text_config_of
from .archs_llama import _experts as _expert_counts, expert_names, qwen_moe_names, sparse_layers
from .archs_recent import _as_llama

_ROWS = 1 << 22  # the most rows of a fused projection gathered by index at load

# Qwen3_5TextConfig's defaults where they differ from Llama's
QWEN3_5_DEFAULTS: Dict[str, Any] = {
    "rms_norm_eps": 1e-6, "head_dim": 256, "num_key_value_heads": 4, "max_position_embeddings": 32768,
    "partial_rotary_factor": 0.25, "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128,
    "linear_value_head_dim": 128, "linear_num_key_heads": 16, "linear_num_value_heads": 32,
}


def _layer_kinds(cfg: Config, n_layers: int):
    """layer_types ("linear_attention" / "full_attention"), or every full_attention_interval-th layer full."""
    types = cfg.data.get("layer_types")
    if types is None:
        every = cfg.positive("full_attention_interval", 4)
        types = ["linear_attention" if (i + 1) % every else "full_attention" for i in range(n_layers)]
    if not (isinstance(types, list) and len(types) == n_layers and
            all(t in ("linear_attention", "full_attention") for t in types)):
        raise cfg.error("layer_types", f"expected {n_layers} of 'linear_attention' / 'full_attention'")
    return types


def _qwen3_5_text(cfg: Config, tensor_names, prefix: str = "model.", head: str = "lm_head.weight",
                  defaults: Optional[Dict[str, Any]] = None) -> Tuple["_core.ArchSpec", NameMap]:
    """Qwen3.5's language model (qwen3_5_text): a Qwen3 whose RMSNorms scale by 1 + weight, whose attention
    output is gated (q_proj holds each head's query and gate) and rotates a quarter of each head, and whose
    other layers (three to each attention layer) are Gated DeltaNet (archs ArchSpec.layer_linear)."""
    data = dict(cfg.data)
    params = data.get("rope_parameters")
    if isinstance(params, dict) and "partial_rotary_factor" not in params and "partial_rotary_factor" not in data:
        data["partial_rotary_factor"] = QWEN3_5_DEFAULTS["partial_rotary_factor"]
    cfg = Config(data, cfg.source)
    defaults = QWEN3_5_DEFAULTS if defaults is None else defaults
    s, names = _as_llama(cfg, tensor_names, "qwen3_5_text", defaults)
    types = _layer_kinds(cfg, s.n_layers)
    s.layer_linear = [int(t == "linear_attention") for t in types]
    s.qk_norm = True
    s.attn_out_gate = True
    d = {**defaults, **cfg.data}
    c = Config(d, cfg.source)
    s.lin_k_heads = c.positive("linear_num_key_heads")
    s.lin_v_heads = c.positive("linear_num_value_heads")
    s.lin_k_dim = c.positive("linear_key_head_dim")
    s.lin_v_dim = c.positive("linear_value_head_dim")
    s.lin_conv = c.positive("linear_conv_kernel_dim")
    act = c.get("hidden_act", str, "silu")
    if act not in ("silu", "swish"):
        raise c.error("hidden_act", f"names {act!r}: Qwen3.5's convolution and MLP are SiLU's")
    if s.attn_bias:
        raise c.error("attention_bias", "is true: not supported for Qwen3.5")

    def one_plus(src: str) -> Derived:  # (Qwen3_5RMSNorm scales by 1 + weight)
        return Derived(src, add=1.0)

    hd, nh = s.head_dim, s.n_heads
    if 2 * nh * hd > _ROWS:  # (q_proj's rows are gathered by index: a bound before the index lists)
        raise c.error("num_attention_heads", f"({nh}) times head_dim ({hd}) exceeds {_ROWS // 2} query rows")
    out: NameMap = {"tok_embeddings.weight": prefix + "embed_tokens.weight",
                    "norm.weight": one_plus(prefix + "norm.weight")}
    if not s.tie_embeddings:
        out["lm_head.weight"] = head
    for i in range(s.n_layers):
        src, dst = f"{prefix}layers.{i}.", f"layers.{i}."
        out[dst + "attn_norm.weight"] = one_plus(src + "input_layernorm.weight")
        out[dst + "mlp_norm.weight"] = one_plus(src + "post_attention_layernorm.weight")
        for p in ("gate", "up", "down"):
            out[dst + f"mlp.{p}.weight"] = src + f"mlp.{p}_proj.weight"
        if s.layer_linear[i]:
            la = src + "linear_attn."
            for part, name in (("qkv", "in_proj_qkv"), ("z", "in_proj_z"), ("b", "in_proj_b"), ("a", "in_proj_a"),
                               ("out", "out_proj"), ("conv", "conv1d"), ("norm", "norm")):
                out[dst + f"lin.{part}.weight"] = la + f"{name}.weight"
            out[dst + "lin.dt_bias"] = la + "dt_bias"
            out[dst + "lin.A_log"] = la + "A_log"
            continue
        q = src + "self_attn.q_proj.weight"  # per head: [query | gate]
        out[dst + "attn.q.weight"] = Derived(q, _per_head_rows(nh, 2, hd, [0]))
        out[dst + "attn.gate.weight"] = Derived(q, _per_head_rows(nh, 2, hd, [1]))
        for p in "kvo":
            out[dst + f"attn.{p}.weight"] = src + f"self_attn.{p}_proj.weight"
        out[dst + "attn.q_norm.weight"] = one_plus(src + "self_attn.q_norm.weight")
        out[dst + "attn.k_norm.weight"] = one_plus(src + "self_attn.k_norm.weight")
    return s, out


QWEN3_5_MOE_DEFAULTS: Dict[str, Any] = {**QWEN3_5_DEFAULTS, "num_key_value_heads": 2, "moe_intermediate_size": 512,
                                        "shared_expert_intermediate_size": 512, "num_experts_per_tok": 8,
                                        "num_experts": 256}


def _qwen3_5_moe_text(cfg: Config, tensor_names, prefix: str = "model.", head: str = "lm_head.weight"
                      ) -> Tuple["_core.ArchSpec", NameMap]:
    """Qwen3.5's mixture-of-experts language model (qwen3_5_moe_text): Qwen3.5's layers with experts in every
    MLP (softmax router, the chosen renormalized) and a shared expert behind a sigmoid gate. Experts one tensor
    each, or stacked (gate_up_proj [experts, 2 x width, hidden], down_proj) as transformers 5 holds them."""
    c = Config({**QWEN3_5_MOE_DEFAULTS, **cfg.data}, cfg.source)
    s, names = _qwen3_5_text(Config({**cfg.data, "intermediate_size": c.positive("moe_intermediate_size")},
                                    cfg.source), tensor_names, prefix, head, QWEN3_5_MOE_DEFAULTS)
    s.model_type = "qwen3_5_moe_text"
    _experts(c, s, names, tensor_names, prefix, [True] * s.n_layers)
    s.moe_norm_topk = True
    return s, names


def _experts(c: Config, s: "_core.ArchSpec", names: NameMap, tensor_names, prefix: str, sparse) -> None:
    """Experts (softmax router) and a shared expert behind a sigmoid gate in the layers `sparse` marks."""
    _expert_counts(c, s, "num_experts", _REQUIRED)
    s.moe_ffn_size = c.positive("moe_intermediate_size")
    s.shared_ffn_size = c.get("shared_expert_intermediate_size", int)
    if s.shared_ffn_size < 0:
        raise c.error("shared_expert_intermediate_size", f"must be non-negative, got {s.shared_ffn_size}")
    s.shared_expert_gate = s.shared_ffn_size > 0
    have = set(tensor_names)
    for i in sparse_layers(s, names, sparse):
        qwen_moe_names(s, names, f"{prefix}layers.{i}.mlp.", f"layers.{i}.", have)


# Qwen3NextConfig's defaults (Qwen3-Next-80B-A3B's) where they differ from Llama's
QWEN3_NEXT_DEFAULTS: Dict[str, Any] = {**QWEN3_5_DEFAULTS, "num_key_value_heads": 2, "intermediate_size": 5632,
                                       "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512,
                                       "num_experts_per_tok": 10, "num_experts": 512, "norm_topk_prob": True}


def _qwen3_next(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Qwen3-Next (qwen3_next): Qwen3.5-MoE's layers (which descend from it) with the Gated DeltaNet inputs fused
    per key head, in_proj_qkvz ([q, k, v, z] of each key head's group) and in_proj_ba ([b, a]), regathered at load
    as whole rows; mlp_only_layers / decoder_sparse_step keep some MLPs dense; norm_topk_prob as configured."""
    c = Config({**QWEN3_NEXT_DEFAULTS, **cfg.data}, cfg.source)
    s, names = _qwen3_5_text(c, tensor_names, defaults=QWEN3_NEXT_DEFAULTS)
    s.model_type = "qwen3_next"
    step = c.positive("decoder_sparse_step", 1)
    dense = c.data.get("mlp_only_layers") or []
    if not isinstance(dense, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in dense):
        raise c.error("mlp_only_layers", f"must be a list of layer indices, got {dense!r}")
    _experts(c, s, names, tensor_names, "model.", [i not in dense and (i + 1) % step == 0 for i in range(s.n_layers)])
    s.moe_norm_topk = c.get("norm_topk_prob", bool, True)
    hk, dk, dv, per = s.lin_k_heads, s.lin_k_dim, s.lin_v_dim, s.lin_v_heads // s.lin_k_heads
    width = 2 * dk + 2 * per * dv  # one key head's rows of in_proj_qkvz
    if hk * width > _ROWS:
        raise c.error("linear_num_key_heads", f"({hk}) times its rows of in_proj_qkvz ({width}) exceeds {_ROWS}")

    def rows(start: int, n: int, stride: int = width):  # each key head's rows [start, start + n)
        return [g * stride + start + j for g in range(hk) for j in range(n)]

    qkv = rows(0, dk) + rows(dk, dk) + rows(2 * dk, per * dv)
    for i in (i for i in range(s.n_layers) if s.layer_linear[i]):
        la, dst = f"model.layers.{i}.linear_attn.", f"layers.{i}.lin."
        for part in ("qkv", "z", "b", "a"):
            del names[dst + part + ".weight"]
        names[dst + "qkv.weight"] = Derived(la + "in_proj_qkvz.weight", qkv)
        names[dst + "z.weight"] = Derived(la + "in_proj_qkvz.weight", rows(2 * dk + per * dv, per * dv))
        names[dst + "b.weight"] = Derived(la + "in_proj_ba.weight", rows(0, per, 2 * per))
        names[dst + "a.weight"] = Derived(la + "in_proj_ba.weight", rows(per, per, 2 * per))
    return s, names


# Lfm2Config's defaults (LFM2-2.6B's) where they differ from Llama's
LFM2_DEFAULTS: Dict[str, Any] = {"vocab_size": 65536, "norm_eps": 1e-5, "max_position_embeddings": 128000,
                                 "tie_word_embeddings": True, "rope_theta": 1000000.0, "conv_L_cache": 3,
                                 "block_auto_adjust_ff_dim": True, "block_ffn_dim_multiplier": 1.0,
                                 "block_multiple_of": 256}


def _lfm2(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Liquid AI's LFM2 (lfm2): gated short-convolution layers (in_proj to B, C, x; C * conv(B * x) over
    conv_L_cache taps; out_proj) beside GQA attention layers with per-head q/k RMSNorms; SwiGLU MLPs whose width
    block_auto_adjust_ff_dim derives from intermediate_size; the final norm is named embedding_norm."""
    c = Config({**LFM2_DEFAULTS, **cfg.data}, cfg.source)
    n = c.positive("num_hidden_layers")
    types = c.data.get("layer_types")
    if types is None:  # (older configs: the attention layers' indices)
        full = c.data.get("full_attn_idxs")
        if not isinstance(full, list):
            raise c.error("layer_types", "is missing (and full_attn_idxs too)")
        types = ["full_attention" if i in full else "conv" for i in range(n)]
    if not (isinstance(types, list) and len(types) == n and all(t in ("conv", "full_attention") for t in types)):
        raise c.error("layer_types", f"expected {n} of 'conv' / 'full_attention'")
    if c.get("conv_bias", bool, False):
        raise c.error("conv_bias", "is true: not supported for LFM2")
    ffn = c.positive("intermediate_size")
    if c.get("block_auto_adjust_ff_dim", bool, False):
        ffn = int(2 * ffn / 3)
        mult = c.get("block_ffn_dim_multiplier", float, None)
        if mult is not None:
            if not 0 < mult < float("inf"):
                raise c.error("block_ffn_dim_multiplier", f"must be a positive number, got {mult}")
            of = c.positive("block_multiple_of", 256)
            ffn = of * ((int(mult * ffn) + of - 1) // of)
    s, names = _as_llama(c, tensor_names, "lfm2", LFM2_DEFAULTS, rms_norm_eps=c.get("norm_eps", float),
                         intermediate_size=ffn, attention_bias=False, mlp_bias=False)
    s.layer_linear = [int(t == "conv") * 2 for t in types]
    s.lin_conv = c.positive("conv_L_cache")
    s.qk_norm = True
    out: NameMap = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.embedding_norm.weight"}
    if not s.tie_embeddings:
        out["lm_head.weight"] = names["lm_head.weight"]
    for i in range(n):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        out[dst + "attn_norm.weight"] = src + "operator_norm.weight"
        out[dst + "mlp_norm.weight"] = src + "ffn_norm.weight"
        for p, w in (("gate", "w1"), ("up", "w3"), ("down", "w2")):
            out[dst + f"mlp.{p}.weight"] = src + f"feed_forward.{w}.weight"
        if s.layer_linear[i]:
            for p, w in (("in", "in_proj"), ("conv", "conv"), ("out", "out_proj")):
                out[dst + f"lin.{p}.weight"] = src + f"conv.{w}.weight"
            continue
        for p, w in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "out_proj")):
            out[dst + f"attn.{p}.weight"] = src + f"self_attn.{w}.weight"
        out[dst + "attn.q_norm.weight"] = src + "self_attn.q_layernorm.weight"
        out[dst + "attn.k_norm.weight"] = src + "self_attn.k_layernorm.weight"
    return s, out


# Lfm2MoeConfig's defaults (LFM2-8B-A1B's)
LFM2_MOE_DEFAULTS: Dict[str, Any] = {**LFM2_DEFAULTS, "block_auto_adjust_ff_dim": False, "num_dense_layers": 2,
                                     "num_experts": 32, "num_experts_per_tok": 4, "use_expert_bias": True,
                                     "routed_scaling_factor": 1.0, "norm_topk_prob": True}


def _lfm2_moe(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """LFM2-MoE (lfm2_moe, LFM2-8B-A1B): LFM2's layers with experts in the MLPs after the first num_dense_layers:
    a sigmoid router whose expert_bias only chooses, the chosen weights renormalized (norm_topk_prob) and scaled
    (routed_scaling_factor). Experts stacked (gate_up_proj, down_proj) as transformers 5 holds them, or one
    tensor each (w1, w3, w2)."""
    c = Config({**LFM2_MOE_DEFAULTS, **cfg.data}, cfg.source)
    s, names = _lfm2(c, tensor_names)
    s.model_type = "lfm2_moe"
    _expert_counts(c, s, "num_experts", _REQUIRED)
    s.moe_ffn_size = c.positive("moe_intermediate_size")
    s.moe_sigmoid = True
    s.moe_select_bias = c.get("use_expert_bias", bool)
    s.moe_norm_topk = c.get("norm_topk_prob", bool)
    s.moe_routed_scale = c.get("routed_scaling_factor", float)
    dense = c.get("num_dense_layers", int)
    have = set(tensor_names)
    for i in sparse_layers(s, names, [i >= dense for i in range(s.n_layers)]):
        src, dst = f"model.layers.{i}.feed_forward.", f"layers.{i}.moe."
        names[dst + "router.weight"] = src + "gate.weight"
        if s.moe_select_bias:
            names[dst + "router.select_bias"] = src + "expert_bias"
        expert_names(s, names, src + "experts.", dst + "experts.", have, ("w1", "w3", "w2"))
    return s, names


def _wrapped(text_builder, text_type: str):
    """The image-and-text checkpoint of a Qwen3.5 language model: text_config's, weights under
    model.language_model.; the vision tower (and the multi-token-prediction head) not run."""

    def build(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
        text = text_config_of(cfg)
        have = set(tensor_names)
        tied = text.get("tie_word_embeddings", cfg.data.get("tie_word_embeddings", False)) if not have else \
            "lm_head.weight" not in have
        return text_builder(Config({**text, "model_type": text_type, "tie_word_embeddings": bool(tied)},
                                   cfg.source), tensor_names, "model.language_model.")

    return build


HYBRID = {"qwen3_5_text": _qwen3_5_text, "qwen3_5": _wrapped(_qwen3_5_text, "qwen3_5_text"),
          "qwen3_5_moe_text": _qwen3_5_moe_text, "qwen3_5_moe": _wrapped(_qwen3_5_moe_text, "qwen3_5_moe_text"),
          "qwen3_next": _qwen3_next, "lfm2": _lfm2, "lfm2_moe": _lfm2_moe}
