"""Llama-line decoders of 2024-2025 as data over the generic block: ERNIE 4.5 (dense), EXAONE 4, GLM-4 (glm,
glm4), InternLM3 and HunYuan (dense). Each builder reads a config.json (archs.Config) with the defaults of its
transformers config class and returns an ArchSpec and the map from canonical weight names to the checkpoint's
(see archs.py)."""

from __future__ import annotations

from typing import Any, Dict, Tuple

from . import _core
from .archs import Config, Derived, NameMap, _layer_types_ok
from .archs_llama import _llama


def _as_llama(cfg: Config, tensor_names, model_type: str, defaults: Dict[str, Any], **forced: Any):
    """_llama over the config with the family's class defaults under it and `forced` fields over it."""
    s, names = _llama(Config({**defaults, **cfg.data, "model_type": "llama", **forced}, cfg.source), tensor_names)
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
    s, names = _as_llama(cfg, tensor_names, "ernie4_5",
                         {"tie_word_embeddings": True, "head_dim": 128, "num_key_value_heads": 2,
                          "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 131072},
                         attention_bias=bias, mlp_bias=bias)
    _interleaved(s)
    return s, names


def _exaone4_layers(cfg: Config, n_layers: int):
    """EXAONE 4's layer types: layer_types, or every sliding_window_pattern-th layer global (the others sliding);
    None where there is no window."""
    if cfg.data.get("sliding_window") is None:
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
    s, names = _as_llama(cfg, tensor_names, "exaone4", {"rms_norm_eps": 1e-5, "max_position_embeddings": 2048})
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
        w = cfg.positive("sliding_window")
        s.layer_windows = [w if t == "sliding_attention" else 0 for t in types]
        if "full_attention" in types:
            s.layer_nope = [int(t == "full_attention") for t in types]
    return s, names


def _glm(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Zhipu GLM-4 (model_type glm: GLM-4-9B-0414's predecessor, glm-4-9b-chat-hf) and GLM-4-0414 (glm4: adds
    norms after attention and MLP, Gemma 2's sandwich): a Llama with biases on q, k and v, rotary on interleaved
    pairs of the first half of each head, and gate and up rows in one matrix (gate_up_proj)."""
    s, names = _as_llama(cfg, tensor_names, cfg.get("model_type", str),
                         {"partial_rotary_factor": 0.5, "rms_norm_eps": 1.5625e-07, "attention_bias": True,
                          "head_dim": 128, "num_key_value_heads": 2, "max_position_embeddings": 131072})
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
    return _as_llama(cfg, tensor_names, "internlm3", {"head_dim": 128, "num_key_value_heads": 2,
                                                      "rms_norm_eps": 1e-5, "max_position_embeddings": 32768},
                     **forced)


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
    s, names = _as_llama(Config(data, cfg.source), tensor_names, "hunyuan_v1_dense",
                         {"rms_norm_eps": 1e-5, "max_position_embeddings": 2048})
    if alpha is not None:
        r = s.rope
        r.theta = r.theta * alpha ** (s.head_dim / (s.head_dim - 2))
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
    "hunyuan_v1_dense": _hunyuan_dense,
}
