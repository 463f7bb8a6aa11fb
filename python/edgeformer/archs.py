"""Architectures as data: a checkpoint's config.json becomes an ArchSpec plus a map from the engine's
canonical weight names to the checkpoint's tensor names.

Canonical names (what the C++ model asks for)::

    tok_embeddings.weight  norm.weight  norm.bias  lm_head.weight
    layers.{i}.attn_norm.{weight,bias}   layers.{i}.mlp_norm.{weight,bias}
    layers.{i}.attn.{q,k,v,o}.{weight,bias}
    layers.{i}.mlp.{gate,up,down}.{weight,bias}

Adding an architecture is adding a builder to ``ARCHS``: read the config, fill the spec, name the tensors.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Tuple

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
    if rtype == "yarn":
        orig = p("original_max_position_embeddings", int, None)
        if orig is None:
            orig = cfg.get("max_position_embeddings", int)
        r.original_max_position = orig
        factor = p("factor", float, None)
        r.factor = factor if factor is not None else cfg.get("max_position_embeddings", int) / orig
        r.attention_factor = p("attention_factor", float, 0.0)
        r.mscale = p("mscale", float, 0.0)
        r.mscale_all_dim = p("mscale_all_dim", float, 0.0)
        r.beta_fast = p("beta_fast", float, 32.0)
        r.beta_slow = p("beta_slow", float, 1.0)
        r.truncate = p("truncate", bool, True)
    spec.rope = r


def _llama(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", Dict[str, str]]:
    """LLaMA 1/2/3, Vicuna, XGen (model_type llama) and Mistral (llama + sliding window)."""
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
            if s.attn_bias:
                names[dst + f"attn.{p}.bias"] = src + f"self_attn.{p}_proj.bias"
        for p in ("gate", "up", "down"):
            names[dst + f"mlp.{p}.weight"] = src + f"mlp.{p}_proj.weight"
            if s.mlp_bias:
                names[dst + f"mlp.{p}.bias"] = src + f"mlp.{p}_proj.bias"
    return s, names


# model_type -> builder(config, tensor names present) -> (ArchSpec, canonical -> checkpoint name)
ARCHS: Dict[str, Callable[[Config, Any], Tuple["_core.ArchSpec", Dict[str, str]]]] = {
    "llama": _llama,
    "mistral": _llama,
}


def spec_from_config(data: Dict[str, Any], source: str, tensor_names=()) -> Tuple["_core.ArchSpec", Dict[str, str]]:
    cfg = Config(data, source)
    model_type = cfg.get("model_type", str)
    if model_type not in ARCHS:
        raise cfg.error("model_type", f"names an unsupported architecture {model_type!r} (supported: {', '.join(sorted(ARCHS))})")
    spec, names = ARCHS[model_type](cfg, tensor_names)
    try:
        spec.validate()
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    return spec, names
