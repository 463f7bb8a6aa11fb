"""Decoders whose layers mix tokens through Mamba or Mamba2 state space mixers, as data: Granite 4.0-H (Mamba2
mixers beside attention layers), Nemotron-H and Nemotron 3 (layers of one branch each: a Mamba2 mixer, attention
or an MLP / experts), Mamba2 and Mamba / Falcon-Mamba (their mixers alone), Falcon-H1 (a Mamba2 mixer beside every
attention layer), Jamba (Mamba mixers beside attention, experts every other layer) and Bamba.
See archs.py and archs_hybrid.py (the recurrent layers' cache rules)."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from . import _core
from .archs import _REQUIRED, Config, Derived, NameMap
from .archs_llama import _experts, expert_names
from .archs_recent import _as_llama


# GraniteMoeHybridConfig's defaults where they differ from Llama's
GRANITE_HYBRID_DEFAULTS: Dict[str, Any] = {"num_local_experts": 8, "shared_intermediate_size": 1024,
                                           "mamba_n_heads": 128, "mamba_n_groups": 1, "mamba_d_state": 256,
                                           "mamba_d_head": 64, "mamba_d_conv": 4, "mamba_expand": 2,
                                           "mamba_conv_bias": True, "mamba_proj_bias": False}


def _granitemoehybrid(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """IBM Granite 4.0-H (granitemoehybrid): Mamba2 mixers beside attention layers (layer_types), Granite's
    multipliers, no positions unless position_embedding_type is rope; each MLP a shared gated MLP (shared_mlp:
    input_linear holds gate then up rows) beside experts where num_local_experts > 0 (granitemoe's, stacked)."""
    from .archs_llama import _granite, granite_expert_names

    c = Config({**GRANITE_HYBRID_DEFAULTS, **cfg.data}, cfg.source)
    n = c.positive("num_hidden_layers")
    types = c.data.get("layer_types") or c.data.get("layers_block_type")
    kinds = {"mamba": 3, "linear_attention": 3, "attention": 0, "full_attention": 0}
    if not (isinstance(types, list) and len(types) == n and all(isinstance(t, str) and t in kinds for t in types)):
        raise c.error("layer_types", f"expected {n} of 'mamba' / 'attention'")
    _refuse_true(c, ("mamba_proj_bias", "attention_bias"), "Granite 4.0-H")
    shared = c.positive("shared_intermediate_size")
    s, names = _granite(Config({**c.data, "model_type": "granite", "intermediate_size": shared}, cfg.source),
                        tensor_names)
    s.model_type = "granitemoehybrid"
    s.layer_linear = [kinds[t] for t in types]
    _ssm_sizes(c, s, "mamba_n_heads", "mamba_d_head", "mamba_d_state", "mamba_n_groups", "mamba_d_conv",
               "mamba_conv_bias", _expanded(c, "mamba_expand", s.hidden_size))
    if c.data.get("position_embedding_type") != "rope":
        s.pos = _core.PosKind.none
    n_experts = c.get("num_local_experts", int)
    out: NameMap = {k: v for k, v in names.items() if not k.startswith("layers.")}
    for i in range(n):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        _mixer_or_attention(s, out, i, "post_attention_layernorm",
                            lambda out, src, dst: mamba2_names(out, src, dst, s.ssm_conv_bias))
        mlp = dst + ("moe.shared." if n_experts else "mlp.")
        out[mlp + "gate.weight"] = Derived(src + "shared_mlp.input_linear.weight", slice(0, shared))
        out[mlp + "up.weight"] = Derived(src + "shared_mlp.input_linear.weight", slice(shared, 2 * shared))
        out[mlp + "down.weight"] = src + "shared_mlp.output_linear.weight"
    if n_experts:
        _experts(c, s, "num_local_experts", _REQUIRED)
        s.moe_ffn_size = c.positive("intermediate_size")
        s.moe_norm_topk = True
        s.shared_ffn_size = shared
        for i in range(n):
            granite_expert_names(s, out, i)
    return s, out


def _mixer_or_attention(s: "_core.ArchSpec", out: NameMap, i: int, mlp_norm: str, mixer_names) -> None:
    """Layer i's norms (input_layernorm, then mlp_norm) and its token mixer: mixer_names(out, src, dst) where the
    layer is recurrent, else self_attn's q, k, v and o (Granite 4.0-H, Jamba, Bamba)."""
    src, dst = f"model.layers.{i}.", f"layers.{i}."
    out[dst + "attn_norm.weight"] = src + "input_layernorm.weight"
    out[dst + "mlp_norm.weight"] = src + mlp_norm + ".weight"
    if s.layer_linear[i]:
        mixer_names(out, src + "mamba.", dst)
    else:
        for p in "qkvo":
            out[dst + f"attn.{p}.weight"] = src + f"self_attn.{p}_proj.weight"


def _time_step_limit(c: Config, s: "_core.ArchSpec") -> None:
    """A Mamba2 mixer's clamp of its time steps (time_step_limit: two numbers, the second possibly infinite)."""
    limit = c.data.get("time_step_limit")
    if isinstance(limit, (list, tuple)):  # (transformers 5 writes infinity as {"__float__": "Infinity"})
        limit = [float(x["__float__"]) if isinstance(x, dict) and x.get("__float__") in ("Infinity", "inf") else x
                 for x in limit]
    if limit is not None:
        if not (isinstance(limit, (list, tuple)) and len(limit) == 2 and
                all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in limit)):
            raise c.error("time_step_limit", f"expected two numbers, got {limit!r}")
        s.ssm_dt_min = float(limit[0])
        s.ssm_dt_max = 0.0 if limit[1] == float("inf") else float(limit[1])


def mamba2_names(out: NameMap, src: str, dst: str, conv_bias: bool) -> None:
    """A Mamba2 mixer's tensors (in_proj, conv1d, dt_bias, A_log, D, norm, out_proj under src) as lin.*."""
    for part, name in (("in.weight", "in_proj.weight"), ("conv.weight", "conv1d.weight"), ("dt_bias", "dt_bias"),
                       ("A_log", "A_log"), ("D", "D"), ("norm.weight", "norm.weight"),
                       ("out.weight", "out_proj.weight")):
        out[dst + "lin." + part] = src + name
    if conv_bias:
        out[dst + "lin.conv.bias"] = src + "conv1d.bias"


def _expanded(c: Config, field: str, hidden: int, default: Any = _REQUIRED) -> int:
    """A mixer's width: the config's expansion factor `field` times hidden, checked positive and finite."""
    import math

    expand = c.get(field, float, default)
    if not (expand > 0 and math.isfinite(expand * hidden)):
        raise c.error(field, f"must be a positive factor of hidden_size, got {expand}")
    return int(expand * hidden)


def _ssm_sizes(c: Config, s: "_core.ArchSpec", heads: str, head_dim: str, state: str, groups: str, conv: str,
               conv_bias: str, inner: Optional[int] = None, auto_head: bool = False) -> None:
    """A Mamba2 mixer's sizes from the config fields named; inner (the heads' total width) checked where given, and
    where auto_head, the head size taken from it when the config says "auto" (Bamba's, Falcon-H1's)."""
    s.ssm_heads = c.positive(heads)
    if auto_head and c.data.get(head_dim) == "auto":
        c = Config({**c.data, head_dim: inner // s.ssm_heads}, c.source)
    s.ssm_head_dim = c.positive(head_dim)
    s.ssm_state, s.ssm_groups = c.positive(state), c.positive(groups)
    s.lin_conv = c.positive(conv)
    s.ssm_conv_bias = c.get(conv_bias, bool)
    if inner is not None and s.ssm_heads * s.ssm_head_dim != inner:
        raise c.error(head_dim, f"({s.ssm_head_dim}) times {heads} ({s.ssm_heads}) differs from the mixer's width "
                                f"({inner})")
    _time_step_limit(c, s)


def _backbone(tensor_names, default: str) -> str:
    """Where a Mamba-family checkpoint holds its model: backbone. (the original checkpoints) or model.
    (transformers 5 saves Nemotron-H so)."""
    have = set(tensor_names)
    for prefix in ("backbone.", "model."):
        if prefix + "embeddings.weight" in have:
            return prefix
    return default


def _ssm_only_spec(c: Config, model_type: str, n_layers: int, tensor_names) -> "_core.ArchSpec":
    """The fields a Mamba-family decoder shares: RMSNorm (layer_norm_epsilon), no positions, embeddings untied
    unless the checkpoint lacks lm_head.weight (or, without tensor names, tie_word_embeddings)."""
    s = _core.ArchSpec()
    s.model_type = model_type
    s.vocab_size = c.positive("vocab_size")
    s.hidden_size = c.positive("hidden_size")
    s.n_layers = n_layers
    s.norm = _core.NormKind.rms
    s.norm_eps = c.get("layer_norm_epsilon", float, 1e-5)
    s.pos = _core.PosKind.none
    s.max_position = c.positive("max_position_embeddings", 1 << 20)
    have = set(tensor_names)
    s.tie_embeddings = "lm_head.weight" not in have if have else c.get("tie_word_embeddings", bool, False)
    return s


def _refuse_true(c: Config, fields, family: str) -> None:
    """Options the family's code here does not compute (biases mostly): each refused by name where true."""
    for field in fields:
        if c.get(field, bool, False):
            raise c.error(field, f"is true: not supported for {family}")


def _silu_mixer(c: Config, field: str) -> None:
    """The mixers' activation (of the convolution, and of the gate) is SiLU; another is refused by name."""
    act = c.get(field, str, "silu")
    if act not in ("silu", "swish"):
        raise c.error(field, f"is {act!r}: the Mamba mixers here use SiLU")


def _backbone_names(s: "_core.ArchSpec", prefix: str) -> NameMap:
    """A Mamba-family checkpoint's embeddings, final norm (norm_f) and head (unless tied) under prefix."""
    names: NameMap = {"tok_embeddings.weight": prefix + "embeddings.weight", "norm.weight": prefix + "norm_f.weight"}
    if not s.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    return names


def _mixers_only(s: "_core.ArchSpec", kind: int, prefix: str) -> NameMap:
    """Every layer a token mixer of `kind` alone (no attention: its sizes only pass validation; no MLP): the layer
    kinds, and _backbone_names with each layer's one norm."""
    s.n_heads = s.n_kv_heads = 1
    s.head_dim = s.ffn_size = 1
    s.layer_linear = [kind] * s.n_layers
    s.layer_mlp = [0] * s.n_layers
    names = _backbone_names(s, prefix)
    for i in range(s.n_layers):
        names[f"layers.{i}.attn_norm.weight"] = f"{prefix}layers.{i}.norm.weight"
    return names


def _mamba2(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Mamba2 (mamba2; Mamba-Codestral): every layer a Mamba2 mixer alone, x += mixer(rmsnorm(x)): no attention,
    no MLP, no positions (ArchSpec.layer_mlp 0 everywhere)."""
    c = Config({**MAMBA2_DEFAULTS, **cfg.data}, cfg.source)
    _refuse_true(c, ("use_bias",), "Mamba2")
    if not c.get("rms_norm", bool, True):
        raise c.error("rms_norm", "is false: not supported (the mixer's output norm is assumed)")
    _silu_mixer(c, "hidden_act")
    n = c.positive("num_hidden_layers")
    prefix = _backbone(tensor_names, "backbone.")
    s = _ssm_only_spec(c, "mamba2", n, tensor_names)
    _ssm_sizes(c, s, "num_heads", "head_dim", "state_size", "n_groups", "conv_kernel", "use_conv_bias",
               _expanded(c, "expand", s.hidden_size))
    names = _mixers_only(s, 3, prefix)
    for i in range(n):
        mamba2_names(names, f"{prefix}layers.{i}.mixer.", f"layers.{i}.", s.ssm_conv_bias)
    return s, names


def _mamba(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Mamba (mamba; state-spaces' -hf checkpoints) and Falcon-Mamba (falcon_mamba: dt, B and C RMS-normalized
    without a weight, mixer_rms_eps): every layer a Mamba mixer alone, x += mixer(rmsnorm(x)) (layer kind 5)."""
    c = Config(cfg.data, cfg.source)
    _refuse_true(c, ("use_bias",), "Mamba")
    _silu_mixer(c, "hidden_act")
    n = c.positive("num_hidden_layers")
    prefix = _backbone(tensor_names, "backbone.")
    s = _ssm_only_spec(c, c.get("model_type", str), n, tensor_names)
    have = set(tensor_names)
    s.tie_embeddings = "lm_head.weight" not in have if have else c.get("tie_word_embeddings", bool, True)
    _mamba_sizes(c, s)
    if s.model_type == "falcon_mamba":
        s.ssm_bcdt_eps = c.get("mixer_rms_eps", float, 1e-6)
        if not s.ssm_bcdt_eps > 0:
            raise c.error("mixer_rms_eps", f"must be positive, got {s.ssm_bcdt_eps}")
    names = _mixers_only(s, 5, prefix)
    for i in range(n):
        mamba_names(s, names, f"{prefix}layers.{i}.mixer.", f"layers.{i}.")
    return s, names


def _mamba_sizes(c: Config, s: "_core.ArchSpec", prefix: str = "") -> None:
    """A Mamba mixer's sizes from the config fields (Jamba's under mamba_): inner width (intermediate_size, or
    expand times hidden_size), the time step's rank (auto: hidden_size / 16, rounded up), states, taps."""
    import math

    inner = _expanded(c, "mamba_expand" if prefix else "expand", s.hidden_size, 2)
    if not prefix:
        inner = c.positive("intermediate_size", inner)
    rank = c.data.get(prefix + ("dt_rank" if prefix else "time_step_rank"), "auto")
    s.ssm_dt_rank = math.ceil(s.hidden_size / 16) if rank == "auto" else \
        c.positive(prefix + ("dt_rank" if prefix else "time_step_rank"))
    s.ssm_heads, s.ssm_head_dim = 1, inner  # (the channels as one head)
    s.ssm_state = c.positive(prefix + ("d_state" if prefix else "state_size"), 16)
    s.lin_conv = c.positive(prefix + ("d_conv" if prefix else "conv_kernel"), 4)
    s.ssm_conv_bias = c.get(prefix + ("conv_bias" if prefix else "use_conv_bias"), bool, True)


def mamba_names(s: "_core.ArchSpec", names: NameMap, src: str, dst: str) -> None:
    """A Mamba mixer's tensors (in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj; Jamba's dt, B and C norms)
    under src as lin.*."""
    for part, name in (("in.weight", "in_proj.weight"), ("conv.weight", "conv1d.weight"),
                       ("x.weight", "x_proj.weight"), ("dt.weight", "dt_proj.weight"), ("dt_bias", "dt_proj.bias"),
                       ("A_log", "A_log"), ("D", "D"), ("out.weight", "out_proj.weight")):
        names[dst + "lin." + part] = src + name
    if s.ssm_conv_bias:
        names[dst + "lin.conv.bias"] = src + "conv1d.bias"
    if s.ssm_bcdt_weights:
        for part in ("dt", "b", "c"):
            names[dst + f"lin.{part}_norm.weight"] = src + f"{part}_layernorm.weight"


def _jamba(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """AI21 Jamba (jamba): Mamba mixers (their dt, B and C RMS-normalized with weights) and attention layers
    without positions (one every attn_layer_period, at attn_layer_offset), each with a gated MLP or, every
    expert_layer_period at expert_layer_offset, experts chosen by softmax, their weights not renormalized."""
    c = Config({**JAMBA_DEFAULTS, **cfg.data}, cfg.source)
    _refuse_true(c, ("mamba_proj_bias",), "Jamba")
    _silu_mixer(c, "hidden_act")
    s, names = _as_llama(c, tensor_names, "jamba", JAMBA_DEFAULTS)
    s.pos = _core.PosKind.none
    n = s.n_layers
    period, offset = c.positive("attn_layer_period"), c.get("attn_layer_offset", int)
    e_period, e_offset = c.positive("expert_layer_period"), c.get("expert_layer_offset", int)
    for field, v, p in (("attn_layer_offset", offset, period), ("expert_layer_offset", e_offset, e_period)):
        if not 0 <= v < p:
            raise c.error(field, f"({v}) must be in [0, {p})")
    s.layer_linear = [0 if i % period == offset else 5 for i in range(n)]
    _mamba_sizes(c, s, "mamba_")
    s.ssm_bcdt_eps = s.norm_eps
    s.ssm_bcdt_weights = True
    out: NameMap = {k: v for k, v in names.items() if not k.startswith("layers.")}
    out["norm.weight"] = "model.final_layernorm.weight"
    experts = c.positive("num_experts")
    sparse = [experts > 1 and i % e_period == e_offset for i in range(n)]
    have = set(tensor_names)
    for i in range(n):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        _mixer_or_attention(s, out, i, "pre_ff_layernorm", lambda out, src, dst: mamba_names(s, out, src, dst))
        f = src + "feed_forward."
        if sparse[i]:
            out[dst + "moe.router.weight"] = f + "router.weight"
        else:
            for p in ("gate", "up", "down"):
                out[dst + f"mlp.{p}.weight"] = f + f"{p}_proj.weight"
    if any(sparse):
        _experts(c, s, "num_experts", _REQUIRED)
        s.moe_ffn_size = s.ffn_size
        s.moe_norm_topk = False
        s.layer_moe = [int(x) for x in sparse]
        for i in (i for i in range(n) if sparse[i]):
            expert_names(s, out, f"model.layers.{i}.feed_forward.experts.", f"layers.{i}.moe.experts.", have)
    return s, out


# BambaConfig's defaults where they differ from Llama's
BAMBA_DEFAULTS: Dict[str, Any] = {"vocab_size": 128000, "num_key_value_heads": 8, "rms_norm_eps": 1e-5,
                                  "max_position_embeddings": 262144, "mamba_n_heads": 128, "mamba_d_head": "auto",
                                  "mamba_n_groups": 1, "mamba_d_state": 256, "mamba_d_conv": 4, "mamba_expand": 2,
                                  "mamba_conv_bias": True}


def _bamba(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """IBM Bamba (bamba): Granite 4.0-H's Mamba2 mixers beside attention layers (attn_layer_indices) with rotary on
    half of each head, a gated MLP per layer, no multipliers. (llama.cpp converts it as granitehybrid, rotating whole
    heads: not written as GGUF here.)"""
    c = Config({**BAMBA_DEFAULTS, **cfg.data}, cfg.source)
    _refuse_true(c, ("mamba_proj_bias", "attention_bias", "mlp_bias"), "Bamba")
    _silu_mixer(c, "hidden_act")
    s, names = _as_llama(c, tensor_names, "bamba", BAMBA_DEFAULTS, partial_rotary_factor=0.5)
    n = s.n_layers
    attn = c.data.get("attn_layer_indices") or []
    if not (isinstance(attn, list) and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n
                                            for i in attn)):
        raise c.error("attn_layer_indices", f"expected layer indices in [0, {n}), got {attn!r}"[:200])
    s.layer_linear = [0 if i in attn else 3 for i in range(n)]
    inner = _expanded(c, "mamba_expand", s.hidden_size)
    _ssm_sizes(c, s, "mamba_n_heads", "mamba_d_head", "mamba_d_state", "mamba_n_groups",
               "mamba_d_conv", "mamba_conv_bias", inner, auto_head=True)
    out: NameMap = {k: v for k, v in names.items() if not k.startswith("layers.")}
    out["norm.weight"] = "model.final_layernorm.weight"
    for i in range(n):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        _mixer_or_attention(s, out, i, "pre_ff_layernorm",
                            lambda out, src, dst: mamba2_names(out, src, dst, s.ssm_conv_bias))
        for p in ("gate", "up", "down"):
            out[dst + f"mlp.{p}.weight"] = src + f"feed_forward.{p}_proj.weight"
    return s, out


# JambaConfig's defaults where they differ from Llama's
JAMBA_DEFAULTS: Dict[str, Any] = {"vocab_size": 65536, "num_key_value_heads": 8, "rms_norm_eps": 1e-6,
                                  "max_position_embeddings": 262144, "num_experts": 16, "num_experts_per_tok": 2,
                                  "expert_layer_period": 2, "expert_layer_offset": 1, "attn_layer_period": 8,
                                  "attn_layer_offset": 4, "mamba_d_state": 16, "mamba_d_conv": 4, "mamba_expand": 2,
                                  "mamba_dt_rank": "auto", "mamba_conv_bias": True}


# FalconH1Config's defaults where they differ from Llama's
FALCON_H1_DEFAULTS: Dict[str, Any] = {"rms_norm_eps": 1e-5, "max_position_embeddings": 8192, "mamba_d_ssm": 1024,
                                      "mamba_n_heads": 128, "mamba_d_head": "auto", "mamba_n_groups": 1,
                                      "mamba_d_state": 256, "mamba_d_conv": 4, "mamba_expand": 2,
                                      "mamba_conv_bias": True, "mamba_norm_before_gate": True,
                                      "mamba_rms_norm": False}


def _falcon_h1(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """TII Falcon-H1 (falcon_h1): a Llama whose every layer runs a Mamba2 mixer beside its attention on the same
    normalized input, the outputs added (ArchSpec.ssm_parallel); the mixer's output norm optional
    (mamba_rms_norm, before or after the gate); its many multipliers folded into the weights as llama.cpp's
    converter folds them (the embeddings' and the head's too)."""
    c = Config({**FALCON_H1_DEFAULTS, **cfg.data}, cfg.source)
    _refuse_true(c, ("projectors_bias", "mamba_proj_bias", "attention_bias", "mlp_bias"), "Falcon-H1")
    s, names = _as_llama(c, tensor_names, "falcon_h1", FALCON_H1_DEFAULTS)
    H = s.hidden_size
    inner = c.data.get("mamba_d_ssm")
    inner = _expanded(c, "mamba_expand", H) if inner is None else c.positive("mamba_d_ssm")
    _ssm_sizes(c, s, "mamba_n_heads", "mamba_d_head", "mamba_d_state", "mamba_n_groups",
               "mamba_d_conv", "mamba_conv_bias", inner, auto_head=True)
    s.ssm_parallel = True
    s.ssm_norm = (2 if c.get("mamba_norm_before_gate", bool) else 1) if c.get("mamba_rms_norm", bool) else 0

    def multiplier(field: str, default: float = 1.0) -> float:
        v = c.get(field, float, default)
        if not (v == v and abs(v) != float("inf")):
            raise c.error(field, f"must be a finite number, got {v}")
        return v

    def multipliers(field: str, n: int):
        v = c.data.get(field)
        if v is None:
            return [1.0] * n
        if not (isinstance(v, (list, tuple)) and len(v) == n and
                all(isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")
                    for x in v)):
            raise c.error(field, f"expected {n} finite numbers, got {v!r}")
        return [float(x) for x in v]

    attn_in, key = multiplier("attention_in_multiplier"), multiplier("key_multiplier")
    attn_out, ssm_in, ssm_out = (multiplier("attention_out_multiplier"), multiplier("ssm_in_multiplier"),
                                 multiplier("ssm_out_multiplier"))
    gate_m, down_m = multipliers("mlp_multipliers", 2)
    zxbcdt = multipliers("ssm_multipliers", 5)
    emb, head = multiplier("embedding_multiplier"), multiplier("lm_head_multiplier")
    gs = s.ssm_groups * s.ssm_state
    rows = ([zxbcdt[0]] * inner + [zxbcdt[1]] * inner + [zxbcdt[2]] * gs + [zxbcdt[3]] * gs +
            [zxbcdt[4]] * s.ssm_heads)
    out: NameMap = {"tok_embeddings.weight": Derived("model.embed_tokens.weight", scale=emb),
                    "norm.weight": "model.final_layernorm.weight"}
    if s.tie_embeddings:  # (the head reads the scaled embeddings: its own multiplier over the embeddings')
        if emb == 0:
            raise c.error("embedding_multiplier", "is 0 with a tied head")
        s.logits_scale = head / emb
    else:
        out["lm_head.weight"] = Derived("lm_head.weight", scale=head)
    for i in range(s.n_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        a, f, m = src + "self_attn.", src + "feed_forward.", src + "mamba."
        out[dst + "attn_norm.weight"] = src + "input_layernorm.weight"
        out[dst + "mlp_norm.weight"] = src + "pre_ff_layernorm.weight"
        for p, scale in (("q", attn_in), ("k", attn_in * key), ("v", attn_in), ("o", attn_out)):
            out[dst + f"attn.{p}.weight"] = Derived(a + f"{p}_proj.weight", scale=scale)
        out[dst + "mlp.gate.weight"] = Derived(f + "gate_proj.weight", scale=gate_m)
        out[dst + "mlp.up.weight"] = f + "up_proj.weight"
        out[dst + "mlp.down.weight"] = Derived(f + "down_proj.weight", scale=down_m)
        mamba2_names(out, m, dst, s.ssm_conv_bias)
        out[dst + "lin.in.weight"] = Derived(m + "in_proj.weight", scale=[ssm_in * r for r in rows])
        out[dst + "lin.out.weight"] = Derived(m + "out_proj.weight", scale=ssm_out)
        if not s.ssm_norm:
            del out[dst + "lin.norm.weight"]
    return s, out


# Mamba2Config's and NemotronHConfig's defaults
MAMBA2_DEFAULTS: Dict[str, Any] = {"num_heads": 128, "head_dim": 64, "state_size": 128, "n_groups": 8, "expand": 2,
                                   "conv_kernel": 4, "use_conv_bias": True, "layer_norm_epsilon": 1e-5}


NEMOTRON_H_DEFAULTS: Dict[str, Any] = {
    "num_attention_heads": 32, "num_key_value_heads": 8, "mlp_hidden_act": "relu2", "ssm_state_size": 128,
    "mamba_num_heads": 128, "mamba_head_dim": 64, "n_groups": 8, "conv_kernel": 4, "use_conv_bias": True,
    "layer_norm_epsilon": 1e-5, "max_position_embeddings": 4096, "n_routed_experts": 8}


# Nemotron-H's layer types (layers_block_type, or the older hybrid_override_pattern's letters): (kind, has an MLP)
_NEMOTRON_H_LAYERS = {"M": (3, 0), "linear_attention": (3, 0), "mamba": (3, 0), "*": (0, 0), "full_attention": (0, 0),
                      "attention": (0, 0), "-": (4, 1), "mlp": (4, 1), "E": (4, 1), "moe": (4, 1)}


def _nemotron_h_experts(c: Config, s: "_core.ArchSpec", sparse) -> None:
    """Nemotron 3's mixture-of-experts layers (E / moe): DeepSeek-V3's router (sigmoid, a selection-only bias, the
    best topk_group of n_group groups, renormalized where norm_topk_prob, times routed_scaling_factor), squared-ReLU
    experts without a gate, and a shared one beside them."""
    if c.data.get("moe_latent_size") is not None:
        raise c.error("moe_latent_size", "is set (latent expert projections): not supported yet")
    _experts(c, s, "n_routed_experts", 2)
    s.moe_ffn_size = c.positive("moe_intermediate_size", 7688)
    s.shared_ffn_size = c.positive("moe_shared_expert_intermediate_size", 7688) if \
        c.get("n_shared_experts", int, 1) else 0
    s.moe_sigmoid = s.moe_select_bias = True
    s.moe_norm_topk = c.get("norm_topk_prob", bool, True)
    s.moe_routed_scale = c.get("routed_scaling_factor", float, 1.0)
    s.moe_groups, s.moe_groups_used = c.positive("n_group", 1), c.positive("topk_group", 1)
    s.moe_group_top = 2
    s.layer_moe = [int(x) for x in sparse]


def _nemotron_h(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """NVIDIA Nemotron-H and Nemotron 3 (nemotron_h): each layer one branch, x += branch(rmsnorm(x)): a Mamba2
    mixer, attention without positions, a squared-ReLU MLP or experts (layers_block_type or
    hybrid_override_pattern)."""
    from .archs import _activation

    data = dict(cfg.data)
    for old, new in (("mamba_n_groups", "n_groups"), ("mamba_d_conv", "conv_kernel"),
                     ("mamba_conv_bias", "use_conv_bias"), ("mamba_dt_limit", "time_step_limit"),
                     ("attention_head_dim", "head_dim")):
        if old in data and new not in data:
            data[new] = data[old]
    c = Config({**NEMOTRON_H_DEFAULTS, **data}, cfg.source)
    field = "layers_block_type" if c.data.get("layers_block_type") else "hybrid_override_pattern"
    types = c.data.get(field)
    if isinstance(types, str):
        types = list(types)
    if not (isinstance(types, list) and types and all(isinstance(t, str) and t in _NEMOTRON_H_LAYERS for t in types)):
        raise c.error(field, "expected a list of 'linear_attention' / 'full_attention' / 'mlp' / 'moe' (or a "
                             f"pattern of M, *, -, E), got {c.data.get(field)!r}")
    if c.data.get("num_hidden_layers") not in (None, len(types)):
        raise c.error("num_hidden_layers", f"({c.data['num_hidden_layers']}) differs from the {len(types)} layer types")
    _refuse_true(c, ("use_bias", "mamba_proj_bias"), "Nemotron-H")
    if c.data.get("sliding_window") is not None:
        raise c.error("sliding_window", "is set: not supported for Nemotron-H")
    _silu_mixer(c, "mamba_hidden_act")
    n = len(types)
    prefix = _backbone(tensor_names, "backbone.")
    s = _ssm_only_spec(c, "nemotron_h", n, tensor_names)
    s.n_heads = c.positive("num_attention_heads")
    s.n_kv_heads = c.positive("num_key_value_heads")
    s.head_dim = c.positive("head_dim", s.hidden_size // s.n_heads)
    s.ffn_size = c.positive("intermediate_size")
    s.act = _activation(c, "mlp_hidden_act", "relu2")
    s.gated_mlp = False
    s.mlp_bias = c.get("mlp_bias", bool, False)
    _ssm_sizes(c, s, "mamba_num_heads", "mamba_head_dim", "ssm_state_size", "n_groups", "conv_kernel",
               "use_conv_bias")
    s.layer_linear = [_NEMOTRON_H_LAYERS[t][0] for t in types]
    s.layer_mlp = [_NEMOTRON_H_LAYERS[t][1] for t in types]
    names = _backbone_names(s, prefix)
    sparse = [t in ("E", "moe") for t in types]
    if any(sparse):
        _nemotron_h_experts(c, s, sparse)
    have = set(tensor_names)
    for i, kind in enumerate(s.layer_linear):
        src, dst = f"{prefix}layers.{i}.", f"layers.{i}."
        m = src + "mixer."
        if sparse[i]:
            names[dst + "mlp_norm.weight"] = src + "norm.weight"
            names[dst + "moe.router.weight"] = m + "gate.weight"
            names[dst + "moe.router.select_bias"] = m + "gate.e_score_correction_bias"
            for e in range(s.n_experts):
                for p in ("up", "down"):
                    x = m + f"experts.{p}_proj"
                    names[dst + f"moe.experts.{e}.{p}.weight"] = (Derived(x, index=e) if x in have else
                                                                  m + f"experts.{e}.{p}_proj.weight")
            for p in ("up", "down"):
                names[dst + f"moe.shared.{p}.weight"] = m + f"shared_experts.{p}_proj.weight"
            continue
        names[dst + ("mlp_norm.weight" if kind == 4 else "attn_norm.weight")] = src + "norm.weight"
        if kind == 3:
            mamba2_names(names, m, dst, s.ssm_conv_bias)
        elif kind == 0:
            for p in "qkvo":
                names[dst + f"attn.{p}.weight"] = m + f"{p}_proj.weight"
        else:
            for p in ("up", "down"):
                names[dst + f"mlp.{p}.weight"] = m + f"{p}_proj.weight"
                if s.mlp_bias:
                    names[dst + f"mlp.{p}.bias"] = m + f"{p}_proj.bias"
    return s, names


SSM = {"granitemoehybrid": _granitemoehybrid, "mamba2": _mamba2, "nemotron_h": _nemotron_h, "mamba": _mamba,
       "falcon_mamba": _mamba, "falcon_h1": _falcon_h1, "jamba": _jamba, "bamba": _bamba}
