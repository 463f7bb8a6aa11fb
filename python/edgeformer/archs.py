"""Architectures as data: a checkpoint's config.json becomes an ArchSpec plus a map from the engine's
canonical weight names to the checkpoint's tensor names.

Canonical names (what the C++ model asks for)::

    tok_embeddings.weight  norm.weight  norm.bias  lm_head.weight
    layers.{i}.attn_norm.{weight,bias}   layers.{i}.mlp_norm.{weight,bias}
    layers.{i}.attn.{q,k,v,o}.{weight,bias}
    layers.{i}.mlp.{gate,up,down}.{weight,bias}
    layers.{i}.moe.router.weight  layers.{i}.moe.experts.{e}.{gate,up,down}.weight   (mixture of experts)
    layers.{i}.moe.shared.{gate,up,down}.weight  layers.{i}.moe.shared_scale.weight

Adding an architecture is adding a builder to ``ARCHS``: read the config, fill the spec, name the tensors.
A name map value is a checkpoint tensor name, or a ``Derived`` recipe for weights stored in another layout
(transposed Conv1D weights, fused QKV matrices): those few are rebuilt once at load with NumPy.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core

_REQUIRED = object()

ACTIVATIONS = {
    "silu": _core.Act.silu,
    "swish": _core.Act.silu,
    "gelu": _core.Act.gelu,
    "gelu_new": _core.Act.gelu_tanh,
    "gelu_pytorch_tanh": _core.Act.gelu_tanh,
    "gelu_fast": _core.Act.gelu_tanh,
    "relu": _core.Act.relu,
}


# Upper bounds on sizes, far above any real model, so that a hostile config cannot make the loader loop or
# allocate for minutes before a single tensor is checked.
_LAYERS, _WIDTH, _HEADS, _FFN = 4096, 1 << 18, 1 << 14, 1 << 20
LIMITS = {
    **dict.fromkeys(("num_hidden_layers", "n_layer", "num_layers", "num_decoder_layers", "block_count"), _LAYERS),
    **dict.fromkeys(("hidden_size", "n_embd", "n_embed", "d_model", "word_embed_proj_dim"), _WIDTH),
    **dict.fromkeys(("num_attention_heads", "n_head", "num_heads", "num_key_value_heads", "num_kv_heads",
                     "head_dim", "d_kv", "rotary_dim"), _HEADS),
    **dict.fromkeys(("intermediate_size", "ffn_dim", "n_inner", "d_ff", "ffn_hidden_size", "moe_intermediate_size",
                     "shared_expert_intermediate_size"), _FFN),
    **dict.fromkeys(("num_experts", "num_local_experts", "num_experts_per_tok"), 1 << 12),
    **dict.fromkeys(("vocab_size", "max_position_embeddings", "n_positions", "seq_length", "type_vocab_size",
                     "relative_attention_num_buckets", "relative_attention_max_distance"), 1 << 24),
}


class Config:
    """Typed access to config.json fields; every error names the file and the field."""

    def __init__(self, data: Dict[str, Any], source: str):
        self.data = data
        self.source = source

    def error(self, field: str, msg: str) -> ValueError:
        return ValueError(f"{self.source}: field '{field}' {msg}")

    def get(self, field: str, kind: type, default: Any = _REQUIRED, data: Optional[dict] = None, prefix: str = ""):
        d = self.data if data is None else data
        name = prefix + field
        if field not in d or d[field] is None:
            if default is _REQUIRED:
                raise self.error(name, "is missing")
            return default
        v = d[field]
        if kind is int:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
                raise self.error(name, f"must be an integer, got {v!r}")
            if not -(2**31) < v < 2**31:
                raise self.error(name, f"is out of range, got {v!r}")
            return int(v)
        if kind is float:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise self.error(name, f"must be a number, got {v!r}")
            return float(v)
        if kind is bool:
            if not isinstance(v, bool):
                raise self.error(name, f"must be true or false, got {v!r}")
            return v
        if kind is str:
            if not isinstance(v, str):
                raise self.error(name, f"must be a string, got {v!r}")
            return v
        if kind is dict:
            if not isinstance(v, dict):
                raise self.error(name, f"must be an object, got {v!r}")
            return v
        raise TypeError(kind)

    def positive(self, field: str, default: Any = _REQUIRED) -> int:
        v = self.get(field, int, default)
        if v is not None and v <= 0:
            raise self.error(field, f"must be positive, got {v}")
        limit = LIMITS.get(field)
        if v is not None and limit is not None and v > limit:
            raise self.error(field, f"is implausibly large ({v} > {limit})")
        return v


def _activation(cfg: Config, field: str, default: str) -> "_core.Act":
    name = cfg.get(field, str, default)
    if name not in ACTIVATIONS:
        raise cfg.error(field, f"names an unsupported activation {name!r} (supported: {', '.join(sorted(ACTIVATIONS))})")
    return ACTIVATIONS[name]


def _rope(cfg: Config, spec: "_core.ArchSpec") -> None:
    """rope_theta and rope_scaling (transformers 4.x) or rope_parameters (transformers 5)."""
    field = "rope_parameters" if cfg.data.get("rope_parameters") is not None else "rope_scaling"
    params = cfg.get(field, dict, {}) or {}
    r = _core.RopeSpec()
    theta = cfg.get("rope_theta", float, None, data=params, prefix=field + ".")
    r.theta = theta if theta is not None else cfg.get("rope_theta", float, 10000.0)
    partial = cfg.get("partial_rotary_factor", float, None, data=params, prefix=field + ".")
    if partial is None:
        partial = cfg.get("partial_rotary_factor", float, 1.0)
    if not 0 < partial <= 1:
        raise cfg.error("partial_rotary_factor", f"must be in (0, 1], got {partial}")
    r.rotary_dim = int(spec.head_dim * partial)
    rtype = params.get("rope_type", params.get("type", "default"))
    kinds = {
        "default": _core.RopeScaling.none,
        "linear": _core.RopeScaling.linear,
        "dynamic": _core.RopeScaling.dynamic,
        "llama3": _core.RopeScaling.llama3,
        "yarn": _core.RopeScaling.yarn,
        "longrope": _core.RopeScaling.longrope,
    }
    if rtype not in kinds:
        raise cfg.error(field + ".rope_type", f"names an unsupported rope scaling {rtype!r} (supported: {', '.join(kinds)})")
    r.scaling = kinds[rtype]

    def p(name, kind, default=_REQUIRED):
        return cfg.get(name, kind, default, data=params, prefix=field + ".")

    if rtype in ("linear", "dynamic", "llama3"):
        r.factor = p("factor", float)
    if rtype == "llama3":
        r.low_freq_factor = p("low_freq_factor", float)
        r.high_freq_factor = p("high_freq_factor", float)
        r.original_max_position = p("original_max_position_embeddings", int)
    def original(fallback: str) -> Tuple[int, float]:
        """(original_max_position_embeddings, or the config's fallback field; factor, by default the
        context's growth over it), as yarn and longrope read them."""
        orig = p("original_max_position_embeddings", int, None)
        if orig is None:
            orig = cfg.get(fallback, int)
        if orig <= 0:
            raise cfg.error(field + ".original_max_position_embeddings", f"must be positive, got {orig}")
        factor = p("factor", float, None)
        return orig, factor if factor is not None else cfg.get("max_position_embeddings", int) / orig

    if rtype == "yarn":
        r.original_max_position, r.factor = original("max_position_embeddings")
        r.attention_factor = p("attention_factor", float, 0.0)
        r.mscale = p("mscale", float, 0.0)
        r.mscale_all_dim = p("mscale_all_dim", float, 0.0)
        r.beta_fast = p("beta_fast", float, 32.0)
        r.beta_slow = p("beta_slow", float, 1.0)
        r.truncate = p("truncate", bool, True)
    if rtype == "longrope":
        orig, factor = original("original_max_position_embeddings")
        r.original_max_position = orig
        half = r.rotary_dim // 2
        for name in ("short_factor", "long_factor"):
            v = params.get(name)
            if not isinstance(v, list) or len(v) != half or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in v):
                raise cfg.error(f"{field}.{name}", f"expected {half} positive numbers (rotary_dim / 2)")
            setattr(r, name, [float(x) for x in v])
        att = p("attention_factor", float, None)
        if att is None:  # as transformers: the attention scaling LongRoPE's paper suggests
            att = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
        r.attention_factor = att
    spec.rope = r


def _window(cfg: Config, s: "_core.ArchSpec") -> None:
    """Qwen2's sliding window: off unless use_sliding_window, then on the layers layer_types names (by default
    those from max_window_layers on)."""
    if not cfg.get("use_sliding_window", bool, False):
        return
    w = cfg.get("sliding_window", int, 0) or 0
    if w < 0:
        raise cfg.error("sliding_window", f"must be positive, got {w}")
    types = cfg.data.get("layer_types")
    if types is None:
        first = cfg.get("max_window_layers", int, s.n_layers)
        types = ["sliding_attention" if i >= first else "full_attention" for i in range(s.n_layers)]
    if not isinstance(types, list) or len(types) != s.n_layers or not set(types) <= {"sliding_attention",
                                                                                       "full_attention"}:
        raise cfg.error("layer_types", f"expected {s.n_layers} of 'sliding_attention' / 'full_attention'")
    if len(set(types)) > 1:  # some layers only (layer_types, or from max_window_layers on)
        s.layer_windows = [w if t == "sliding_attention" else 0 for t in types]
    elif types[0] == "sliding_attention":
        s.sliding_window = w


def _llama(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", Dict[str, str]]:
    """LLaMA 1/2/3, Vicuna, XGen (model_type llama), Mistral (llama + sliding window), Qwen2 (llama + q/k/v
    biases) and Qwen3 (llama + per-head query / key norms)."""
    s = _core.ArchSpec()
    s.model_type = cfg.get("model_type", str)
    s.vocab_size = cfg.positive("vocab_size")
    s.hidden_size = cfg.positive("hidden_size")
    s.n_layers = cfg.positive("num_hidden_layers")
    s.n_heads = cfg.positive("num_attention_heads")
    s.n_kv_heads = cfg.positive("num_key_value_heads", s.n_heads)
    if s.hidden_size % s.n_heads and cfg.data.get("head_dim") is None:
        raise cfg.error("num_attention_heads", f"({s.n_heads}) does not divide hidden_size ({s.hidden_size})")
    s.head_dim = cfg.positive("head_dim", s.hidden_size // s.n_heads)
    s.ffn_size = cfg.positive("intermediate_size")
    s.max_position = cfg.positive("max_position_embeddings", 2048)
    s.norm = _core.NormKind.rms
    s.norm_eps = cfg.get("rms_norm_eps", float, 1e-6)
    s.act = _activation(cfg, "hidden_act", "silu")
    s.gated_mlp = True
    s.pos = _core.PosKind.rotary
    _rope(cfg, s)
    s.attn_bias = cfg.get("attention_bias", bool, False)
    s.attn_out_bias = s.attn_bias
    if s.model_type == "qwen2":  # biases on the q, k and v projections, none on o
        s.attn_bias, s.attn_out_bias = True, False
        _window(cfg, s)
    if s.model_type == "qwen3":  # an RMSNorm over each head's query and key
        s.qk_norm = True
        _window(cfg, s)
    s.mlp_bias = cfg.get("mlp_bias", bool, False)
    s.tie_embeddings = cfg.get("tie_word_embeddings", bool, False)
    if s.model_type == "mistral":
        s.sliding_window = cfg.get("sliding_window", int, 0) or 0
        if s.sliding_window < 0:
            raise cfg.error("sliding_window", f"must be positive, got {s.sliding_window}")

    names = {
        "tok_embeddings.weight": "model.embed_tokens.weight",
        "norm.weight": "model.norm.weight",
    }
    if not s.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    for i in range(s.n_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        names[dst + "attn_norm.weight"] = src + "input_layernorm.weight"
        names[dst + "mlp_norm.weight"] = src + "post_attention_layernorm.weight"
        for p in "qkvo":
            names[dst + f"attn.{p}.weight"] = src + f"self_attn.{p}_proj.weight"
            if s.attn_out_bias if p == "o" else s.attn_bias:
                names[dst + f"attn.{p}.bias"] = src + f"self_attn.{p}_proj.bias"
        if s.qk_norm:
            names[dst + "attn.q_norm.weight"] = src + "self_attn.q_norm.weight"
            names[dst + "attn.k_norm.weight"] = src + "self_attn.k_norm.weight"
        for p in ("gate", "up", "down"):
            names[dst + f"mlp.{p}.weight"] = src + f"mlp.{p}_proj.weight"
            if s.mlp_bias:
                names[dst + f"mlp.{p}.bias"] = src + f"mlp.{p}_proj.bias"
    return s, names


_MOE_BASE = {"mixtral": "mistral", "qwen2_moe": "qwen2", "qwen3_moe": "qwen3", "olmoe": "llama"}


def _full_qk_norms(cfg: Config, s: "_core.ArchSpec", names: NameMap) -> None:
    """OLMo 2 / OLMoE: an RMSNorm over all the heads' queries and one over the keys (q_norm, k_norm); clip_qkv
    (clamped projections) is refused by name."""
    if cfg.data.get("clip_qkv") is not None:
        raise cfg.error("clip_qkv", "is set: clamped q/k/v projections are not supported")
    s.qk_norm = s.qk_norm_full = True
    for i in range(s.n_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        names[dst + "attn.q_norm.weight"] = src + "self_attn.q_norm.weight"
        names[dst + "attn.k_norm.weight"] = src + "self_attn.k_norm.weight"


def _smollm3(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """SmolLM3: a Llama whose every no_rope_layer_interval-th layer (4th) has no rotary positions (NoPE). Its
    no_rope_layers marks with 1 the layers that do rotate."""
    s, names = _llama(Config({**cfg.data, "model_type": "llama"}, cfg.source), tensor_names)
    s.model_type = "smollm3"
    rope = cfg.data.get("no_rope_layers")
    if rope is None:
        every = cfg.positive("no_rope_layer_interval", 4)
        rope = [int((i + 1) % every != 0) for i in range(s.n_layers)]
    if not isinstance(rope, list) or len(rope) != s.n_layers or any(v not in (0, 1) for v in rope):
        raise cfg.error("no_rope_layers", f"expected {s.n_layers} flags (1: the layer rotates), got {rope!r}")
    if not all(rope):
        s.layer_nope = [0 if v else 1 for v in rope]
    _window(cfg, s)
    return s, names


def _cohere(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Cohere Command-R (model_type cohere): LayerNorms without bias, attention and MLP in parallel through one
    norm, rotary on interleaved pairs (GPT-J's), a tied head and logits scaled by logit_scale. Per-head q/k
    LayerNorms (use_qk_norm, Command R+) are refused by name."""
    if cfg.get("use_qk_norm", bool, False):
        raise cfg.error("use_qk_norm", "is true: per-head LayerNorms of the queries and keys are not supported")
    s, names = _llama(Config({"tie_word_embeddings": True, **cfg.data, "model_type": "llama"}, cfg.source),
                      tensor_names)
    s.model_type = "cohere"
    s.norm = _core.NormKind.layer
    s.norm_eps = cfg.get("layer_norm_eps", float, 1e-5)
    s.parallel_residual = True
    r = s.rope
    r.style = _core.RopeStyle.interleaved
    s.rope = r
    s.logits_scale = cfg.get("logit_scale", float, 0.0625)
    for i in range(s.n_layers):
        names.pop(f"layers.{i}.mlp_norm.weight")
    return s, names


def _olmo2(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """OLMo 2 (AI2): a Llama whose norms follow attention and MLP (their outputs, before the residual adds) instead
    of preceding them, with one RMSNorm over all the heads' queries and one over the keys."""
    s, names = _llama(Config({**cfg.data, "model_type": "llama"}, cfg.source), tensor_names)
    s.model_type = "olmo2"
    s.pre_norms, s.post_norms = False, True
    _full_qk_norms(cfg, s, names)
    for i in range(s.n_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        del names[dst + "attn_norm.weight"], names[dst + "mlp_norm.weight"]
        names[dst + "post_attn_norm.weight"] = src + "post_attention_layernorm.weight"
        names[dst + "post_mlp_norm.weight"] = src + "post_feedforward_layernorm.weight"
    return s, names


def _moe(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Mixture-of-experts Llamas: Mixtral (a Mistral whose MLPs are 8 experts, 2 per token), Qwen2-MoE / Qwen1.5-MoE
    (Qwen2 with 60-64 experts and a shared expert behind a sigmoid gate), Qwen3-MoE (Qwen3 with 128 experts) and
    OLMoE (a Llama with whole-width q/k norms and 64 experts, Qwen's tensor names).
    Qwen's mlp_only_layers and decoder_sparse_step keep some layers dense."""
    model_type = cfg.get("model_type", str)
    data = {**cfg.data, "model_type": _MOE_BASE[model_type]}
    if cfg.get("use_sliding_window", bool, False) and cfg.data.get("layer_types") is None:
        n = cfg.positive("num_hidden_layers")  # transformers' default layer types differ from Qwen2's
        last = cfg.get("max_window_layers", int, 28)
        data["layer_types"] = ["sliding_attention" if model_type == "qwen3_moe" or (i % 2 == 0 and i < last)
                               else "full_attention" for i in range(n)]
    s, names = _llama(Config(data, cfg.source), tensor_names)
    s.model_type = model_type
    if model_type == "olmoe":
        _full_qk_norms(cfg, s, names)
    mixtral = model_type == "mixtral"
    if model_type == "qwen2_moe" and not cfg.get("qkv_bias", bool, True):
        s.attn_bias = False
        names = {k: v for k, v in names.items() if not k.endswith(("attn.q.bias", "attn.k.bias", "attn.v.bias"))}
    field = "num_local_experts" if mixtral or "num_experts" not in cfg.data else "num_experts"
    s.n_experts = cfg.positive(field)
    s.n_experts_used = cfg.positive("num_experts_per_tok", 2)
    if s.n_experts_used > s.n_experts:
        raise cfg.error("num_experts_per_tok", f"({s.n_experts_used}) exceeds {field} ({s.n_experts})")
    s.moe_ffn_size = s.ffn_size if mixtral or model_type == "olmoe" else cfg.positive("moe_intermediate_size")
    s.moe_norm_topk = True if mixtral else cfg.get("norm_topk_prob", bool, False)
    if model_type == "qwen2_moe":  # (transformers' default width when the config has none)
        s.shared_ffn_size = cfg.get("shared_expert_intermediate_size", int, 5632)
        if s.shared_ffn_size < 0 or s.shared_ffn_size > _FFN:
            raise cfg.error("shared_expert_intermediate_size", f"must be in [0, {_FFN}], got {s.shared_ffn_size}")
        s.shared_expert_gate = s.shared_ffn_size > 0
    sparse = [True] * s.n_layers
    if not mixtral:
        step = cfg.positive("decoder_sparse_step", 1)
        dense = cfg.data.get("mlp_only_layers") or []
        if not isinstance(dense, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in dense):
            raise cfg.error("mlp_only_layers", f"must be a list of layer indices, got {dense!r}")
        sparse = [i not in dense and (i + 1) % step == 0 for i in range(s.n_layers)]
    if not all(sparse):
        s.layer_moe = [int(x) for x in sparse]
    for i in range(s.n_layers):
        if not sparse[i]:
            continue
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        for p in ("gate", "up", "down"):
            names.pop(dst + f"mlp.{p}.weight", None)
        if mixtral:
            moe = src + "block_sparse_moe."
            names[dst + "moe.router.weight"] = moe + "gate.weight"
            for e in range(s.n_experts):
                for p, w in (("gate", "w1"), ("up", "w3"), ("down", "w2")):
                    names[dst + f"moe.experts.{e}.{p}.weight"] = moe + f"experts.{e}.{w}.weight"
            continue
        names[dst + "moe.router.weight"] = src + "mlp.gate.weight"
        for e in range(s.n_experts):
            for p in ("gate", "up", "down"):
                names[dst + f"moe.experts.{e}.{p}.weight"] = src + f"mlp.experts.{e}.{p}_proj.weight"
        if s.shared_ffn_size:
            for p in ("gate", "up", "down"):
                names[dst + f"moe.shared.{p}.weight"] = src + f"mlp.shared_expert.{p}_proj.weight"
            names[dst + "moe.shared_scale.weight"] = src + "mlp.shared_expert_gate.weight"
    return s, names


def _gpt_oss(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """gpt-oss (20b, 120b): a Llama with biases on q, k, v and o, a learned sink logit per head in every softmax,
    sliding-window and full layers alternating (layer_types), yarn rotary, and experts in every layer: a router
    with a bias, the top num_experts_per_tok of its logits softmaxed among themselves (the renormalized softmax),
    experts with biases whose gate is clamped (swiglu_limit, swiglu_alpha: (clamp(up) + 1) * g * sigmoid(alpha g)).
    The checkpoint stacks the experts: gate_up_proj [experts, hidden, 2 * ffn] (gate and up columns interleaved)
    and down_proj [experts, ffn, hidden], or, in the released checkpoints, as MXFP4 blocks (read exactly as q5_0:
    mxfp4.py)."""
    mxfp4 = any(n.endswith("mlp.experts.gate_up_proj_blocks") for n in tensor_names)
    from .mxfp4 import Mxfp4Rows

    s, names = _llama(Config({**cfg.data, "model_type": "llama",
                              "attention_bias": cfg.get("attention_bias", bool, True)}, cfg.source), tensor_names)
    s.model_type = "gpt_oss"
    types = cfg.data.get("layer_types")
    if types is None:  # (transformers' default: sliding first, then alternating)
        types = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(s.n_layers)]
    if not isinstance(types, list) or len(types) != s.n_layers or not set(types) <= {"sliding_attention",
                                                                                       "full_attention"}:
        raise cfg.error("layer_types", f"expected {s.n_layers} of 'sliding_attention' / 'full_attention'")
    window = cfg.positive("sliding_window", 128)
    s.layer_windows = [window if t == "sliding_attention" else 0 for t in types]
    s.attn_sinks = True
    s.n_experts = cfg.positive("num_local_experts")
    s.n_experts_used = cfg.positive("num_experts_per_tok", 4)
    if s.n_experts_used > s.n_experts:
        raise cfg.error("num_experts_per_tok", f"({s.n_experts_used}) exceeds num_local_experts ({s.n_experts})")
    s.moe_ffn_size = s.ffn_size
    s.moe_norm_topk = True
    s.expert_bias = True
    s.swiglu_limit = cfg.get("swiglu_limit", float, 7.0)
    s.swiglu_alpha = cfg.get("swiglu_alpha", float, 1.702)
    if s.swiglu_limit <= 0:
        raise cfg.error("swiglu_limit", f"must be positive, got {s.swiglu_limit}")
    for i in range(s.n_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        for p in ("gate", "up", "down"):
            names.pop(dst + f"mlp.{p}.weight", None)
        names[dst + "attn.sinks"] = src + "self_attn.sinks"
        names[dst + "moe.router.weight"] = src + "mlp.router.weight"
        names[dst + "moe.router.bias"] = src + "mlp.router.bias"
        ex = src + "mlp.experts."
        for e in range(s.n_experts):
            q = f"{dst}moe.experts.{e}."
            for p, cols in (("gate", slice(0, None, 2)), ("up", slice(1, None, 2))):
                names[q + f"{p}.weight"] = (Mxfp4Rows(ex + "gate_up_proj", e, cols) if mxfp4 else
                                            Derived(ex + "gate_up_proj", cols, transpose=True, index=e))
                names[q + f"{p}.bias"] = Derived(ex + "gate_up_proj_bias", cols, index=e)
            names[q + "down.weight"] = (Mxfp4Rows(ex + "down_proj", e) if mxfp4 else
                                        Derived(ex + "down_proj", transpose=True, index=e))
            names[q + "down.bias"] = Derived(ex + "down_proj_bias", index=e)
    return s, names


def _phi3(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Phi-3 and Phi-4 (model_type phi3): a Llama whose q, k and v rows are one matrix (qkv_proj) and gate and up
    rows another (gate_up_proj), with a sliding window on every layer when the config names one."""
    s, names = _llama(cfg, tensor_names)
    w = cfg.get("sliding_window", int, 0) or 0
    if w < 0:
        raise cfg.error("sliding_window", f"must be positive, got {w}")
    s.sliding_window = w
    qd, kd, f = s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim, s.ffn_size
    for i in range(s.n_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        qkv, gu = src + "self_attn.qkv_proj.weight", src + "mlp.gate_up_proj.weight"
        for p, rows in (("q", slice(0, qd)), ("k", slice(qd, qd + kd)), ("v", slice(qd + kd, qd + 2 * kd))):
            names[dst + f"attn.{p}.weight"] = Derived(qkv, rows)
        names[dst + "mlp.gate.weight"] = Derived(gu, slice(0, f))
        names[dst + "mlp.up.weight"] = Derived(gu, slice(f, 2 * f))
    return s, names


def _gemma(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Gemma (the first: 2B, 7B, CodeGemma): a Llama with GeGLU (the tanh GELU, whatever a legacy hidden_act
    "gelu" says, as transformers reads it), embeddings scaled by sqrt(hidden_size), RMSNorms that scale by
    1 + weight, head_dim 256 and a tied head."""
    act = cfg.data.get("hidden_activation") or cfg.data.get("hidden_act") or "gelu_pytorch_tanh"
    data = {"tie_word_embeddings": True, "head_dim": 256, **cfg.data, "model_type": "llama",
            "hidden_act": "gelu_pytorch_tanh" if act == "gelu" else act}
    s, names = _llama(Config(data, cfg.source), tensor_names)
    s.model_type = "gemma"
    s.emb_scale = math.sqrt(s.hidden_size)
    add_one = not cfg.data.get("_gguf_norms_plus_one")
    for k in [k for k in names if k.endswith("norm.weight")]:
        if add_one:
            names[k] = Derived(names[k], add=1.0)
    return s, names


def _gpt_neox(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """GPT-NeoX (Pythia, GPT-NeoX-20B, RedPajama-INCITE, Dolly v2, StableLM-alpha): LayerNorms, fused QKV
    interleaved per head ([heads][q, k, v][head_dim]), rotary on the first rotary_pct of each head (rotate-half),
    GELU, biases, and by default a parallel residual with a norm of its own for the MLP."""
    data = dict(cfg.data)
    for old, new in (("rotary_pct", "partial_rotary_factor"), ("rotary_emb_base", "rope_theta")):
        if old in data and new not in data:  # (the keys of configs written before transformers 4.42)
            data[new] = data[old]
    cfg = Config(data, cfg.source)
    s = _core.ArchSpec()
    _common(cfg, s, "hidden_size", "num_attention_heads", "num_hidden_layers")
    s.ffn_size = cfg.positive("intermediate_size")
    s.max_position = cfg.positive("max_position_embeddings", 2048)
    s.norm = _core.NormKind.layer
    s.norm_eps = cfg.get("layer_norm_eps", float, 1e-5)
    s.act = _activation(cfg, "hidden_act", "gelu")
    s.gated_mlp = False
    s.pos = _core.PosKind.rotary
    _rope(cfg, s)
    s.attn_bias = s.attn_out_bias = cfg.get("attention_bias", bool, True)
    s.mlp_bias = True
    s.parallel_residual = s.parallel_mlp_norm = cfg.get("use_parallel_residual", bool, True)
    s.tie_embeddings = cfg.get("tie_word_embeddings", bool, False)
    nh, hd = s.n_heads, s.head_dim
    p = _prefix(tensor_names, ["gpt_neox.", ""], "embed_in.weight")
    names: NameMap = {"tok_embeddings.weight": p + "embed_in.weight"}
    _layernorm_pair(names, "norm", p + "final_layer_norm", tensor_names)
    if not s.tie_embeddings:
        names["lm_head.weight"] = "embed_out.weight"
    for i in range(s.n_layers):
        src, dst = f"{p}layers.{i}.", f"layers.{i}."
        _layernorm_pair(names, dst + "attn_norm", src + "input_layernorm", tensor_names)
        _layernorm_pair(names, dst + "mlp_norm", src + "post_attention_layernorm", tensor_names)
        qkv = src + "attention.query_key_value"
        _split_rows(names, dst + "attn", qkv + ".weight", {part: _per_head_rows(nh, 3, hd, [j]) for j, part in
                                                           enumerate("qkv")}, bias=qkv + ".bias" if s.attn_bias else None)
        names[dst + "attn.o.weight"] = src + "attention.dense.weight"
        if s.attn_bias:
            names[dst + "attn.o.bias"] = src + "attention.dense.bias"
        for a, b in (("up", "dense_h_to_4h"), ("down", "dense_4h_to_h")):
            names[dst + f"mlp.{a}.weight"] = src + f"mlp.{b}.weight"
            names[dst + f"mlp.{a}.bias"] = src + f"mlp.{b}.bias"
    return s, names


def _starcoder2(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """StarCoder2 (3B, 7B, 15B): a Llama with LayerNorms, a plain GELU (tanh) MLP (c_fc, c_proj), biases on every
    projection (use_bias), GQA and an optional sliding window, tied head by default."""
    data = {"hidden_act": "gelu_pytorch_tanh", "tie_word_embeddings": True, **cfg.data, "model_type": "llama",
            "attention_bias": cfg.get("use_bias", bool, True), "mlp_bias": cfg.get("use_bias", bool, True)}
    s, names = _llama(Config(data, cfg.source), tensor_names)
    s.model_type = "starcoder2"
    s.norm = _core.NormKind.layer
    s.norm_eps = cfg.get("norm_epsilon", float, 1e-5)
    s.gated_mlp = False
    w = cfg.get("sliding_window", int, 0) or 0
    if w < 0:
        raise cfg.error("sliding_window", f"must be positive, got {w}")
    s.sliding_window = w
    for i in range(s.n_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        for k in ("attn_norm", "mlp_norm"):
            names[f"{dst}{k}.bias"] = names[f"{dst}{k}.weight"][: -len("weight")] + "bias"
        names.pop(dst + "mlp.gate.weight")
        names.pop(dst + "mlp.gate.bias", None)
        for a, b in (("up", "c_fc"), ("down", "c_proj")):
            names[dst + f"mlp.{a}.weight"] = src + f"mlp.{b}.weight"
            if s.mlp_bias:
                names[dst + f"mlp.{a}.bias"] = src + f"mlp.{b}.bias"
    names["norm.bias"] = "model.norm.bias"
    return s, names


def _stablelm(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """StableLM (StableLM-3B-4E1T, StableLM 2 1.6B, Zephyr): a Llama with LayerNorms, rotary on a quarter of each
    head, optional q/k/v biases (use_qkv_bias) and an optional parallel residual through one norm
    (use_parallel_residual). Per-head q/k LayerNorms (qk_layernorm, StableLM 2 12B) are refused by name."""
    if cfg.get("qk_layernorm", bool, False):
        raise cfg.error("qk_layernorm", "is true: per-head LayerNorms of the queries and keys are not supported")
    data = {**cfg.data, "model_type": "llama", "attention_bias": False}
    s, names = _llama(Config(data, cfg.source), tensor_names)
    s.model_type = "stablelm"
    s.norm = _core.NormKind.layer
    s.norm_eps = cfg.get("layer_norm_eps", float, 1e-5)
    s.attn_bias = cfg.get("use_qkv_bias", bool, False)
    s.attn_out_bias = False
    s.parallel_residual = cfg.get("use_parallel_residual", bool, False)
    names["norm.bias"] = "model.norm.bias"
    for i in range(s.n_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        names[dst + "attn_norm.bias"] = src + "input_layernorm.bias"
        if s.parallel_residual:  # (one norm feeds both)
            names.pop(dst + "mlp_norm.weight")
        else:
            names[dst + "mlp_norm.bias"] = src + "post_attention_layernorm.bias"
        if s.attn_bias:
            for p in "qkv":
                names[dst + f"attn.{p}.bias"] = src + f"self_attn.{p}_proj.bias"
    return s, names


def _granite(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """IBM Granite 3 (model_type granite): a Llama whose embeddings, attention scores, residual branches and logits
    are scaled by the config's embedding_multiplier, attention_multiplier, residual_multiplier and
    1 / logits_scaling."""
    s, names = _llama(Config({**cfg.data, "model_type": "llama"}, cfg.source), tensor_names)
    s.model_type = "granite"
    for field in ("embedding_multiplier", "attention_multiplier", "residual_multiplier", "logits_scaling"):
        v = cfg.get(field, float, 1.0)
        if v <= 0:
            raise cfg.error(field, f"must be positive, got {v}")
    s.emb_scale = cfg.get("embedding_multiplier", float, 1.0)
    s.attn_scale = cfg.get("attention_multiplier", float, 1.0)
    s.residual_scale = cfg.get("residual_multiplier", float, 1.0)
    s.logits_scale = 1.0 / cfg.get("logits_scaling", float, 1.0)
    return s, names


def _phi(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Phi-1, Phi-1.5, Phi-2 (model_type phi): one LayerNorm feeding attention and MLP in parallel, partial
    rotary (rotate-half, 40% of each head in Phi-2), GELU (tanh), biases everywhere, a head with a bias."""
    if cfg.get("qk_layernorm", bool, False):
        raise cfg.error("qk_layernorm", "is true: LayerNorms over the query and key heads are not supported")
    s = _core.ArchSpec()
    _common(cfg, s, "hidden_size", "num_attention_heads", "num_hidden_layers")
    s.n_kv_heads = cfg.positive("num_key_value_heads", s.n_heads)
    if s.n_heads % s.n_kv_heads:
        raise cfg.error("num_key_value_heads", f"({s.n_kv_heads}) must divide num_attention_heads ({s.n_heads})")
    s.ffn_size = cfg.positive("intermediate_size")
    s.max_position = cfg.positive("max_position_embeddings", 2048)
    s.norm = _core.NormKind.layer
    s.norm_eps = cfg.get("layer_norm_eps", float, 1e-5)
    s.act = _activation(cfg, "hidden_act", "gelu_new")
    s.gated_mlp = False
    s.pos = _core.PosKind.rotary
    _rope(cfg, s)
    s.attn_bias = s.attn_out_bias = s.mlp_bias = True
    s.parallel_residual = True
    s.lm_head_bias = True
    s.tie_embeddings = cfg.get("tie_word_embeddings", bool, False)
    names: NameMap = {"tok_embeddings.weight": "model.embed_tokens.weight"}
    _layernorm_pair(names, "norm", "model.final_layernorm", tensor_names)
    if not s.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    names["lm_head.bias"] = "lm_head.bias"
    for i in range(s.n_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        _layernorm_pair(names, dst + "attn_norm", src + "input_layernorm", tensor_names)
        for p, h in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "dense")):
            names[dst + f"attn.{p}.weight"] = src + f"self_attn.{h}.weight"
            names[dst + f"attn.{p}.bias"] = src + f"self_attn.{h}.bias"
        for a, b in (("up", "fc1"), ("down", "fc2")):
            names[dst + f"mlp.{a}.weight"] = src + f"mlp.{b}.weight"
            names[dst + f"mlp.{a}.bias"] = src + f"mlp.{b}.bias"
    return s, names


def _gemma3(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Gemma 3's language model (model_type gemma3_text; gemma3's text_config, its weights under
    language_model.) and Gemma 2: a Llama with GeGLU, embeddings scaled by sqrt(hidden_size), RMSNorms that
    scale by 1 + weight, norms on the attention's and the MLP's outputs, sliding-window layers, and
    query_pre_attn_scalar for the attention scale. Gemma 3 adds per-head q/k norms and a rotary base of the
    sliding layers' own; Gemma 2 soft-caps the attention scores and the logits."""
    gemma2 = cfg.data.get("model_type") == "gemma2"
    if cfg.get("use_bidirectional_attention", bool, False):
        raise cfg.error("use_bidirectional_attention", "must be false for a decoder")
    s = _core.ArchSpec()
    s.model_type = "gemma2" if gemma2 else "gemma3_text"
    for field, attr in (("attn_logit_softcapping", "attn_softcap"), ("final_logit_softcapping", "logit_softcap")):
        cap = cfg.get(field, float, None)
        if cap is not None and cap <= 0:
            raise cfg.error(field, f"must be positive, got {cap}")
        setattr(s, attr, cap or 0.0)
    s.vocab_size = cfg.positive("vocab_size")
    s.hidden_size = cfg.positive("hidden_size")
    s.n_layers = cfg.positive("num_hidden_layers")
    s.n_heads = cfg.positive("num_attention_heads")
    s.n_kv_heads = cfg.positive("num_key_value_heads", s.n_heads)
    s.head_dim = cfg.positive("head_dim", 256)
    s.ffn_size = cfg.positive("intermediate_size")
    s.max_position = cfg.positive("max_position_embeddings", 131072)
    s.norm = _core.NormKind.rms
    s.norm_eps = cfg.get("rms_norm_eps", float, 1e-6)
    s.act = _activation(cfg, "hidden_activation", "gelu_pytorch_tanh")
    s.gated_mlp = True
    s.pos = _core.PosKind.rotary
    s.attn_bias = cfg.get("attention_bias", bool, False)
    s.attn_out_bias = s.attn_bias
    s.tie_embeddings = cfg.get("tie_word_embeddings", bool, True)
    s.qk_norm = not gemma2
    s.post_norms = True
    s.emb_scale = math.sqrt(s.hidden_size)
    s.attn_scale = cfg.positive("query_pre_attn_scalar", s.head_dim) ** -0.5
    # layer types: given, or every sliding_window_pattern-th layer full
    types = cfg.data.get("layer_types")
    if types is None:  # (Gemma 2: every other layer, from the first)
        pattern = 2 if gemma2 else cfg.positive("sliding_window_pattern", cfg.data.get("_sliding_window_pattern", 6))
        types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(s.n_layers)]
    if not isinstance(types, list) or len(types) != s.n_layers or not set(types) <= {"sliding_attention",
                                                                                       "full_attention"}:
        raise cfg.error("layer_types", f"expected {s.n_layers} of 'sliding_attention' / 'full_attention'")
    window = cfg.positive("sliding_window", 4096)
    s.layer_windows = [window if t == "sliding_attention" else 0 for t in types]
    if gemma2:  # one rotary table for all layers
        _rope(cfg, s)
        return s, _gemma_names(s, tensor_names, not cfg.data.get("_gguf_norms_plus_one"))
    s.layer_rope = [1 if t == "sliding_attention" else 0 for t in types]
    # the rotary tables: transformers 5's rope_parameters per layer type, or rope_theta / rope_scaling (global)
    # and rope_local_base_freq (local)
    params = cfg.data.get("rope_parameters")
    if isinstance(params, dict) and ("full_attention" in params or "sliding_attention" in params):
        full, local = params.get("full_attention") or {}, params.get("sliding_attention") or {}
        full = {"rope_theta": 1_000_000.0, **full}
        local = {"rope_theta": 10_000.0, **local}
    else:
        scaling = cfg.data.get("rope_scaling") or {}
        full = {**(scaling if isinstance(scaling, dict) else {}), "rope_theta": cfg.get("rope_theta", float, 1_000_000.0)}
        local = {"rope_type": "default", "rope_theta": cfg.get("rope_local_base_freq", float, 10_000.0)}
    ropes = []
    for p in (full, local):  # (each on a spec of its own: pybind hands out the member itself, not a copy)
        sub = Config({**{k: v for k, v in cfg.data.items() if k not in ("rope_scaling", "rope_parameters")},
                      "rope_parameters": p}, cfg.source)
        scratch = _core.ArchSpec()
        scratch.head_dim = s.head_dim
        _rope(sub, scratch)
        ropes.append(scratch.rope)
    s.rope, s.rope_local = ropes
    return s, _gemma_names(s, tensor_names, not cfg.data.get("_gguf_norms_plus_one"))


def _gemma_names(s: "_core.ArchSpec", tensor_names, add_one: bool = True) -> NameMap:
    """Gemma 2 / 3's tensors; every norm weight plus one (they scale by 1 + weight), unless the weights have it
    already (llama.cpp's GGUF files: add_one False)."""
    names: NameMap = {}

    def norm(src: str) -> Union[str, Derived]:
        return Derived(src, add=1.0) if add_one else src

    pre = _prefix(tensor_names, ["model.", "model.language_model.", "language_model.model."], "embed_tokens.weight")
    names["tok_embeddings.weight"] = pre + "embed_tokens.weight"
    names["norm.weight"] = norm(pre + "norm.weight")
    if not s.tie_embeddings:
        names["lm_head.weight"] = "language_model.lm_head.weight" if pre == "language_model.model." else "lm_head.weight"
    for i in range(s.n_layers):
        src, dst = f"{pre}layers.{i}.", f"layers.{i}."
        norms = [("attn_norm", "input_layernorm"), ("post_attn_norm", "post_attention_layernorm"),
                 ("mlp_norm", "pre_feedforward_layernorm"), ("post_mlp_norm", "post_feedforward_layernorm")]
        if s.qk_norm:
            norms += [("attn.q_norm", "self_attn.q_norm"), ("attn.k_norm", "self_attn.k_norm")]
        for d, h in norms:
            names[f"{dst}{d}.weight"] = norm(f"{src}{h}.weight")
        for p in "qkvo":
            names[dst + f"attn.{p}.weight"] = src + f"self_attn.{p}_proj.weight"
            if s.attn_bias:
                names[dst + f"attn.{p}.bias"] = src + f"self_attn.{p}_proj.bias"
        for p in ("gate", "up", "down"):
            names[dst + f"mlp.{p}.weight"] = src + f"mlp.{p}_proj.weight"
    return names


def _gemma3_multimodal(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """gemma3 (Gemma 3 4B and up, image and text): its language model, from text_config."""
    text = cfg.data.get("text_config")
    if not isinstance(text, dict):
        raise cfg.error("text_config", "expected an object (the language model's config)")
    top = {k: cfg.data[k] for k in ("tie_word_embeddings",) if k in cfg.data}
    return _gemma3(Config({**top, **text, "model_type": "gemma3_text"}, cfg.source), tensor_names)


class Derived:
    """A weight rebuilt from a checkpoint tensor: with `index`, one matrix of a 3-D tensor (fused experts); rows
    (after an optional transpose) gathered by index; with `add`, every value plus that constant, as f32 (Gemma's
    norms scale by 1 + weight)."""

    def __init__(self, src: str, rows: Union[slice, Sequence[int], None] = None, transpose: bool = False,
                 add: float = 0.0, index: Optional[int] = None):
        self.src, self.rows, self.transpose, self.add, self.index = src, rows, transpose, add, index

    def build(self, checkpoint) -> Tuple[np.ndarray, "_core.DType", str]:
        t = checkpoint.get(self.src)
        a = t.numpy()  # zero-copy view; bf16 comes as its uint16 bits, which regroup just as well
        if self.index is not None:
            if a.ndim < 2 or not 0 <= self.index < a.shape[0]:
                raise ValueError(f"tensor '{self.src}': expected at least {self.index + 1} stacked experts, "
                                 f"got shape {list(t.shape)}")
            a = a[self.index]
        if self.transpose:
            if a.ndim != 2:
                raise ValueError(f"tensor '{self.src}': expected a 2-D Conv1D weight, got shape {list(a.shape)}")
            a = a.T
        if self.rows is not None:
            idx = self.rows if isinstance(self.rows, slice) else np.asarray(self.rows)
            if not isinstance(self.rows, slice) and a.shape[0] <= int(np.max(idx)):
                raise ValueError(f"tensor '{self.src}': expected at least {int(np.max(idx)) + 1} rows, "
                                 f"got shape {list(t.shape)}")
            a = a[idx]
        if self.add:
            f = _as_f32(a, t.dtype) + np.float32(self.add)
            return np.ascontiguousarray(f, dtype=np.float32), _core.DType.f32, t.source
        return np.ascontiguousarray(a), t.dtype, t.source


def _as_f32(a: np.ndarray, dtype) -> np.ndarray:
    """A float tensor's values as f32 (bf16 arrives as its uint16 bits)."""
    if dtype == _core.DType.bf16:
        return (a.astype(np.uint32) << 16).view(np.float32)
    if dtype in (_core.DType.f16, _core.DType.f32):
        return a.astype(np.float32)
    raise ValueError(f"expected a float tensor (f32, f16 or bf16), got {dtype}")


NameMap = Dict[str, Union[str, Derived]]


def _prefix(names: Sequence[str], candidates: Sequence[str], probe: str) -> str:
    """The prefix under which the checkpoint stores its tensors ("transformer." or "" ...)."""
    have = set(names)
    for c in candidates:
        if c + probe in have:
            return c
    return candidates[0]


def _split_rows(names: NameMap, dst: str, src: str, parts: Dict[str, Any], transpose: bool = False,
                bias: Optional[str] = None) -> None:
    """Fused projections: dst.{part}.weight (and .bias) from row groups of one checkpoint tensor."""
    for part, rows in parts.items():
        names[f"{dst}.{part}.weight"] = Derived(src, rows, transpose)
        if bias:
            names[f"{dst}.{part}.bias"] = Derived(bias, rows)


def _per_head_rows(n_groups: int, group_rows: int, head_dim: int, picks: Sequence[int]) -> List[int]:
    """Row indices of a fused matrix laid out as [group][slot][head_dim], taking the listed slots of each group."""
    return [(g * group_rows + s) * head_dim + d for g in range(n_groups) for s in picks for d in range(head_dim)]


def _layernorm_pair(names: NameMap, dst: str, src: str, tensor_names) -> None:
    names[dst + ".weight"] = src + ".weight" if src + ".weight" in tensor_names or src + ".gamma" not in tensor_names \
        else src + ".gamma"
    bias = src + ".bias" if src + ".bias" in tensor_names or src + ".beta" not in tensor_names else src + ".beta"
    names[dst + ".bias"] = bias


def _common(cfg: Config, s: "_core.ArchSpec", hidden: str, heads: str, layers: str, vocab: str = "vocab_size") -> None:
    s.model_type = cfg.get("model_type", str)
    s.vocab_size = cfg.positive(vocab)
    s.hidden_size = cfg.positive(hidden)
    s.n_layers = cfg.positive(layers)
    s.n_heads = cfg.positive(heads)
    s.n_kv_heads = s.n_heads
    if s.hidden_size % s.n_heads:
        raise cfg.error(heads, f"({s.n_heads}) does not divide {hidden} ({s.hidden_size})")
    s.head_dim = s.hidden_size // s.n_heads


def alibi_slopes(n_heads: int) -> List[float]:
    """ALiBi slopes for any head count (transformers' build_alibi_tensor), in float32."""
    closest = 2 ** math.floor(math.log2(n_heads))
    base = np.float32(2 ** (-(2 ** -(math.log2(closest) - 3))))
    slopes = [np.float32(base ** np.float32(p)) for p in range(1, 1 + closest)]
    if closest != n_heads:
        extra = np.float32(2 ** (-(2 ** -(math.log2(2 * closest) - 3))))
        rem = min(closest, n_heads - closest)
        slopes += [np.float32(extra ** np.float32(p)) for p in range(1, 1 + 2 * rem, 2)]
    return [float(x) for x in slopes]


def _gpt2(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """GPT-2: learned positions, Conv1D (transposed) weights, fused c_attn, tied head."""
    s = _core.ArchSpec()
    _common(cfg, s, "n_embd", "n_head", "n_layer")
    s.ffn_size = cfg.positive("n_inner", 4 * s.hidden_size)
    s.max_position = cfg.positive("n_positions", 1024)
    s.norm = _core.NormKind.layer
    s.norm_eps = cfg.get("layer_norm_epsilon", float, 1e-5)
    s.act = _activation(cfg, "activation_function", "gelu_new")
    s.gated_mlp = False
    s.pos = _core.PosKind.learned
    s.attn_bias = s.attn_out_bias = s.mlp_bias = True
    s.tie_embeddings = cfg.get("tie_word_embeddings", bool, True)
    if cfg.get("scale_attn_by_inverse_layer_idx", bool, False):
        raise cfg.error("scale_attn_by_inverse_layer_idx", "is not supported (true)")
    if not cfg.get("scale_attn_weights", bool, True):
        s.attn_scale = 1.0
    p = _prefix(tensor_names, ["transformer.", ""], "wte.weight")
    H = s.hidden_size
    names: NameMap = {"tok_embeddings.weight": p + "wte.weight", "pos_embeddings.weight": p + "wpe.weight"}
    _layernorm_pair(names, "norm", p + "ln_f", tensor_names)
    if not s.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    for i in range(s.n_layers):
        src, dst = f"{p}h.{i}.", f"layers.{i}."
        _layernorm_pair(names, dst + "attn_norm", src + "ln_1", tensor_names)
        _layernorm_pair(names, dst + "mlp_norm", src + "ln_2", tensor_names)
        _split_rows(names, dst + "attn", src + "attn.c_attn.weight",
                    {"q": slice(0, H), "k": slice(H, 2 * H), "v": slice(2 * H, 3 * H)}, transpose=True,
                    bias=src + "attn.c_attn.bias")
        names[dst + "attn.o.weight"] = Derived(src + "attn.c_proj.weight", transpose=True)
        names[dst + "attn.o.bias"] = src + "attn.c_proj.bias"
        names[dst + "mlp.up.weight"] = Derived(src + "mlp.c_fc.weight", transpose=True)
        names[dst + "mlp.up.bias"] = src + "mlp.c_fc.bias"
        names[dst + "mlp.down.weight"] = Derived(src + "mlp.c_proj.weight", transpose=True)
        names[dst + "mlp.down.bias"] = src + "mlp.c_proj.bias"
    return s, names


def _opt(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """OPT: learned positions offset by 2, ReLU, pre- or post-LN, optional project_in / project_out."""
    s = _core.ArchSpec()
    _common(cfg, s, "hidden_size", "num_attention_heads", "num_hidden_layers")
    s.ffn_size = cfg.positive("ffn_dim")
    s.max_position = cfg.positive("max_position_embeddings", 2048)
    s.pos = _core.PosKind.learned
    s.pos_offset = 2
    s.norm = _core.NormKind.layer
    s.norm_eps = 1e-5
    s.act = _activation(cfg, "activation_function", "relu")
    s.gated_mlp = False
    bias = cfg.get("enable_bias", bool, True)
    s.attn_bias = s.attn_out_bias = s.mlp_bias = bias
    if not cfg.get("layer_norm_elementwise_affine", bool, True):
        raise cfg.error("layer_norm_elementwise_affine", "is not supported (false)")
    pre = cfg.get("do_layer_norm_before", bool, True)
    s.norm_position = _core.NormPosition.pre if pre else _core.NormPosition.post
    s.final_norm = pre and not cfg.get("_remove_final_layer_norm", bool, False)
    proj = cfg.positive("word_embed_proj_dim", s.hidden_size)
    s.proj_dim = proj if proj != s.hidden_size else 0
    s.tie_embeddings = cfg.get("tie_word_embeddings", bool, True)
    p = _prefix(tensor_names, ["model.decoder.", "decoder."], "embed_tokens.weight")
    names: NameMap = {"tok_embeddings.weight": p + "embed_tokens.weight",
                      "pos_embeddings.weight": p + "embed_positions.weight"}
    if s.proj_dim:
        names["proj_in.weight"] = p + "project_in.weight"
        names["proj_out.weight"] = p + "project_out.weight"
    if s.final_norm:
        _layernorm_pair(names, "norm", p + "final_layer_norm", tensor_names)
    if not s.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    for i in range(s.n_layers):
        src, dst = f"{p}layers.{i}.", f"layers.{i}."
        _layernorm_pair(names, dst + "attn_norm", src + "self_attn_layer_norm", tensor_names)
        _layernorm_pair(names, dst + "mlp_norm", src + "final_layer_norm", tensor_names)
        for a, b in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "out_proj")):
            names[dst + f"attn.{a}.weight"] = src + f"self_attn.{b}.weight"
            if bias:
                names[dst + f"attn.{a}.bias"] = src + f"self_attn.{b}.bias"
        for a, b in (("up", "fc1"), ("down", "fc2")):
            names[dst + f"mlp.{a}.weight"] = src + f"{b}.weight"
            if bias:
                names[dst + f"mlp.{a}.bias"] = src + f"{b}.bias"
    return s, names


def _bloom(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """BLOOM: ALiBi, embedding LayerNorm, fused QKV interleaved per head ([heads][q, k, v][head_dim])."""
    s = _core.ArchSpec()
    _common(cfg, s, "hidden_size" if "hidden_size" in cfg.data else "n_embed", "n_head", "n_layer")
    s.ffn_size = 4 * s.hidden_size
    s.max_position = cfg.positive("seq_length", 2048)
    s.norm = _core.NormKind.layer
    s.norm_eps = cfg.get("layer_norm_epsilon", float, 1e-5)
    s.act = _core.Act.gelu_tanh
    s.gated_mlp = False
    s.pos = _core.PosKind.alibi
    s.alibi_slopes = alibi_slopes(s.n_heads)
    s.emb_norm = True
    s.attn_bias = s.attn_out_bias = s.mlp_bias = True
    s.tie_embeddings = cfg.get("tie_word_embeddings", bool, True)
    if cfg.get("apply_residual_connection_post_layernorm", bool, False):
        raise cfg.error("apply_residual_connection_post_layernorm", "is not supported (true)")
    p = _prefix(tensor_names, ["transformer.", ""], "word_embeddings.weight")
    nh, hd = s.n_heads, s.head_dim
    names: NameMap = {"tok_embeddings.weight": p + "word_embeddings.weight"}
    _layernorm_pair(names, "emb_norm", p + "word_embeddings_layernorm", tensor_names)
    _layernorm_pair(names, "norm", p + "ln_f", tensor_names)
    if not s.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    for i in range(s.n_layers):
        src, dst = f"{p}h.{i}.", f"layers.{i}."
        _layernorm_pair(names, dst + "attn_norm", src + "input_layernorm", tensor_names)
        _layernorm_pair(names, dst + "mlp_norm", src + "post_attention_layernorm", tensor_names)
        qkv = src + "self_attention.query_key_value"
        _split_rows(names, dst + "attn", qkv + ".weight",
                    {part: _per_head_rows(nh, 3, hd, [j]) for j, part in enumerate("qkv")}, bias=qkv + ".bias")
        names[dst + "attn.o.weight"] = src + "self_attention.dense.weight"
        names[dst + "attn.o.bias"] = src + "self_attention.dense.bias"
        for a, b in (("up", "dense_h_to_4h"), ("down", "dense_4h_to_h")):
            names[dst + f"mlp.{a}.weight"] = src + f"mlp.{b}.weight"
            names[dst + f"mlp.{a}.bias"] = src + f"mlp.{b}.bias"
    return s, names


def _falcon(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Falcon: RW (multi-query, parallel, one LayerNorm), new decoder (kv groups, ln_attn/ln_mlp), sequential."""
    s = _core.ArchSpec()
    _common(cfg, s, "hidden_size", "num_attention_heads", "num_hidden_layers")
    s.ffn_size = cfg.positive("ffn_hidden_size", 4 * s.hidden_size)
    s.max_position = cfg.positive("max_position_embeddings", 2048)
    s.norm = _core.NormKind.layer
    s.norm_eps = cfg.get("layer_norm_epsilon", float, 1e-5)
    s.act = _activation(cfg, "activation", "gelu")
    s.gated_mlp = False
    new_arch = cfg.get("new_decoder_architecture", bool, False)
    multi_query = cfg.get("multi_query", bool, True)
    parallel = cfg.get("parallel_attn", bool, True)
    nh, hd = s.n_heads, s.head_dim
    if new_arch:
        nkv = cfg.positive("num_kv_heads", nh)
        if nh % nkv:
            raise cfg.error("num_kv_heads", f"({nkv}) must divide num_attention_heads ({nh})")
    else:
        nkv = 1 if multi_query else nh
    s.n_kv_heads = nkv
    bias = cfg.get("bias", bool, False)
    s.attn_bias = s.attn_out_bias = s.mlp_bias = bias
    if cfg.get("alibi", bool, False):
        s.pos = _core.PosKind.alibi
        s.alibi_slopes = alibi_slopes(nh)
        s.alibi_bf16 = True
        s.alibi_scaled = True
    else:
        s.pos = _core.PosKind.rotary
        _rope(cfg, s)
    n_ln = cfg.get("num_ln_in_parallel_attn", int, None)
    if n_ln is None and new_arch:
        n_ln = 2
    s.parallel_residual = parallel
    two_norms = parallel and new_arch and n_ln == 2
    s.parallel_mlp_norm = two_norms
    s.tie_embeddings = cfg.get("tie_word_embeddings", bool, True)
    p = _prefix(tensor_names, ["transformer.", ""], "word_embeddings.weight")
    names: NameMap = {"tok_embeddings.weight": p + "word_embeddings.weight"}
    _layernorm_pair(names, "norm", p + "ln_f", tensor_names)
    if not s.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    if new_arch:  # [kv group][its q heads..., k, v][head_dim]
        r = nh // nkv
        parts = {"q": _per_head_rows(nkv, r + 2, hd, range(r)), "k": _per_head_rows(nkv, r + 2, hd, [r]),
                 "v": _per_head_rows(nkv, r + 2, hd, [r + 1])}
    elif multi_query:  # [q heads..., k, v][head_dim]
        parts = {"q": slice(0, nh * hd), "k": slice(nh * hd, (nh + 1) * hd), "v": slice((nh + 1) * hd, (nh + 2) * hd)}
    else:  # [heads][q, k, v][head_dim]
        parts = {part: _per_head_rows(nh, 3, hd, [j]) for j, part in enumerate("qkv")}
    for i in range(s.n_layers):
        src, dst = f"{p}h.{i}.", f"layers.{i}."
        if two_norms:
            _layernorm_pair(names, dst + "attn_norm", src + "ln_attn", tensor_names)
            _layernorm_pair(names, dst + "mlp_norm", src + "ln_mlp", tensor_names)
        else:
            _layernorm_pair(names, dst + "attn_norm", src + "input_layernorm", tensor_names)
            if not parallel:
                _layernorm_pair(names, dst + "mlp_norm", src + "post_attention_layernorm", tensor_names)
        qkv = src + "self_attention.query_key_value"
        _split_rows(names, dst + "attn", qkv + ".weight", parts, bias=qkv + ".bias" if bias else None)
        names[dst + "attn.o.weight"] = src + "self_attention.dense.weight"
        if bias:
            names[dst + "attn.o.bias"] = src + "self_attention.dense.bias"
        for a, b in (("up", "dense_h_to_4h"), ("down", "dense_4h_to_h")):
            names[dst + f"mlp.{a}.weight"] = src + f"mlp.{b}.weight"
            if bias:
                names[dst + f"mlp.{a}.bias"] = src + f"mlp.{b}.bias"
    return s, names


def _codegen(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """CodeGen: fused qkv_proj in mp_num=4 blocks of [q, v, k], partial interleaved rotary, parallel residual."""
    s = _core.ArchSpec()
    _common(cfg, s, "n_embd", "n_head", "n_layer")
    s.ffn_size = cfg.positive("n_inner", 4 * s.hidden_size)
    s.max_position = cfg.positive("n_positions", 2048)
    s.norm = _core.NormKind.layer
    s.norm_eps = cfg.get("layer_norm_epsilon", float, 1e-5)
    s.act = _activation(cfg, "activation_function", "gelu_new")
    s.gated_mlp = False
    s.pos = _core.PosKind.rotary
    r = _core.RopeSpec()
    r.theta = 10000.0
    r.rotary_dim = cfg.positive("rotary_dim", s.head_dim)
    r.style = _core.RopeStyle.interleaved
    s.rope = r
    s.parallel_residual = True
    s.mlp_bias = True
    s.lm_head_bias = True
    s.tie_embeddings = cfg.get("tie_word_embeddings", bool, False)
    mp = 4
    if s.n_heads % mp:
        raise cfg.error("n_head", f"({s.n_heads}) must be a multiple of CodeGen's mp_num (4)")
    p = _prefix(tensor_names, ["transformer.", ""], "wte.weight")
    local = s.hidden_size // mp
    names: NameMap = {"tok_embeddings.weight": p + "wte.weight"}
    _layernorm_pair(names, "norm", p + "ln_f", tensor_names)
    names["lm_head.weight"] = "lm_head.weight"
    names["lm_head.bias"] = "lm_head.bias"
    # each of the mp blocks holds [q, v, k] of local width; heads run block-major
    parts = {part: [b * 3 * local + j * local + d for b in range(mp) for d in range(local)]
             for j, part in ((0, "q"), (1, "v"), (2, "k"))}
    for i in range(s.n_layers):
        src, dst = f"{p}h.{i}.", f"layers.{i}."
        _layernorm_pair(names, dst + "attn_norm", src + "ln_1", tensor_names)
        _split_rows(names, dst + "attn", src + "attn.qkv_proj.weight", parts)
        names[dst + "attn.o.weight"] = src + "attn.out_proj.weight"
        for a, b in (("up", "fc_in"), ("down", "fc_out")):
            names[dst + f"mlp.{a}.weight"] = src + f"mlp.{b}.weight"
            names[dst + f"mlp.{a}.bias"] = src + f"mlp.{b}.bias"
    return s, names


def _bert(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """BERT encoder: learned positions, token types, embedding LayerNorm, post-LN blocks."""
    s = _core.ArchSpec()
    _common(cfg, s, "hidden_size", "num_attention_heads", "num_hidden_layers")
    s.kind = _core.ModelKind.encoder
    s.ffn_size = cfg.positive("intermediate_size")
    s.max_position = cfg.positive("max_position_embeddings", 512)
    pos_type = cfg.get("position_embedding_type", str, "absolute")
    if pos_type != "absolute":
        raise cfg.error("position_embedding_type", f"names an unsupported kind {pos_type!r} (supported: absolute)")
    s.pos = _core.PosKind.learned
    s.n_token_types = cfg.positive("type_vocab_size", 2)
    s.norm = _core.NormKind.layer
    s.norm_eps = cfg.get("layer_norm_eps", float, 1e-12)
    s.norm_position = _core.NormPosition.post
    s.final_norm = False
    s.emb_norm = True
    s.act = _activation(cfg, "hidden_act", "gelu")
    s.gated_mlp = False
    s.attn_bias = s.attn_out_bias = s.mlp_bias = True
    p = _prefix(tensor_names, ["bert.", ""], "embeddings.word_embeddings.weight")
    e = p + "embeddings."
    names: NameMap = {"tok_embeddings.weight": e + "word_embeddings.weight",
                      "pos_embeddings.weight": e + "position_embeddings.weight",
                      "token_type_embeddings.weight": e + "token_type_embeddings.weight"}
    _layernorm_pair(names, "emb_norm", e + "LayerNorm", tensor_names)
    for i in range(s.n_layers):
        src, dst = f"{p}encoder.layer.{i}.", f"layers.{i}."
        for a, b in (("q", "query"), ("k", "key"), ("v", "value")):
            names[dst + f"attn.{a}.weight"] = src + f"attention.self.{b}.weight"
            names[dst + f"attn.{a}.bias"] = src + f"attention.self.{b}.bias"
        names[dst + "attn.o.weight"] = src + "attention.output.dense.weight"
        names[dst + "attn.o.bias"] = src + "attention.output.dense.bias"
        _layernorm_pair(names, dst + "attn_norm", src + "attention.output.LayerNorm", tensor_names)
        names[dst + "mlp.up.weight"] = src + "intermediate.dense.weight"
        names[dst + "mlp.up.bias"] = src + "intermediate.dense.bias"
        names[dst + "mlp.down.weight"] = src + "output.dense.weight"
        names[dst + "mlp.down.bias"] = src + "output.dense.bias"
        _layernorm_pair(names, dst + "mlp_norm", src + "output.LayerNorm", tensor_names)
    return s, names


def t5_specs(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap, "_core.ArchSpec", NameMap]:
    """T5 v1.0 / v1.1: an encoder and a decoder stack (relative position buckets, RMS norm, no score scaling)."""
    enc = _core.ArchSpec()
    enc.model_type = cfg.get("model_type", str)
    enc.vocab_size = cfg.positive("vocab_size")
    enc.hidden_size = cfg.positive("d_model")
    enc.n_heads = enc.n_kv_heads = cfg.positive("num_heads")
    enc.head_dim = cfg.positive("d_kv")
    enc.ffn_size = cfg.positive("d_ff")
    enc.n_layers = cfg.positive("num_layers")
    enc.max_position = cfg.positive("n_positions", 512)
    enc.norm = _core.NormKind.rms
    enc.norm_eps = cfg.get("layer_norm_epsilon", float, 1e-6)
    enc.attn_scale = 1.0
    enc.pos = _core.PosKind.relative
    enc.rel_buckets = cfg.positive("relative_attention_num_buckets", 32)
    enc.rel_max_distance = cfg.positive("relative_attention_max_distance", 128)
    proj = cfg.get("feed_forward_proj", str, "relu")
    gated = proj.startswith("gated-")
    act = proj[len("gated-"):] if gated else proj
    acts = {"relu": _core.Act.relu, "gelu": _core.Act.gelu_tanh, "gelu_new": _core.Act.gelu_tanh,
            "silu": _core.Act.silu}
    if act not in acts:
        raise cfg.error("feed_forward_proj", f"names an unsupported activation {proj!r}")
    enc.act = acts[act]
    enc.gated_mlp = gated
    enc.kind = _core.ModelKind.encoder
    dec = _core.ArchSpec()
    for f in ("model_type", "vocab_size", "hidden_size", "n_heads", "n_kv_heads", "head_dim", "ffn_size",
              "max_position", "norm", "norm_eps", "attn_scale", "pos", "rel_buckets", "rel_max_distance", "act",
              "gated_mlp"):
        setattr(dec, f, getattr(enc, f))
    dec.kind = _core.ModelKind.decoder
    dec.n_layers = cfg.positive("num_decoder_layers", enc.n_layers)
    dec.cross_attention = True
    # transformers 5 writes scale_decoder_outputs (and always ties); older configs say tie_word_embeddings,
    # which also meant scaling. The head is untied exactly when the checkpoint stores lm_head.weight.
    tied_cfg = cfg.get("tie_word_embeddings", bool, True)
    if cfg.get("scale_decoder_outputs", bool, tied_cfg):
        dec.logits_scale = enc.hidden_size ** -0.5
    dec.tie_embeddings = "lm_head.weight" not in set(tensor_names) or (tied_cfg and "scale_decoder_outputs" not in cfg.data)
    mlp = {"gate": "wi_0", "up": "wi_1", "down": "wo"} if gated else {"up": "wi", "down": "wo"}

    def stack(prefix: str, n: int, spec, decoder: bool) -> NameMap:
        names: NameMap = {"tok_embeddings.weight": "shared.weight",
                          "rel_bias.weight": f"{prefix}block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                          "norm.weight": f"{prefix}final_layer_norm.weight"}
        for i in range(n):
            src, dst = f"{prefix}block.{i}.layer.", f"layers.{i}."
            names[dst + "attn_norm.weight"] = src + "0.layer_norm.weight"
            for a in "qkvo":
                names[dst + f"attn.{a}.weight"] = src + f"0.SelfAttention.{a}.weight"
            ff = 1
            if decoder:
                names[dst + "cross_norm.weight"] = src + "1.layer_norm.weight"
                for a in "qkvo":
                    names[dst + f"cross.{a}.weight"] = src + f"1.EncDecAttention.{a}.weight"
                ff = 2
            names[dst + "mlp_norm.weight"] = src + f"{ff}.layer_norm.weight"
            for a, b in mlp.items():
                names[dst + f"mlp.{a}.weight"] = src + f"{ff}.DenseReluDense.{b}.weight"
        return names

    enc_names = stack("encoder.", enc.n_layers, enc, False)
    dec_names = stack("decoder.", dec.n_layers, dec, True)
    if not dec.tie_embeddings:
        dec_names["lm_head.weight"] = "lm_head.weight"
    return enc, enc_names, dec, dec_names


# model_type -> builder(config, tensor names present) -> (ArchSpec, canonical -> checkpoint name)
ARCHS: Dict[str, Callable[[Config, Any], Tuple["_core.ArchSpec", Dict[str, str]]]] = {
    "llama": _llama,
    "mistral": _llama,
    "qwen2": _llama,
    "qwen3": _llama,
    "phi3": _phi3,
    "mixtral": _moe,
    "olmoe": _moe,
    "olmo2": _olmo2,
    "smollm3": _smollm3,
    "cohere": _cohere,
    "gpt_oss": _gpt_oss,
    "qwen2_moe": _moe,
    "qwen3_moe": _moe,
    "gemma": _gemma,
    "gemma2": _gemma3,
    "gemma3_text": _gemma3,
    "gemma3": _gemma3_multimodal,
    "gpt2": _gpt2,
    "starcoder2": _starcoder2,
    "stablelm": _stablelm,
    "granite": _granite,
    "gpt_neox": _gpt_neox,
    "phi": _phi,
    "opt": _opt,
    "bloom": _bloom,
    "falcon": _falcon,
    "codegen": _codegen,
    "bert": _bert,
}
ENCODER_DECODERS = {"t5": t5_specs}


def spec_from_config(data: Dict[str, Any], source: str, tensor_names=()) -> Tuple["_core.ArchSpec", Dict[str, str]]:
    cfg = Config(data, source)
    model_type = cfg.get("model_type", str)
    if model_type not in ARCHS:
        supported = ", ".join(sorted(list(ARCHS) + list(ENCODER_DECODERS)))
        raise cfg.error("model_type", f"names an unsupported architecture {model_type!r} (supported: {supported})")
    spec, names = ARCHS[model_type](cfg, tensor_names)
    try:
        spec.validate()
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    return spec, names
