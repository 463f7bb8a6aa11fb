"""Architectures as data: a checkpoint's config.json becomes an ArchSpec plus a map from the engine's
canonical weight names to the checkpoint's tensor names.

Canonical names (what the C++ model asks for)::

    tok_embeddings.weight  norm.weight  norm.bias  lm_head.weight
    layers.{i}.attn_norm.{weight,bias}   layers.{i}.mlp_norm.{weight,bias}
    layers.{i}.attn.{q,k,v,o}.{weight,bias}
    layers.{i}.mlp.{gate,up,down}.{weight,bias}
    layers.{i}.moe.router.weight  layers.{i}.moe.experts.{e}.{gate,up,down}.weight   (mixture of experts)
    layers.{i}.moe.shared.{gate,up,down}.weight  layers.{i}.moe.shared_scale.weight

Adding an architecture is adding a builder to ``ARCHS``: read the config, fill the spec, name the tensors. The
builders live by family in archs_llama.py (the Llama line, mixtures of experts), archs_classic.py (GPT-2 era
LayerNorm decoders) and archs_encoders.py (BERT, T5); this module holds what they share.
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
    "relu2": _core.Act.relu2,  # (squared ReLU: Nemotron, Arcee, Persimmon)
}


# Upper bounds on sizes, far above any real model, so that a hostile config cannot make the loader loop or
# allocate for minutes before a single tensor is checked.
_LAYERS, _WIDTH, _HEADS, _FFN = 4096, 1 << 18, 1 << 14, 1 << 20
LIMITS = {
    **dict.fromkeys(("num_hidden_layers", "n_layer", "n_layers", "num_layers", "num_decoder_layers", "block_count"),
                    _LAYERS),
    **dict.fromkeys(("hidden_size", "n_embd", "n_embed", "d_model", "word_embed_proj_dim", "dim"), _WIDTH),
    **dict.fromkeys(("num_attention_heads", "n_head", "n_heads", "num_heads", "num_key_value_heads", "num_kv_heads",
                     "head_dim", "d_kv", "rotary_dim"), _HEADS),
    **dict.fromkeys(("intermediate_size", "ffn_dim", "n_inner", "d_ff", "ffn_hidden_size", "hidden_dim", "moe_intermediate_size",
                     "shared_expert_intermediate_size", "moe_shared_expert_intermediate_size"), _FFN),
    **dict.fromkeys(("num_experts", "num_local_experts", "num_experts_per_tok", "n_routed_experts"), 1 << 12),
    # recurrent layers (Gated DeltaNet heads and sizes, convolution taps)
    **dict.fromkeys(("linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim"),
                    _HEADS),
    **dict.fromkeys(("linear_conv_kernel_dim", "conv_L_cache", "mamba_d_conv"), 1 << 10),
    **dict.fromkeys(("mamba_n_heads", "mamba_d_head", "mamba_n_groups", "mamba_d_state"), _HEADS),
    # (Nemotron-H's, Mamba's and Mamba2's names for them; Mamba's time step rank; Falcon-H1's mixer width)
    **dict.fromkeys(("mamba_num_heads", "mamba_head_dim", "n_groups", "ssm_state_size", "state_size",
                     "time_step_rank", "mamba_dt_rank", "mamba_d_ssm"), _HEADS),
    **dict.fromkeys(("conv_kernel",), 1 << 10),
    **dict.fromkeys(("local_attention", "global_attn_every_n_layers"), 1 << 24),  # (ModernBERT)
    "shared_intermediate_size": _FFN,
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


def _layer_types_ok(types: Any, n_layers: int) -> bool:
    """A config's layer_types: one of 'sliding_attention' / 'full_attention' per layer."""
    return isinstance(types, list) and len(types) == n_layers and all(
        isinstance(t, str) and t in ("sliding_attention", "full_attention") for t in types)


def _layer_windows(cfg: Config, s: "_core.ArchSpec", default_types: Sequence[str], window: int) -> List[str]:
    """A config's layer_types (default_types where it has none), checked; the sliding ones get s.layer_windows
    of sliding_window (default `window`). Returns the types."""
    types = cfg.data.get("layer_types")
    if types is None:
        types = list(default_types)
    if not _layer_types_ok(types, s.n_layers):
        raise cfg.error("layer_types", f"expected {s.n_layers} of 'sliding_attention' / 'full_attention'")
    if "sliding_attention" in types:
        w = cfg.positive("sliding_window", window) or window
        s.layer_windows = [w if t == "sliding_attention" else 0 for t in types]
    return types


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
    if not _layer_types_ok(types, s.n_layers):
        raise cfg.error("layer_types", f"expected {s.n_layers} of 'sliding_attention' / 'full_attention'")
    if len(set(types)) > 1:  # some layers only (layer_types, or from max_window_layers on)
        s.layer_windows = [w if t == "sliding_attention" else 0 for t in types]
    elif types[0] == "sliding_attention":
        s.sliding_window = w


class Derived:
    """A weight rebuilt from a checkpoint tensor: with `index`, one matrix of a 3-D tensor (fused experts); rows
    (after an optional transpose) gathered by index, and columns by `cols`; with `add`, every value plus that
    constant, as f32 (Gemma's norms scale by 1 + weight); with `scale`, the rows times a constant or one factor
    per row, in the source's float type (Falcon-H1's multipliers, folded in as llama.cpp's converter does)."""

    fp8_block: Sequence[int] = (128, 128)  # an FP8 source's scale blocks (quantization_config.weight_block_size)

    def __init__(self, src: str, rows: Union[slice, Sequence[int], None] = None, transpose: bool = False,
                 add: float = 0.0, index: Optional[int] = None, cols: Optional[Sequence[int]] = None,
                 scale: Union[float, Sequence[float], None] = None):
        self.src, self.rows, self.transpose, self.add, self.index = src, rows, transpose, add, index
        self.cols, self.scale = cols, scale

    def build(self, checkpoint) -> Tuple[np.ndarray, "_core.DType", str]:
        t = checkpoint.get(self.src)
        a, dtype = t.numpy(), t.dtype  # zero-copy view; bf16 comes as its uint16 bits, which regroup just as well
        if dtype == _core.DType.f8_e4m3:  # (an FP8 checkpoint: dequantized with its scales, as bf16)
            from .fp8 import as_bf16

            a, dtype = as_bf16(checkpoint, t, self.src, self.fp8_block)
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
        if self.cols is not None:
            if a.ndim != 2 or dtype not in (_core.DType.f32, _core.DType.f16, _core.DType.bf16) or \
                    a.shape[1] != len(self.cols):
                raise ValueError(f"tensor '{self.src}': expected a float matrix of {len(self.cols)} columns, got "
                                 f"{dtype} of shape {list(t.shape)}")
            a = a[:, np.asarray(self.cols)]
        if self.add:
            f = _as_f32(a, dtype) + np.float32(self.add)
            return np.ascontiguousarray(f, dtype=np.float32), _core.DType.f32, t.source
        if self.scale is not None:
            m = np.asarray(self.scale, np.float32)
            if m.ndim and m.shape[0] != a.shape[0]:
                raise ValueError(f"tensor '{self.src}': expected {m.shape[0]} rows, got shape {list(t.shape)}")
            f = _as_f32(a, dtype) * (m.reshape((-1,) + (1,) * (a.ndim - 1)) if m.ndim else m)
            return np.ascontiguousarray(_from_f32(f, dtype)), dtype, t.source
        return np.ascontiguousarray(a), dtype, t.source


class Stacked(Derived):
    """Vectors of several checkpoint tensors stacked into one [len(srcs), n] f32 tensor (StableLM's per-head q/k
    norms, one LayerNorm module per head)."""

    def __init__(self, srcs: Sequence[str]):
        super().__init__(srcs[0])
        self.srcs = list(srcs)

    def build(self, checkpoint) -> Tuple[np.ndarray, "_core.DType", str]:
        ts = [checkpoint.get(n) for n in self.srcs]
        rows = [_as_f32(t.numpy(), t.dtype).reshape(-1) for t in ts]
        if len({len(r) for r in rows}) != 1:
            raise ValueError(f"tensors {self.srcs[0]!r} ...: expected {len(rows)} vectors of one length, got shapes "
                             f"{[list(t.shape) for t in ts]}")
        return np.ascontiguousarray(np.stack(rows), dtype=np.float32), _core.DType.f32, ts[0].source


def _as_f32(a: np.ndarray, dtype) -> np.ndarray:
    """A float tensor's values as f32 (bf16 arrives as its uint16 bits)."""
    if dtype == _core.DType.bf16:
        return (a.astype(np.uint32) << 16).view(np.float32)
    if dtype in (_core.DType.f16, _core.DType.f32):
        return a.astype(np.float32)
    raise ValueError(f"expected a float tensor (f32, f16 or bf16), got {dtype}")


def tensor_f32(checkpoint, name: str) -> np.ndarray:
    """A checkpoint tensor's values as a contiguous f32 array (heads and modules computed in NumPy)."""
    t = checkpoint.get(name)
    return np.ascontiguousarray(_as_f32(t.numpy(), t.dtype), np.float32)


def _from_f32(f: np.ndarray, dtype) -> np.ndarray:
    """f32 values as a float tensor of dtype holds them (bf16: its uint16 bits, rounded to nearest even)."""
    if dtype == _core.DType.bf16:
        bits = np.ascontiguousarray(f, np.float32).view(np.uint32)
        return ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    return f.astype(np.float16 if dtype == _core.DType.f16 else np.float32)


NameMap = Dict[str, Union[str, Derived]]


def text_config_of(cfg: Config) -> Dict[str, Any]:
    """An image-and-text checkpoint's text_config (its language model's config), checked to be an object."""
    text = cfg.data.get("text_config")
    if not isinstance(text, dict):
        raise cfg.error("text_config", "expected an object (the language model's config)")
    return text


def language_model(text_builder, text_type: str):
    """The builder of an image-and-text checkpoint (Gemma 3, 3n, 4) that runs its language model alone: text_config
    as a `text_type` config (the top level's tie_word_embeddings where text_config has none), text_builder's
    names (which find the weights under model.language_model. themselves)."""

    def build(cfg: Config, tensor_names):
        top = {k: cfg.data[k] for k in ("tie_word_embeddings",) if k in cfg.data}
        return text_builder(Config({**top, **text_config_of(cfg), "model_type": text_type}, cfg.source), tensor_names)

    return build


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


# the families, in modules of their own (imported here, after the helpers above that they use)
from .archs_classic import (  # noqa: E402
    _bloom, _codegen, _falcon, _gpt2, _gpt_bigcode, _gpt_neo, _gpt_neox, _gptj, _mpt, _opt, _phi,
)
from .archs_encoders import PADDED_POSITIONS, _bert, _distilbert, _modernbert, _mpnet, _roberta, t5_specs  # noqa: E402
from .archs_llama import (  # noqa: E402
    _cohere, _gemma, _gemma3, _gpt_oss, _granite, _granitemoe, _llama, _moe, _olmo2, _phi3,
    _smollm3, _stablelm, _starcoder2,
)
from .archs_recent import RECENT  # noqa: E402
from .archs_variants import VARIANTS  # noqa: E402
from .archs_hybrid import HYBRID  # noqa: E402
from .archs_ssm import SSM  # noqa: E402
from .archs_gemma import GEMMA  # noqa: E402
from .bitnet import BITNET  # noqa: E402

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
    "gemma3": language_model(_gemma3, "gemma3_text"),  # (Gemma 3 4B and up, image and text)
    "gpt2": _gpt2,
    "starcoder2": _starcoder2,
    "stablelm": _stablelm,
    "granite": _granite,
    "granitemoe": _granitemoe,
    "gpt_neox": _gpt_neox,
    "phi": _phi,
    "opt": _opt,
    "bloom": _bloom,
    "mpt": _mpt,
    "falcon": _falcon,
    "codegen": _codegen,
    "gptj": _gptj,
    "gpt_neo": _gpt_neo,
    "gpt_bigcode": _gpt_bigcode,
    "bert": _bert,
    **{t: _roberta for t in PADDED_POSITIONS if t != "mpnet"},
    "mpnet": _mpnet,
    "distilbert": _distilbert,
    "modernbert": _modernbert,
    **RECENT,
    **VARIANTS,
    **HYBRID,
    **SSM,
    **GEMMA,
    **BITNET,
}
ENCODER_DECODERS = {"t5": t5_specs}


def _bare_base_model(spec: "_core.ArchSpec", names: NameMap, tensor_names) -> NameMap:
    """A decoder saved as its base model alone (Qwen3Model, Qwen2Model, MistralModel: what sentence-transformers
    writes for decoder embedders such as Qwen3-Embedding, gte-Qwen2, e5-mistral): tensors without the "model."
    prefix its builder names, and no lm_head. The names are mapped to what the checkpoint holds; without a head
    (and not tied) the model is headless (ArchSpec::no_head: hidden states and embed() only)."""
    have = set(tensor_names)
    tok = names.get("tok_embeddings.weight")
    src = tok.src if isinstance(tok, Derived) else tok
    if not isinstance(src, str) or src in have or not src.startswith("model.") or src[len("model."):] not in have:
        return names
    out: NameMap = {}
    for k, v in names.items():
        if isinstance(v, str) and v.startswith("model.") and v[len("model."):] in have:
            v = v[len("model."):]
        elif isinstance(v, Derived) and v.src.startswith("model.") and v.src[len("model."):] in have:
            v.src = v.src[len("model."):]
        out[k] = v
    head = out.get("lm_head.weight")
    if not spec.tie_embeddings and isinstance(head, str) and head not in have:
        del out["lm_head.weight"]
        spec.no_head = True
    return out


def spec_from_config(data: Dict[str, Any], source: str, tensor_names=()) -> Tuple["_core.ArchSpec", Dict[str, str]]:
    cfg = Config(data, source)
    model_type = cfg.get("model_type", str)
    if model_type not in ARCHS:
        supported = ", ".join(sorted(list(ARCHS) + list(ENCODER_DECODERS)))
        raise cfg.error("model_type", f"names an unsupported architecture {model_type!r} (supported: {supported})")
    spec, names = ARCHS[model_type](cfg, tensor_names)
    if spec.kind == _core.ModelKind.decoder and tensor_names:
        names = _bare_base_model(spec, names, tensor_names)
    try:
        spec.validate()
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    return spec, names
