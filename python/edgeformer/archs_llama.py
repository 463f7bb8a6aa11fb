"""The Llama line of decoders as data: LLaMA, Mistral, Mixtral and the other mixtures of experts (Qwen2/3-MoE, OLMoE,
gpt-oss), Qwen2/3, Phi-3, Gemma 1-3, StarCoder2, StableLM, Granite, OLMo 2, SmolLM3, Cohere. Each builder reads a
config.json (archs.Config) and returns an ArchSpec and the map from canonical weight names to the checkpoint's
(see archs.py)."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, Tuple, Union

from . import _core
from .archs import Config, Derived, NameMap, Stacked, _activation, _FFN, _layer_windows, _prefix, _rope, _window


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


def sparse_layers(s: "_core.ArchSpec", names: NameMap, sparse) -> List[int]:
    """The layers whose MLP is experts (sparse[i]), marked in s.layer_moe where some are not, their dense MLP's
    names dropped."""
    if not all(sparse):
        s.layer_moe = [int(x) for x in sparse]
    for i in (i for i in range(s.n_layers) if sparse[i]):
        for p in ("gate", "up", "down"):
            names.pop(f"layers.{i}.mlp.{p}.weight", None)
            names.pop(f"layers.{i}.mlp.{p}.bias", None)
    return [i for i in range(s.n_layers) if sparse[i]]


def _experts(cfg: Config, s: "_core.ArchSpec", field: str, used_default: int,
             used_field: str = "num_experts_per_tok") -> None:
    """The expert counts: `field` (num_experts or num_local_experts) and used_field, at most as many."""
    s.n_experts = cfg.positive(field)
    s.n_experts_used = cfg.positive(used_field, used_default)
    if s.n_experts_used > s.n_experts:
        raise cfg.error(used_field, f"({s.n_experts_used}) exceeds {field} ({s.n_experts})")


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
    s, names = _llama(Config({"tie_word_embeddings": True, **cfg.data, "model_type": "llama"}, cfg.source),
                      tensor_names)
    s.model_type = "smollm3"
    rope = cfg.data.get("no_rope_layers")
    if rope is None:
        every = cfg.positive("no_rope_layer_interval", 4)
        rope = [int((i + 1) % every != 0) for i in range(s.n_layers)]
    if not isinstance(rope, list) or len(rope) != s.n_layers or any(
            isinstance(v, bool) or v not in (0, 1) for v in rope):
        raise cfg.error("no_rope_layers", f"expected {s.n_layers} flags (1: the layer rotates), got {rope!r}")
    if not all(rope):
        s.layer_nope = [0 if v else 1 for v in rope]
    data = dict(cfg.data)
    if data.get("layer_types") is None and cfg.get("use_sliding_window", bool, False):
        # (transformers' default: the window on the layers without rotary)
        data["layer_types"] = ["full_attention" if r else "sliding_attention" for r in rope]
    _window(Config(data, cfg.source), s)
    return s, names


def _per_head_qk_norms(s: "_core.ArchSpec", names: NameMap, q: str, k: str) -> None:
    """LayerNorms of each head's query and key with weights of their own (layer i's `q` and `k` tensors, formatted
    with the layer's prefix; Stacked where one tensor per head)."""
    s.qk_norm = s.qk_norm_per_head = True
    for i in range(s.n_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        for part, form, heads in (("q", q, s.n_heads), ("k", k, s.n_kv_heads)):
            names[dst + f"attn.{part}_norm.weight"] = (src + form if "{h}" not in form else
                                                       Stacked([src + form.format(h=h) for h in range(heads)]))


def _cohere(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Cohere Command-R (model_type cohere): LayerNorms without bias, attention and MLP in parallel through one
    norm, rotary on interleaved pairs (GPT-J's), a tied head and logits scaled by logit_scale; Command R+ adds
    LayerNorms of each head's query and key (use_qk_norm)."""
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
    if cfg.get("use_qk_norm", bool, False):
        _per_head_qk_norms(s, names, "self_attn.q_norm.weight", "self_attn.k_norm.weight")
    return s, names


def _olmo2(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """OLMo 2 (AI2): a Llama whose norms follow attention and MLP (their outputs, before the residual adds) instead
    of preceding them, with one RMSNorm over all the heads' queries and one over the keys."""
    s, names = _llama(Config({"rms_norm_eps": 1e-5, **cfg.data, "model_type": "llama"}, cfg.source), tensor_names)
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
    data = {**({"rms_norm_eps": 1e-5} if model_type == "olmoe" else {}), **cfg.data, "model_type": _MOE_BASE[model_type]}
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
    _experts(cfg, s, "num_local_experts" if mixtral or "num_experts" not in cfg.data else "num_experts", 2)
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
    for i in sparse_layers(s, names, sparse):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        if mixtral:
            moe = src + "block_sparse_moe."
            names[dst + "moe.router.weight"] = moe + "gate.weight"
            for e in range(s.n_experts):
                for p, w in (("gate", "w1"), ("up", "w3"), ("down", "w2")):
                    names[dst + f"moe.experts.{e}.{p}.weight"] = moe + f"experts.{e}.{w}.weight"
            continue
        qwen_moe_names(s, names, src + "mlp.", dst, set())
    return s, names


def expert_names(s: "_core.ArchSpec", names: NameMap, src: str, dst: str, have,
                 parts: Sequence[str] = ("gate_proj", "up_proj", "down_proj")) -> None:
    """A layer's experts (src: their ``experts.``; dst: ``layers.{i}.moe.experts.``): stacked (gate_up_proj
    [experts, 2 x width, hidden], down_proj) where `have` holds them, as transformers 5 saves them, or one tensor
    each, named by `parts` (gate, up, down)."""
    f = s.moe_ffn_size
    for e in range(s.n_experts):
        x = f"{dst}{e}."
        if src + "gate_up_proj" in have:
            names[x + "gate.weight"] = Derived(src + "gate_up_proj", slice(0, f), index=e)
            names[x + "up.weight"] = Derived(src + "gate_up_proj", slice(f, 2 * f), index=e)
            names[x + "down.weight"] = Derived(src + "down_proj", index=e)
        else:
            for p, w in zip(("gate", "up", "down"), parts):
                names[x + f"{p}.weight"] = src + f"{e}.{w}.weight"


def qwen_moe_names(s: "_core.ArchSpec", names: NameMap, src: str, dst: str, have) -> None:
    """A Qwen MoE layer's router (src: its ``mlp.``), experts and gated shared expert: the experts one tensor each,
    or stacked (gate_up_proj [experts, 2 x width, hidden], down_proj) where `have` holds them, as transformers 5
    saves them."""
    names[dst + "moe.router.weight"] = src + "gate.weight"
    expert_names(s, names, src + "experts.", dst + "moe.experts.", have)
    if s.shared_ffn_size:
        for p in ("gate", "up", "down"):
            names[dst + f"moe.shared.{p}.weight"] = src + f"shared_expert.{p}_proj.weight"
        names[dst + "moe.shared_scale.weight"] = src + "shared_expert_gate.weight"


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

    defaults = {"rms_norm_eps": 1e-5}  # (transformers' defaults where a config leaves them out)
    if cfg.data.get("rope_scaling") is None and cfg.data.get("rope_parameters") is None:
        defaults["rope_parameters"] = {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                                       "truncate": False, "original_max_position_embeddings": 4096,
                                       "rope_theta": cfg.get("rope_theta", float, 150000.0)}
    s, names = _llama(Config({**defaults, **cfg.data, "model_type": "llama",
                              "attention_bias": cfg.get("attention_bias", bool, True)}, cfg.source), tensor_names)
    s.model_type = "gpt_oss"
    # (transformers' default: sliding first, then alternating)
    _layer_windows(cfg, s, ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(s.n_layers)], 128)
    s.attn_sinks = True
    _experts(cfg, s, "num_local_experts", 4)
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


def _granitemoe(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """IBM Granite 3 MoE (model_type granitemoe: 1B-A400M, 3B-A800M): Granite's multipliers over experts in every
    layer, the top num_experts_per_tok router logits softmaxed among themselves (the renormalized softmax), the
    experts stacked in the checkpoint (input_linear [experts, 2 * ffn, hidden]: gate rows, then up rows;
    output_linear [experts, hidden, ffn])."""
    s, names = _granite(Config({**cfg.data, "model_type": "granite"}, cfg.source), tensor_names)
    s.model_type = "granitemoe"
    _experts(cfg, s, "num_local_experts", 2)
    s.moe_ffn_size = s.ffn_size
    s.moe_norm_topk = True
    for i in range(s.n_layers):
        for p in ("gate", "up", "down"):
            names.pop(f"layers.{i}.mlp.{p}.weight", None)
        granite_expert_names(s, names, i)
    return s, names


def granite_expert_names(s: "_core.ArchSpec", names: NameMap, i: int) -> None:
    """Granite MoE's router and experts of layer i, the experts stacked in the checkpoint (block_sparse_moe.
    input_linear [experts, 2 * width, hidden]: gate rows, then up rows; output_linear [experts, hidden, width])."""
    src, dst, f = f"model.layers.{i}.block_sparse_moe.", f"layers.{i}.", s.moe_ffn_size
    names[dst + "moe.router.weight"] = src + "router.layer.weight"
    for e in range(s.n_experts):
        q = f"{dst}moe.experts.{e}."
        names[q + "gate.weight"] = Derived(src + "input_linear.weight", slice(0, f), index=e)
        names[q + "up.weight"] = Derived(src + "input_linear.weight", slice(f, 2 * f), index=e)
        names[q + "down.weight"] = Derived(src + "output_linear.weight", index=e)


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
    (use_parallel_residual) and, in StableLM 2 12B, LayerNorms of each head's query and key (qk_layernorm)."""
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
    if cfg.get("qk_layernorm", bool, False):
        _per_head_qk_norms(s, names, "self_attn.q_layernorm.norms.{h}.weight", "self_attn.k_layernorm.norms.{h}.weight")
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


def _gemma3(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Gemma 3's language model (model_type gemma3_text; gemma3's text_config, its weights under
    language_model.) and Gemma 2: a Llama with GeGLU, embeddings scaled by sqrt(hidden_size), RMSNorms that
    scale by 1 + weight, norms on the attention's and the MLP's outputs, sliding-window layers, and
    query_pre_attn_scalar for the attention scale. Gemma 3 adds per-head q/k norms and a rotary base of the
    sliding layers' own; Gemma 2 soft-caps the attention scores and the logits."""
    gemma2 = cfg.data.get("model_type") == "gemma2"
    # EmbeddingGemma: Gemma 3 as an encoder (full layers see every token, sliding ones |i - j| <= window / 2)
    bidirectional = cfg.get("use_bidirectional_attention", bool, False)
    if bidirectional and gemma2:
        raise cfg.error("use_bidirectional_attention", "must be false for Gemma 2")
    s = _core.ArchSpec()
    s.model_type = "gemma2" if gemma2 else "gemma3_text"
    # (Gemma2Config's defaults: 50 and 30; an explicit null: none)
    for field, attr, default in (("attn_logit_softcapping", "attn_softcap", 50.0),
                                 ("final_logit_softcapping", "logit_softcap", 30.0)):
        cap = None if cfg.data.get(field, 0) is None else cfg.get(field, float, default if gemma2 else None)
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
    # layer types: given, or every sliding_window_pattern-th layer full (Gemma 2: every other layer, from the first)
    pattern = 2 if gemma2 else cfg.positive("sliding_window_pattern", cfg.data.get("_sliding_window_pattern", 6))
    types = _layer_windows(cfg, s, ["sliding_attention" if (i + 1) % pattern else "full_attention"
                                    for i in range(s.n_layers)], 4096)
    if bidirectional:  # (transformers halves the configured window and bounds it exclusively, both ways)
        s.kind = _core.ModelKind.encoder
        s.tie_embeddings = False  # (no head: EmbeddingGemma's checkpoints are Gemma3TextModel's)
        s.layer_windows = [w // 2 + 1 if w else 0 for w in s.layer_windows]
    if gemma2:  # one rotary table for all layers
        _rope(cfg, s)
        return s, _gemma_names(s, tensor_names, not cfg.data.get("_gguf_norms_plus_one"))
    local = cfg.get("rope_local_base_freq", float, 10_000.0)
    layer_type_ropes(cfg, s, types, 1_000_000.0, 10_000.0, {"rope_type": "default", "rope_theta": local})
    names = _gemma_names(s, tensor_names, not cfg.data.get("_gguf_norms_plus_one"))
    if bidirectional:
        names.pop("lm_head.weight", None)
    return s, names


def layer_type_ropes(cfg: Config, s: "_core.ArchSpec", types: Sequence[str], full_theta: float, local_theta: float,
                     legacy_local: Dict[str, Any]) -> None:
    """A rotary table per layer type (Gemma 3, OLMo 3): the sliding layers' (s.layer_rope 1) and the full ones'.
    transformers 5's rope_parameters keyed by layer type, each with its rope_theta (default full_theta /
    local_theta); older configs: rope_theta and rope_scaling for the full layers, legacy_local for the sliding."""
    s.layer_rope = [1 if t == "sliding_attention" else 0 for t in types]
    params = cfg.data.get("rope_parameters")
    if isinstance(params, dict) and ("full_attention" in params or "sliding_attention" in params):
        full = {"rope_theta": full_theta, **(params.get("full_attention") or {})}
        local = {"rope_theta": local_theta, **(params.get("sliding_attention") or {})}
    else:
        scaling = cfg.data.get("rope_scaling") or {}
        full = {**(scaling if isinstance(scaling, dict) else {}), "rope_theta": cfg.get("rope_theta", float, full_theta)}
        local = legacy_local
    ropes = []
    for p in (full, local):  # (each on a spec of its own: pybind hands out the member itself, not a copy)
        sub = Config({**{k: v for k, v in cfg.data.items() if k not in ("rope_scaling", "rope_parameters")},
                      "rope_parameters": p}, cfg.source)
        scratch = _core.ArchSpec()
        scratch.head_dim = s.head_dim
        _rope(sub, scratch)
        ropes.append(scratch.rope)
    s.rope, s.rope_local = ropes


def _gemma_names(s: "_core.ArchSpec", tensor_names, add_one: bool = True) -> NameMap:
    """Gemma 2 / 3's tensors; every norm weight plus one (they scale by 1 + weight), unless the weights have it
    already (llama.cpp's GGUF files: add_one False)."""
    names: NameMap = {}

    def norm(src: str) -> Union[str, Derived]:
        return Derived(src, add=1.0) if add_one else src

    pre = _prefix(tensor_names, ["model.", "model.language_model.", "language_model.model.", ""], "embed_tokens.weight")
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


