"""Llama-line decoders of 2024-2025 as data over the generic block: ERNIE 4.5 (dense and MoE), EXAONE 4, GLM-4
(glm, glm4), GLM-4.5 (glm4_moe), InternLM3 and HunYuan (dense). Each builder reads a config.json (archs.Config) with the defaults of its
transformers config class and returns an ArchSpec and the map from canonical weight names to the checkpoint's
(see archs.py)."""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import numpy as np

from . import _core
from .archs import _FFN, Config, Derived, NameMap, _layer_types_ok, _per_head_rows
from .archs_llama import _llama, sparse_layers


# the fields whose defaults in the families' transformers config classes differ from Llama's
CLASS_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "bitnet": {"vocab_size": 128256, "hidden_size": 2560, "intermediate_size": 6912, "num_hidden_layers": 30,
               "num_attention_heads": 20, "num_key_value_heads": 5, "hidden_act": "relu2",
               "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
               "tie_word_embeddings": False},
    "ernie4_5": {"tie_word_embeddings": True, "head_dim": 128, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
                 "rope_theta": 500000.0, "max_position_embeddings": 131072},
    "exaone4": {"rms_norm_eps": 1e-5, "max_position_embeddings": 2048},
    "glm": {"partial_rotary_factor": 0.5, "rms_norm_eps": 1.5625e-07, "attention_bias": True, "head_dim": 128,
            "num_key_value_heads": 2, "max_position_embeddings": 131072},
    "internlm3": {"head_dim": 128, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "max_position_embeddings": 32768},
    "hunyuan_v1_dense": {"rms_norm_eps": 1e-5, "max_position_embeddings": 2048},
}
CLASS_DEFAULTS["glm4"] = CLASS_DEFAULTS["glm"]
CLASS_DEFAULTS["internlm2"] = {"rms_norm_eps": 1e-6, "max_position_embeddings": 2048}
CLASS_DEFAULTS["ernie4_5_moe"] = {"tie_word_embeddings": True, "num_key_value_heads": 4, "rms_norm_eps": 1e-5,
                                  "rope_theta": 500000.0, "max_position_embeddings": 131072}
CLASS_DEFAULTS["deepseek_v2"] = {"rms_norm_eps": 1e-6, "q_lora_rank": 1536, "n_routed_experts": 64,
                                 "moe_intermediate_size": 1407, "n_shared_experts": 2, "routed_scaling_factor": 1.0,
                                 "first_k_dense_replace": 0, "max_position_embeddings": 2048}
CLASS_DEFAULTS["deepseek_v3"] = {"rms_norm_eps": 1e-6, "q_lora_rank": 1536, "n_routed_experts": 256,
                                 "num_experts_per_tok": 8, "moe_intermediate_size": 2048, "n_shared_experts": 1,
                                 "routed_scaling_factor": 2.5, "first_k_dense_replace": 3, "n_group": 8,
                                 "topk_group": 4, "max_position_embeddings": 4096}
CLASS_DEFAULTS["glm4_moe_lite"] = {"rms_norm_eps": 1e-5, "q_lora_rank": 768, "n_routed_experts": 64,
                                   "num_experts_per_tok": 4, "moe_intermediate_size": 1536, "n_shared_experts": 1,
                                   "routed_scaling_factor": 1.8, "first_k_dense_replace": 1, "n_group": 1,
                                   "topk_group": 1, "max_position_embeddings": 202752, "kv_lora_rank": 512,
                                   "qk_nope_head_dim": 192, "v_head_dim": 256}
CLASS_DEFAULTS["glm4_moe"] = {"partial_rotary_factor": 0.5, "rms_norm_eps": 1e-5, "num_key_value_heads": 8,
                              "max_position_embeddings": 131072}


def _as_llama(cfg: Config, tensor_names, model_type: str, defaults: Optional[Dict[str, Any]] = None, **forced: Any):
    """_llama over the config with its family's class defaults (CLASS_DEFAULTS[model_type] unless given) under it
    and `forced` fields over it."""
    data = {**(CLASS_DEFAULTS[model_type] if defaults is None else defaults), **cfg.data, "model_type": "llama",
            **forced}
    s, names = _llama(Config(data, cfg.source), tensor_names)
    s.model_type = model_type
    return s, names


def _interleaved(s: "_core.ArchSpec") -> None:
    """Rotary on interleaved pairs (2i, 2i + 1): GPT-J's, llama.cpp's "normal" rope."""
    r = s.rope
    r.style = _core.RopeStyle.interleaved
    s.rope = r


def _ernie4_5(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Baidu ERNIE 4.5 (the dense 0.3B): a Llama with rotary on interleaved pairs, biases on every projection where
    use_bias, and a tied head by default."""
    bias = cfg.get("use_bias", bool, False)
    s, names = _as_llama(cfg, tensor_names, "ernie4_5", attention_bias=bias, mlp_bias=bias)
    _interleaved(s)
    return s, names


def _shared_width(cfg: Config, s: "_core.ArchSpec", field: str, default: int) -> int:
    """The shared expert's width: `field` (a count of expert widths, null: none) times moe_ffn_size."""
    n = cfg.get(field, int, default) or 0
    if n < 0 or s.moe_ffn_size * n > _FFN:
        raise cfg.error(field, f"must be in [0, {_FFN // s.moe_ffn_size}] (widths of {s.moe_ffn_size}), got {n}")
    return s.moe_ffn_size * n


def _sparse_layers(s: "_core.ArchSpec", names: NameMap, sparse, select_bias) -> None:
    """Layers whose MLP is experts (sparse[i]), under DeepSeek's names (ERNIE 4.5 and GLM-4.5 share them): the
    router mlp.gate, its selection bias (select_bias(i), where not None), each expert's gated MLP mlp.experts.{e}.{gate,up,down}_proj
    and the shared expert's mlp.shared_experts.*."""
    for i in sparse_layers(s, names, sparse):
        src, dst = f"model.layers.{i}.mlp.", f"layers.{i}."
        names[dst + "moe.router.weight"] = src + "gate.weight"
        if select_bias is not None:
            names[dst + "moe.router.select_bias"] = select_bias(i)
        for p in ("gate", "up", "down"):
            for e in range(s.n_experts):
                names[dst + f"moe.experts.{e}.{p}.weight"] = src + f"experts.{e}.{p}_proj.weight"
            if s.shared_ffn_size:
                names[dst + f"moe.shared.{p}.weight"] = src + f"shared_experts.{p}_proj.weight"
                if s.mlp_bias:  # (ERNIE 4.5's use_bias: the shared expert's biases, not the experts')
                    names[dst + f"moe.shared.{p}.bias"] = src + f"shared_experts.{p}_proj.bias"


def _ernie4_5_moe(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """ERNIE 4.5 MoE (21B-A3B, 300B-A47B): ERNIE 4.5's attention; from moe_layer_start_index on (every
    moe_layer_interval-th layer) 64 experts of which the 6 best by softmax probability plus a selection bias
    (e_score_correction_bias, left out of the weights) are chosen, their weights renormalized, and an ungated shared
    expert (moe_num_shared_experts widths)."""
    bias = cfg.get("use_bias", bool, False)
    s, names = _as_llama(cfg, tensor_names, "ernie4_5_moe", attention_bias=bias, mlp_bias=bias)
    _interleaved(s)
    field = "moe_num_experts" if "moe_num_experts" in cfg.data else "num_experts"
    s.n_experts = cfg.positive(field, 64)
    s.n_experts_used = cfg.positive("moe_k" if "moe_k" in cfg.data else "num_experts_per_tok", 6)
    if s.n_experts_used > s.n_experts:
        raise cfg.error("moe_k", f"({s.n_experts_used}) exceeds {field} ({s.n_experts})")
    s.moe_ffn_size = cfg.positive("moe_intermediate_size", 1536)
    s.shared_ffn_size = _shared_width(cfg, s, "moe_num_shared_experts", 2)
    s.moe_norm_topk = s.moe_select_bias = True
    if bias:  # (the MoE model's head has a bias where its projections do)
        s.lm_head_bias = True
        names["lm_head.bias"] = "lm_head.bias"
    start, end = cfg.get("moe_layer_start_index", int, 1), cfg.get("moe_layer_end_index", int, -1)
    end = s.n_layers - 1 if end == -1 else end
    every = cfg.positive("moe_layer_interval", 1)
    sparse = [(i + 1) % every == 0 and start <= i <= end for i in range(s.n_layers)]
    def select_bias(i):  # ([1, experts]; transformers 5 keeps it under the router)
        names_ = (f"model.layers.{i}.mlp.moe_statics.e_score_correction_bias",
                  f"model.layers.{i}.mlp.gate.moe_statics.e_score_correction_bias")
        return Derived(next((n for n in names_ if n in tensor_names), names_[0]), index=0)

    _sparse_layers(s, names, sparse, select_bias)
    return s, names


def _glm4_moe(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """GLM-4.5 / 4.6 (Air): a Llama with q/k/v biases, rotary on the first half of each head, optional per-head q/k
    norms (use_qk_norm); after first_k_dense_replace dense layers, n_routed_experts experts chosen DeepSeek-V3's
    way: sigmoid scores plus a selection bias (e_score_correction_bias), among the topk_group best of n_group groups
    (a group's score: its two best), weights renormalized (norm_topk_prob) and scaled by routed_scaling_factor;
    an ungated shared expert."""
    s, names = _as_llama(cfg, tensor_names, "glm4_moe")
    s.attn_out_bias = False
    for i in range(s.n_layers):
        names.pop(f"layers.{i}.attn.o.bias", None)
    if cfg.get("use_qk_norm", bool, False):
        s.qk_norm = True
        for i in range(s.n_layers):
            src, dst = f"model.layers.{i}.", f"layers.{i}."
            names[dst + "attn.q_norm.weight"] = src + "self_attn.q_norm.weight"
            names[dst + "attn.k_norm.weight"] = src + "self_attn.k_norm.weight"
    s.n_experts = cfg.positive("n_routed_experts", 128)
    s.n_experts_used = cfg.positive("num_experts_per_tok", 8)
    if s.n_experts_used > s.n_experts:
        raise cfg.error("num_experts_per_tok", f"({s.n_experts_used}) exceeds n_routed_experts ({s.n_experts})")
    s.moe_ffn_size = cfg.positive("moe_intermediate_size", 1408)
    s.shared_ffn_size = _shared_width(cfg, s, "n_shared_experts", 1)
    s.moe_sigmoid = s.moe_select_bias = True
    s.moe_norm_topk = cfg.get("norm_topk_prob", bool, True)
    s.moe_routed_scale = cfg.get("routed_scaling_factor", float, 1.0)
    s.moe_groups, s.moe_groups_used = cfg.positive("n_group", 1), cfg.positive("topk_group", 1)
    first = cfg.get("first_k_dense_replace", int, 1)
    _sparse_layers(s, names, [i >= first for i in range(s.n_layers)],
                   lambda i: f"model.layers.{i}.mlp.gate.e_score_correction_bias")
    return s, names


class _RowsT(Derived):
    """Rows of a checkpoint tensor, transposed (DeepSeek's k_b: a head's key rows of kv_b_proj, [nope, kv_lora], as
    the [kv_lora, nope] matrix that takes a query into the latent space)."""

    def build(self, checkpoint):
        rows = Derived(self.src, self.rows)
        rows.fp8_block = self.fp8_block
        a, dt, src = rows.build(checkpoint)
        return np.ascontiguousarray(a.T), dt, src


def _deepseek(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """DeepSeek-V2 (Lite, Coder-V2), V3 (V3, R1, Moonlight, Kimi) and GLM-4.7-Flash (glm4_moe_lite): multi-head latent attention (ArchSpec::mla:
    queries through q_a / q_b or q, keys and values from one kv_lora_rank-wide latent and a shared rotary key,
    rotary on interleaved pairs (V3: rope_interleave) and yarn's mscale squared in the softmax scale); after
    first_k_dense_replace dense layers, experts chosen by softmax (V2: among the best groups where
    group_limited_greedy, a group scored by its best) or by sigmoid plus a selection bias among the best groups (V3:
    a group scored by its two best), weights renormalized (V3's norm_topk_prob) and scaled by
    routed_scaling_factor; an ungated shared expert of n_shared_experts widths."""
    mt = cfg.get("model_type", str)
    v3 = mt != "deepseek_v2"
    for field in ("attention_bias", "mlp_bias"):
        if cfg.get(field, bool, False):
            raise cfg.error(field, "is true: DeepSeek's attention and MLPs without biases only")
    dr = cfg.positive("qk_rope_head_dim", 64)
    s, names = _as_llama(cfg, tensor_names, mt, head_dim=dr, num_key_value_heads=1,
                         partial_rotary_factor=1.0)
    dflt = CLASS_DEFAULTS[mt]
    nh, Lk = s.n_heads, cfg.positive("kv_lora_rank", dflt.get("kv_lora_rank", 512))
    q_lora = cfg.data.get("q_lora_rank", dflt["q_lora_rank"])
    s.mla_kv_lora, s.mla_q_lora = Lk, cfg.positive("q_lora_rank", q_lora) if q_lora is not None else 0
    s.mla_nope = cfg.positive("qk_nope_head_dim", dflt.get("qk_nope_head_dim", 128))
    s.mla_v = cfg.positive("v_head_dim", dflt.get("v_head_dim", 128))
    s.head_dim, s.v_head_dim = Lk + dr, Lk
    r = s.rope
    r.rotary_dim = dr
    if not v3 or cfg.get("rope_interleave", bool, True):
        r.style = _core.RopeStyle.interleaved
    s.rope = r
    scale = (s.mla_nope + dr) ** -0.5
    field = "rope_parameters" if cfg.data.get("rope_parameters") is not None else "rope_scaling"
    params = cfg.get(field, dict, {}) or {}
    if params.get("rope_type", params.get("type", "default")) != "default" and params.get("mscale_all_dim"):
        factor = cfg.get("factor", float, data=params, prefix=field + ".")
        m = 1.0 if factor <= 1 else 0.1 * cfg.get("mscale_all_dim", float, data=params, prefix=field + ".") * \
            math.log(factor) + 1.0
        scale *= m * m
    s.attn_scale = scale
    dv = s.mla_nope + s.mla_v  # (a head's rows of kv_b_proj: its key part, then its value part)
    for i in range(s.n_layers):
        src, dst = f"model.layers.{i}.self_attn.", f"layers.{i}.attn."
        for p in "qkv":
            del names[dst + f"{p}.weight"]
        if s.mla_q_lora:
            names[dst + "q_a.weight"] = src + "q_a_proj.weight"
            names[dst + "q_a_norm.weight"] = src + "q_a_layernorm.weight"
            names[dst + "q_b.weight"] = src + "q_b_proj.weight"
        else:
            names[dst + "q.weight"] = src + "q_proj.weight"
        names[dst + "kv_a.weight"] = src + "kv_a_proj_with_mqa.weight"
        names[dst + "kv_a_norm.weight"] = src + "kv_a_layernorm.weight"
        kv_b = src + "kv_b_proj.weight"
        for h in range(nh):
            names[dst + f"k_b.{h}.weight"] = _RowsT(kv_b, slice(h * dv, h * dv + s.mla_nope))
            names[dst + f"v_b.{h}.weight"] = Derived(kv_b, slice(h * dv + s.mla_nope, (h + 1) * dv))
    s.n_experts = cfg.positive("n_routed_experts", CLASS_DEFAULTS[mt]["n_routed_experts"])
    used = CLASS_DEFAULTS[mt].get("num_experts_per_tok")  # (V2's class has none: the config must say)
    s.n_experts_used = cfg.positive("num_experts_per_tok") if used is None else cfg.positive("num_experts_per_tok", used)
    if s.n_experts_used > s.n_experts:
        raise cfg.error("num_experts_per_tok", f"({s.n_experts_used}) exceeds n_routed_experts ({s.n_experts})")
    s.moe_ffn_size = cfg.positive("moe_intermediate_size", CLASS_DEFAULTS[mt]["moe_intermediate_size"])
    s.shared_ffn_size = _shared_width(cfg, s, "n_shared_experts", CLASS_DEFAULTS[mt]["n_shared_experts"])
    s.moe_routed_scale = cfg.get("routed_scaling_factor", float, CLASS_DEFAULTS[mt]["routed_scaling_factor"])
    method = cfg.get("topk_method", str, "greedy")
    if v3:  # (transformers' V3: noaux_tc whatever topk_method says)
        s.moe_sigmoid = s.moe_select_bias = True
        s.moe_norm_topk = cfg.get("norm_topk_prob", bool, True)
        s.moe_group_top = 2
    else:
        if method not in ("greedy", "group_limited_greedy"):
            raise cfg.error("topk_method", f"names {method!r}: DeepSeek-V2 chooses 'greedy' or 'group_limited_greedy'")
        s.moe_norm_topk = False  # (transformers' V2 scales, never renormalizes)
        s.moe_group_top = 1
    if v3 or method == "group_limited_greedy":
        s.moe_groups = cfg.positive("n_group", CLASS_DEFAULTS[mt].get("n_group", 1))
        s.moe_groups_used = cfg.positive("topk_group", CLASS_DEFAULTS[mt].get("topk_group", 1))
    first = cfg.get("first_k_dense_replace", int, CLASS_DEFAULTS[mt]["first_k_dense_replace"])
    sparse = [i >= first for i in range(s.n_layers)]
    if mt == "glm4_moe_lite":  # (GLM-4.7-Flash: the layers' kinds listed; by default the first dense)
        kinds = cfg.data.get("mlp_layer_types") or ["dense"] + ["sparse"] * (s.n_layers - 1)
        if not isinstance(kinds, list) or len(kinds) != s.n_layers or any(k not in ("dense", "sparse") for k in kinds):
            raise cfg.error("mlp_layer_types", f"expected {s.n_layers} of 'dense' / 'sparse'")
        sparse = [k == "sparse" for k in kinds]
    _sparse_layers(s, names, sparse,
                   (lambda i: f"model.layers.{i}.mlp.gate.e_score_correction_bias") if v3 else None)
    return s, names


def _exaone4_layers(cfg: Config, n_layers: int):
    """EXAONE 4's layer types: layer_types, or every sliding_window_pattern-th layer global (the others sliding);
    None where there is no window."""
    if cfg.data.get("sliding_window", 4096) is None:  # (absent: the config class's 4096; null: no window)
        return None
    types = cfg.data.get("layer_types")
    if types is None:
        pattern = cfg.data.get("sliding_window_pattern", 4)
        if isinstance(pattern, bool) or not isinstance(pattern, int) or pattern <= 0:
            raise cfg.error("sliding_window_pattern", f"must be a positive integer where layer_types is absent, "
                                                      f"got {pattern!r}")
        types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n_layers)]
    if not _layer_types_ok(types, n_layers):
        raise cfg.error("layer_types", f"expected {n_layers} of 'sliding_attention' / 'full_attention'")
    return types


def _exaone4(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """LG EXAONE 4.0: norms after attention and MLP only (OLMo 2's block), per-head q/k RMSNorms before rotary, and
    with a sliding window (layer_types, or 3 sliding layers to 1 global) rotary on the sliding layers only: the
    global ones are NoPE."""
    s, names = _as_llama(cfg, tensor_names, "exaone4")
    s.pre_norms, s.post_norms = False, True
    s.qk_norm = True
    for i in range(s.n_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        del names[dst + "attn_norm.weight"], names[dst + "mlp_norm.weight"]
        names[dst + "post_attn_norm.weight"] = src + "post_attention_layernorm.weight"
        names[dst + "post_mlp_norm.weight"] = src + "post_feedforward_layernorm.weight"
        names[dst + "attn.q_norm.weight"] = src + "self_attn.q_norm.weight"
        names[dst + "attn.k_norm.weight"] = src + "self_attn.k_norm.weight"
    types = _exaone4_layers(cfg, s.n_layers)
    if types is not None:
        w = cfg.positive("sliding_window", 4096)
        s.layer_windows = [w if t == "sliding_attention" else 0 for t in types]
        if "full_attention" in types:
            s.layer_nope = [int(t == "full_attention") for t in types]
    return s, names


def _glm(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Zhipu GLM-4 (model_type glm: GLM-4-9B-0414's predecessor, glm-4-9b-chat-hf) and GLM-4-0414 (glm4: adds
    norms after attention and MLP, Gemma 2's sandwich): a Llama with biases on q, k and v, rotary on interleaved
    pairs of the first half of each head, and gate and up rows in one matrix (gate_up_proj)."""
    s, names = _as_llama(cfg, tensor_names, cfg.get("model_type", str))
    s.attn_out_bias = False
    _interleaved(s)
    f = s.ffn_size
    for i in range(s.n_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        names.pop(dst + "attn.o.bias", None)
        gu = src + "mlp.gate_up_proj.weight"
        names[dst + "mlp.gate.weight"] = Derived(gu, slice(0, f))
        names[dst + "mlp.up.weight"] = Derived(gu, slice(f, 2 * f))
        if s.model_type == "glm4":
            names[dst + "post_attn_norm.weight"] = src + "post_self_attn_layernorm.weight"
            names[dst + "post_mlp_norm.weight"] = src + "post_mlp_layernorm.weight"
    s.post_norms = s.model_type == "glm4"
    return s, names


def _internlm3(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Shanghai AI Lab InternLM3: a Llama (transformers runs it as one) whose config names the biases qkv_bias
    (q, k, v and o) and bias (the MLP's)."""
    aliases = {k: cfg.data[k] for k in ("qkv_bias", "bias") if k in cfg.data}
    forced = {}
    if "qkv_bias" in aliases:
        forced["attention_bias"] = cfg.get("qkv_bias", bool)
    if "bias" in aliases:
        forced["mlp_bias"] = cfg.get("bias", bool)
    return _as_llama(cfg, tensor_names, "internlm3", **forced)


def _internlm2(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """InternLM2 / 2.5 (trust_remote_code checkpoints): a Llama under other names whose q, k and v rows are one
    matrix (attention.wqkv) laid out per kv group: the group's query heads, then its key head, then its value head;
    `bias` puts biases on every projection."""
    bias = cfg.get("bias", bool, False)
    s, _ = _as_llama(cfg, tensor_names, "internlm2", attention_bias=bias, mlp_bias=bias)
    nkv, group, hd = s.n_kv_heads, s.n_heads // s.n_kv_heads, s.head_dim
    names: NameMap = {"tok_embeddings.weight": "model.tok_embeddings.weight", "norm.weight": "model.norm.weight"}
    if not s.tie_embeddings:
        names["lm_head.weight"] = "output.weight"
    for i in range(s.n_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        names[dst + "attn_norm.weight"] = src + "attention_norm.weight"
        names[dst + "mlp_norm.weight"] = src + "ffn_norm.weight"
        for p, picks in (("q", range(group)), ("k", [group]), ("v", [group + 1])):
            rows = _per_head_rows(nkv, group + 2, hd, list(picks))
            names[dst + f"attn.{p}.weight"] = Derived(src + "attention.wqkv.weight", rows)
            if bias:
                names[dst + f"attn.{p}.bias"] = Derived(src + "attention.wqkv.bias", rows)
        names[dst + "attn.o.weight"] = src + "attention.wo.weight"
        for p, w in (("gate", "w1"), ("up", "w3"), ("down", "w2")):
            names[dst + f"mlp.{p}.weight"] = src + f"feed_forward.{w}.weight"
            if bias:
                names[dst + f"mlp.{p}.bias"] = src + f"feed_forward.{w}.bias"
        if bias:
            names[dst + "attn.o.bias"] = src + "attention.wo.bias"
    return s, names


def _hunyuan_dense(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Tencent HunYuan (dense: Hunyuan-0.5B/1.8B/4B/7B): a Llama whose per-head q/k RMSNorms (query_layernorm,
    key_layernorm) follow rotary, and whose "dynamic" rope with an alpha is NTK-alpha: a fixed base
    rope_theta * alpha ** (head_dim / (head_dim - 2)), whatever the length."""
    field = "rope_parameters" if cfg.data.get("rope_parameters") is not None else "rope_scaling"
    params = cfg.get(field, dict, {}) or {}
    alpha = None
    data = dict(cfg.data)
    if params.get("rope_type", params.get("type")) == "dynamic" and params.get("alpha"):
        alpha = cfg.get("alpha", float, data=params, prefix=field + ".")
        if alpha <= 0:
            raise cfg.error(field + ".alpha", f"must be positive, got {alpha}")
        data[field] = {k: v for k, v in params.items() if k not in ("rope_type", "type", "alpha", "factor")}
    s, names = _as_llama(Config(data, cfg.source), tensor_names, "hunyuan_v1_dense")
    if alpha is not None:
        if s.head_dim <= 2:
            raise cfg.error(field + ".alpha", f"NTK-alpha rotary needs heads wider than 2, got head_dim {s.head_dim}")
        r = s.rope
        try:
            theta = r.theta * alpha ** (s.head_dim / (s.head_dim - 2))
        except OverflowError:
            theta = math.inf
        if not 0 < theta < 3.4e38:  # (the base is a float32)
            raise cfg.error(field + ".alpha", f"({alpha}) makes a rotary base of {theta} (not a finite float32)")
        r.theta = theta
        s.rope = r
    s.qk_norm = s.qk_norm_after_rope = True
    for i in range(s.n_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        names[dst + "attn.q_norm.weight"] = src + "self_attn.query_layernorm.weight"
        names[dst + "attn.k_norm.weight"] = src + "self_attn.key_layernorm.weight"
    return s, names


RECENT = {
    "ernie4_5": _ernie4_5,
    "exaone4": _exaone4,
    "glm": _glm,
    "glm4": _glm,
    "internlm3": _internlm3,
    "internlm2": _internlm2,
    "hunyuan_v1_dense": _hunyuan_dense,
    "ernie4_5_moe": _ernie4_5_moe,
    "glm4_moe": _glm4_moe,
    "deepseek_v2": _deepseek,
    "deepseek_v3": _deepseek,
    "glm4_moe_lite": _deepseek,  # (GLM-4.7-Flash: DeepSeek-V3's attention and router)
}
