"""Small variations on families already here, as data: Ministral (a Mistral with layer types), Helium (rotary on
interleaved pairs), Seed-OSS (q/k/v biases), Arcee AFM (a squared-ReLU MLP without a gate), EXAONE 3 / 3.5 (a Llama
under GPT-2-like names), OLMo 3 (OLMo 2 with sliding-window layers), Command R7B / Command A (cohere2: Cohere with
sliding-window layers and NoPE global ones), VaultGemma (Gemma 2 without the norms after attention and MLP), OLMo 1
(a Llama with LayerNorms that have no weights and clamped q/k/v projections) and Nemotron / Minitron (a Llama with
LayerNorms scaling by 1 + weight, a squared-ReLU MLP without a gate and rotary on half of each head).
Each builder reads a config.json (archs.Config) with the defaults of its transformers config class."""

from __future__ import annotations

from typing import Any, Dict, Tuple

from . import _core
from .archs import Config, Derived, NameMap, _layer_windows, text_config_of
from .archs_llama import _cohere, _gemma3, _llama, _olmo2, layer_type_ropes
from .archs_recent import _as_llama, _interleaved

# the fields whose defaults in the families' transformers config classes differ from Llama's
VARIANT_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "ministral": {"num_key_value_heads": 8, "rms_norm_eps": 1e-6, "max_position_embeddings": 131072,
                  "sliding_window": 4096},
    "helium": {"head_dim": 128, "rms_norm_eps": 1e-8, "rope_theta": 100000.0, "max_position_embeddings": 4096},
    "seed_oss": {"head_dim": 128, "num_key_value_heads": 8, "rms_norm_eps": 1e-6, "attention_bias": True,
                 "max_position_embeddings": 524288},
    "arcee": {"rms_norm_eps": 1e-5, "hidden_act": "relu2", "max_position_embeddings": 4096},
    "exaone": {"num_key_value_heads": 8, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 4096},
    "olmo3": {"rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 2048, "sliding_window": 4096},
    "cohere2": {"max_position_embeddings": 8192, "sliding_window": 4096},
    "ministral3": {"head_dim": 128, "num_key_value_heads": 8, "rms_norm_eps": 1e-5, "max_position_embeddings": 262144},
    "vaultgemma": {"sliding_window": 4096, "max_position_embeddings": 8192, "head_dim": 256,
                   "query_pre_attn_scalar": 256},
    "olmo": {"max_position_embeddings": 2048},
    "nemotron": {"hidden_act": "relu2", "norm_eps": 1e-5, "rms_norm_eps": 1e-5, "max_position_embeddings": 4096,
                 "rope_theta": 10000.0, "partial_rotary_factor": 0.5, "bos_token_id": 2, "eos_token_id": 3},
}


_ALIASES = {"exaone": {"num_hidden_layers": "num_layers", "rms_norm_eps": "layer_norm_epsilon",
                       "hidden_act": "activation_function"},
            "nemotron": {"rms_norm_eps": "norm_eps"}}


def variant_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """A config.json of these families with its class's defaults under it and its fields under Llama's names
    (EXAONE's num_layers ...): what the GGUF writer reads. Other configs as they are."""
    mt = config.get("model_type")
    if mt not in VARIANT_DEFAULTS:
        return config
    return _defaults(Config(config, "config.json"), mt, **_ALIASES.get(mt, {})).data


def _defaults(cfg: Config, model_type: str, **aliases: str) -> Config:
    """cfg with its class's defaults under it (and fields read under other names, as the class's attribute_map)."""
    data = {**VARIANT_DEFAULTS[model_type], **cfg.data}
    for field, alias in aliases.items():
        if alias in cfg.data and field not in cfg.data:
            data[field] = cfg.data[alias]
    return Config(data, cfg.source)


def _ministral(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Ministral 8B: a Mistral whose layer_types say which layers are sliding (all of them by default where the
    config has a window)."""
    cfg = _defaults(cfg, "ministral")
    s, names = _as_llama(cfg, tensor_names, "ministral", VARIANT_DEFAULTS["ministral"])
    if cfg.data.get("sliding_window") is not None or cfg.data.get("layer_types") is not None:
        _layer_windows(cfg, s, ["sliding_attention"] * s.n_layers, 4096)
    return s, names


def _helium(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Kyutai Helium: a Llama rotating interleaved pairs (2i, 2i + 1), q/k/v biases where attention_bias, none on o."""
    s, names = _as_llama(cfg, tensor_names, "helium", VARIANT_DEFAULTS["helium"])
    _interleaved(s)
    s.attn_out_bias = False
    for i in range(s.n_layers):
        names.pop(f"layers.{i}.attn.o.bias", None)
    return s, names


def _seed_oss(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """ByteDance Seed-OSS: a Llama with q/k/v biases (attention_bias) and o's own (attention_out_bias)."""
    s, names = _as_llama(cfg, tensor_names, "seed_oss", VARIANT_DEFAULTS["seed_oss"])
    s.attn_out_bias = cfg.get("attention_out_bias", bool, False)
    for i in range(s.n_layers):
        if s.attn_out_bias:
            names[f"layers.{i}.attn.o.bias"] = f"model.layers.{i}.self_attn.o_proj.bias"
        else:
            names.pop(f"layers.{i}.attn.o.bias", None)
    return s, names


def _no_gate(s: "_core.ArchSpec", names: NameMap) -> None:
    """An MLP of up, activation, down: the Llama builder's gate matrices dropped."""
    s.gated_mlp = False
    for i in range(s.n_layers):
        names.pop(f"layers.{i}.mlp.gate.weight")
        names.pop(f"layers.{i}.mlp.gate.bias", None)


def _norm_weight_names(names: NameMap):
    """The block norms' and the final norm's weight entries of a Llama builder's name map."""
    return [k for k in names if k == "norm.weight" or k.endswith(("attn_norm.weight", "mlp_norm.weight"))]


def _arcee(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Arcee AFM-4.5B: a Llama whose MLP is up, squared ReLU (hidden_act), down: no gate."""
    s, names = _as_llama(cfg, tensor_names, "arcee", VARIANT_DEFAULTS["arcee"])
    _no_gate(s, names)
    return s, names


def _exaone(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """LG EXAONE 3.0 / 3.5: a Llama whose checkpoints keep their own names (transformer.h.N.attn.attention.q_proj,
    ln_1, mlp.c_fc_0 ...) and config fields (num_layers, layer_norm_epsilon, activation_function); read under
    Llama's names too, as transformers renames them."""
    cfg = _defaults(cfg, "exaone", **_ALIASES["exaone"])
    s, names = _as_llama(cfg, tensor_names, "exaone", VARIANT_DEFAULTS["exaone"])
    if "transformer.wte.weight" not in set(tensor_names):
        return s, names
    renames = (("model.embed_tokens.", "transformer.wte."), ("model.norm.", "transformer.ln_f."),
               ("model.layers.", "transformer.h."), (".self_attn.o_proj.", ".attn.attention.out_proj."),
               (".self_attn.", ".attn.attention."), (".input_layernorm.", ".ln_1."),
               (".post_attention_layernorm.", ".ln_2."), (".mlp.gate_proj.", ".mlp.c_fc_0."),
               (".mlp.up_proj.", ".mlp.c_fc_1."), (".mlp.down_proj.", ".mlp.c_proj."))
    for k, v in names.items():
        for a, b in renames:
            v = v.replace(a, b, 1)
        names[k] = v
    return s, names


def _olmo3(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """AI2 OLMo 3: OLMo 2's block with sliding-window layers (layer_types, or three sliding to one full) and a
    rotary table per layer type (rope scaling, where given, on the full layers only)."""
    cfg = _defaults(cfg, "olmo3")
    s, names = _olmo2(cfg, tensor_names)
    s.model_type = "olmo3"
    types = _layer_windows(cfg, s, ["sliding_attention" if (i + 1) % 4 else "full_attention"
                                    for i in range(s.n_layers)], 4096)
    theta = cfg.get("rope_theta", float, 500000.0)
    layer_type_ropes(cfg, s, types, theta, theta, {"rope_type": "default", "rope_theta": theta})
    return s, names


def _olmo(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """AI2 OLMo 1 (OLMo-1B-hf, OLMo-7B-hf, OLMo-7B-0424-hf): a Llama whose norms are LayerNorms without weight or
    bias (epsilon 1e-5, fixed), whose q, k and v projections are clamped to [-clip_qkv, clip_qkv] where set."""
    cfg = _defaults(cfg, "olmo")
    s, names = _as_llama(cfg, tensor_names, "olmo", VARIANT_DEFAULTS["olmo"])
    s.norm, s.norm_eps, s.norm_weights = _core.NormKind.layer, 1e-5, False
    clip = cfg.get("clip_qkv", float, None)
    if clip is not None:
        if clip <= 0:
            raise cfg.error("clip_qkv", f"must be positive or null, got {clip!r}")
        s.clip_qkv = clip
    for k in _norm_weight_names(names):
        del names[k]
    return s, names


def _nemotron(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """NVIDIA Nemotron-4 / Minitron (Minitron-4B/8B, Nemotron-Mini-4B-Instruct, Mistral-NeMo-Minitron-8B): a Llama
    whose norms are LayerNorms with biases scaling by 1 + weight (folded in at load), whose MLP is up, squared ReLU,
    down (no gate), and whose rotary turns the first partial_rotary_factor of each head (half by default)."""
    cfg = _defaults(cfg, "nemotron", **_ALIASES["nemotron"])
    s, names = _as_llama(cfg, tensor_names, "nemotron", VARIANT_DEFAULTS["nemotron"])
    s.norm = _core.NormKind.layer
    _no_gate(s, names)
    plus_one = not cfg.data.get("_gguf_norms_plus_one")  # (llama.cpp's files hold the weights with 1 added)
    for k in _norm_weight_names(names):
        src = names[k]
        names[k] = Derived(src, add=1.0) if plus_one else src
        names[k[: -len("weight")] + "bias"] = src[: -len("weight")] + "bias"
    return s, names


def _cohere2(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Cohere Command R7B / Command A (cohere2): Command-R's parallel block and interleaved rotary, with
    sliding-window layers (layer_types, or three sliding to one full) rotated and the full layers without rotary
    positions (NoPE)."""
    cfg = _defaults(cfg, "cohere2")
    if cfg.get("use_qk_norm", bool, False):
        raise cfg.error("use_qk_norm", "is set: cohere2 has no q/k norms")
    s, names = _cohere(cfg, tensor_names)
    s.model_type = "cohere2"
    pattern = cfg.positive("sliding_window_pattern", 4)
    types = _layer_windows(cfg, s, ["sliding_attention" if (i + 1) % pattern else "full_attention"
                                    for i in range(s.n_layers)], 4096)
    if "full_attention" in types:
        s.layer_nope = [int(t == "full_attention") for t in types]
    return s, names


def _vaultgemma(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Google VaultGemma: Gemma 2 with a norm before attention and one before the MLP only."""
    s, names = _gemma3(Config({**_defaults(cfg, "vaultgemma").data, "model_type": "gemma2"}, cfg.source),
                       tensor_names)
    s.model_type = "vaultgemma"
    s.post_norms = False
    for i in range(s.n_layers):
        del names[f"layers.{i}.post_attn_norm.weight"], names[f"layers.{i}.post_mlp_norm.weight"]
    return s, names


_MINISTRAL3_ROPE = {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 16.0, "original_max_position_embeddings": 16384,
                    "beta_fast": 32.0, "beta_slow": 1.0, "mscale_all_dim": 1.0, "mscale": 1.0,
                    "llama_4_scaling_beta": 0.1}


def _ministral3(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Ministral 3 (3B, 8B, 14B) and Mistral Large 3's language model: a Mistral with yarn whose queries grow with
    the position past the original context, by 1 + llama_4_scaling_beta * log(1 + floor(position /
    original_max_position_embeddings))."""
    data = dict(cfg.data)
    if data.get("rope_parameters") is None and data.get("rope_scaling") is None:
        data["rope_parameters"] = _MINISTRAL3_ROPE
    cfg = _defaults(Config(data, cfg.source), "ministral3")
    s, names = _as_llama(cfg, tensor_names, "ministral3", VARIANT_DEFAULTS["ministral3"])
    s.sliding_window = cfg.positive("sliding_window", None) or 0
    field = "rope_parameters" if cfg.data.get("rope_parameters") is not None else "rope_scaling"
    params = cfg.get(field, dict)
    beta = cfg.get("llama_4_scaling_beta", float, 0.0, data=params, prefix=field + ".")
    if beta:
        s.q_temp_beta = beta
        length = cfg.get("original_max_position_embeddings", int, 0, data=params, prefix=field + ".")
        if length <= 0:
            raise cfg.error(field + ".original_max_position_embeddings",
                            f"must be a positive integer where llama_4_scaling_beta is set, got {length}")
        s.q_temp_length = length
    return s, names


def _mistral3(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """Mistral Small 3.1 / 3.2, Magistral Small, Ministral 3 (image and text, mistral3): the language model of
    text_config (a Mistral or a Ministral 3), its weights under model.language_model. (or, as transformers 4.x
    saved them, language_model.model.); the vision tower is not run."""
    text = text_config_of(cfg)
    kind = text.get("model_type", "mistral")
    builders = {"mistral": _llama, "ministral": _ministral, "ministral3": _ministral3}
    if kind not in builders:
        raise cfg.error("text_config.model_type", f"names an unsupported language model {kind!r} "
                                                  f"(supported: {', '.join(builders)})")
    have = set(tensor_names)
    head = "language_model.lm_head.weight" if "language_model.lm_head.weight" in have else "lm_head.weight"
    # (the top-level and text_config's tie_word_embeddings disagree in checkpoints transformers writes: the head
    # is tied exactly when the checkpoint has none, where it has any tensor at all)
    tied = cfg.data.get("tie_word_embeddings", text.get("tie_word_embeddings", False)) if not have else head not in have
    s, names = builders[kind](Config({**text, "model_type": kind, "tie_word_embeddings": bool(tied)}, cfg.source),
                              tensor_names)
    new = "language_model.model." if "language_model.model.embed_tokens.weight" in have else "model.language_model."
    for k, v in names.items():
        names[k] = head if v == "lm_head.weight" else new + v[len("model."):]
    s.model_type = kind
    return s, names


VARIANTS = {"ministral3": _ministral3, "mistral3": _mistral3, "ministral": _ministral, "helium": _helium, "seed_oss": _seed_oss, "arcee": _arcee, "exaone": _exaone,
            "olmo3": _olmo3, "cohere2": _cohere2, "vaultgemma": _vaultgemma, "olmo": _olmo,
            "nemotron": _nemotron}
