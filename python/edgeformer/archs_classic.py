"""The LayerNorm decoders of the GPT-2 era as data: GPT-2, GPT-NeoX (Pythia), Phi-1/2, OPT, BLOOM, MPT, Falcon,
CodeGen, GPT-J, GPT-Neo, GPTBigCode (StarCoder) (see archs.py)."""

from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np

from . import _core
from .archs import alibi_slopes, Config, Derived, NameMap, _activation, _common, _layernorm_pair, _per_head_rows, _prefix, _rope, _split_rows


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


def _gpt2_like(cfg: Config, tensor_names, sizes: Tuple[str, str, str, str, str], max_position: int, act: str,
               conv1d: bool = False) -> Tuple["_core.ArchSpec", NameMap, str]:
    """GPT-2's block (GPT-2, GPT-Neo, GPTBigCode): learned positions, LayerNorms before attention and MLP, a
    plain MLP with biases (mlp.c_fc, mlp.c_proj: Conv1D, transposed, where conv1d), the head tied unless the
    config says otherwise. sizes: the config's fields for hidden, heads, layers, MLP width (default 4 x hidden)
    and positions. Returns the spec, the names but the attention's, and the checkpoint's prefix."""
    hidden, heads, layers, inner, positions = sizes
    s = _core.ArchSpec()
    _common(cfg, s, hidden, heads, layers)
    s.ffn_size = cfg.positive(inner, 4 * s.hidden_size)
    s.max_position = cfg.positive(positions, max_position)
    s.norm = _core.NormKind.layer
    s.norm_eps = cfg.get("layer_norm_epsilon", float, 1e-5)
    s.act = _activation(cfg, "activation_function", act)
    s.gated_mlp = False
    s.pos = _core.PosKind.learned
    s.attn_bias = s.attn_out_bias = s.mlp_bias = True
    s.tie_embeddings = cfg.get("tie_word_embeddings", bool, True)
    p = _prefix(tensor_names, ["transformer.", ""], "wte.weight")
    names: NameMap = {"tok_embeddings.weight": p + "wte.weight", "pos_embeddings.weight": p + "wpe.weight"}
    _layernorm_pair(names, "norm", p + "ln_f", tensor_names)
    if not s.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    for i in range(s.n_layers):
        src, dst = f"{p}h.{i}.", f"layers.{i}."
        _layernorm_pair(names, dst + "attn_norm", src + "ln_1", tensor_names)
        _layernorm_pair(names, dst + "mlp_norm", src + "ln_2", tensor_names)
        for a, b in (("up", "c_fc"), ("down", "c_proj")):
            w = src + f"mlp.{b}.weight"
            names[dst + f"mlp.{a}.weight"] = Derived(w, transpose=True) if conv1d else w
            names[dst + f"mlp.{a}.bias"] = src + f"mlp.{b}.bias"
    return s, names, p


def _gpt2(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """GPT-2: learned positions, Conv1D (transposed) weights, fused c_attn, tied head."""
    s, names, p = _gpt2_like(cfg, tensor_names, ("n_embd", "n_head", "n_layer", "n_inner", "n_positions"), 1024,
                             "gelu_new", conv1d=True)
    if cfg.get("scale_attn_by_inverse_layer_idx", bool, False):
        raise cfg.error("scale_attn_by_inverse_layer_idx", "is not supported (true)")
    if not cfg.get("scale_attn_weights", bool, True):
        s.attn_scale = 1.0
    H = s.hidden_size
    for i in range(s.n_layers):
        src, dst = f"{p}h.{i}.", f"layers.{i}."
        _split_rows(names, dst + "attn", src + "attn.c_attn.weight",
                    {"q": slice(0, H), "k": slice(H, 2 * H), "v": slice(2 * H, 3 * H)}, transpose=True,
                    bias=src + "attn.c_attn.bias")
        names[dst + "attn.o.weight"] = Derived(src + "attn.c_proj.weight", transpose=True)
        names[dst + "attn.o.bias"] = src + "attn.c_proj.bias"
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


def mpt_alibi_slopes(n_heads: int, bias_max: float) -> List[float]:
    """MPT's ALiBi slopes (transformers' build_mpt_alibi_tensor), in float32: 2^-(bias_max i / n) for i = 1 .. n
    over the next power of two n of the heads; with fewer heads, the odd-numbered ones first."""
    n = 2 ** math.ceil(math.log2(n_heads))
    base = np.arange(1, n + 1, dtype=np.float32) * np.float32(bias_max / n)
    slopes = (np.float32(1) / np.power(np.float32(2), base)).astype(np.float32)
    if n != n_heads:
        slopes = np.concatenate([slopes[1::2], slopes[::2]])[:n_heads]
    return [float(x) for x in slopes]


def _mpt(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """MosaicML MPT (MPT-7B, MPT-7B-Instruct / -Chat / -StoryWriter, MPT-30B): ALiBi (MPT's slopes), LayerNorms
    without biases, q, k and v fused in Wqkv (clamped to clip_qkv where set), a GELU MLP of expansion_ratio, no
    biases anywhere, the head tied to the embedding; as transformers computes it."""
    s = _core.ArchSpec()
    _common(cfg, s, "d_model", "n_heads", "n_layers")
    attn = cfg.get("attn_config", dict, {}) or {}
    for field, ok in (("alibi", True), ("qk_ln", False), ("prefix_lm", False)):
        v = cfg.get(field, bool, ok, data=attn, prefix="attn_config.")
        if v != ok:  # (transformers' MPT computes ALiBi without q/k norms or a prefix-LM mask, whatever these say)
            raise cfg.error("attn_config." + field, f"is not supported ({str(v).lower()}): transformers' MPT "
                            "computes ALiBi attention without q/k norms or a prefix-LM mask")
    if not cfg.get("no_bias", bool, True):
        raise cfg.error("no_bias", "is not supported (false): transformers' MPT has no biases")
    s.ffn_size = cfg.positive("expansion_ratio", 4) * s.hidden_size
    s.max_position = cfg.positive("max_seq_len", 2048)
    s.norm = _core.NormKind.layer
    s.norm_eps = cfg.get("layer_norm_epsilon", float, 1e-5)
    s.act = _core.Act.gelu
    s.gated_mlp = False
    s.pos = _core.PosKind.alibi
    bias_max = cfg.get("alibi_bias_max", float, 8.0, data=attn, prefix="attn_config.")
    if bias_max != 8:  # (transformers builds the slopes with 8 whatever the config says; MosaicML's code did not)
        raise cfg.error("attn_config.alibi_bias_max", f"is not supported ({bias_max:g}): transformers' MPT "
                        "computes its slopes with 8")
    s.alibi_slopes = mpt_alibi_slopes(s.n_heads, bias_max)
    scale = cfg.get("softmax_scale", float, None, data=attn, prefix="attn_config.")
    if scale is not None:
        s.attn_scale = scale
    clip = cfg.get("clip_qkv", float, None, data=attn, prefix="attn_config.")
    if clip is not None:
        if clip <= 0:
            raise cfg.error("attn_config.clip_qkv", f"must be positive or null, got {clip!r}")
        s.clip_qkv = clip
    s.tie_embeddings = cfg.get("tie_word_embeddings", bool, True)
    H = s.hidden_size
    p = _prefix(tensor_names, ["transformer.", ""], "wte.weight")
    names: NameMap = {"tok_embeddings.weight": p + "wte.weight", "norm.weight": p + "norm_f.weight"}
    if not s.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    parts = {"q": slice(0, H), "k": slice(H, 2 * H), "v": slice(2 * H, 3 * H)}
    for i in range(s.n_layers):  # (LayerNorms without biases: weights only)
        src, dst = f"{p}blocks.{i}.", f"layers.{i}."
        names[dst + "attn_norm.weight"] = src + "norm_1.weight"
        names[dst + "mlp_norm.weight"] = src + "norm_2.weight"
        _split_rows(names, dst + "attn", src + "attn.Wqkv.weight", parts)
        names[dst + "attn.o.weight"] = src + "attn.out_proj.weight"
        names[dst + "mlp.up.weight"] = src + "ffn.up_proj.weight"
        names[dst + "mlp.down.weight"] = src + "ffn.down_proj.weight"
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


def _gptj_like(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap, str]:
    """GPT-J's block, CodeGen's too: one LayerNorm feeding attention and MLP in parallel, rotary on interleaved
    pairs of the first rotary_dim of each head, a plain GELU MLP with biases, a head with a bias. Returns the
    spec, the names but q/k/v's, and the checkpoint's prefix."""
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
    r.rotary_dim = cfg.positive("rotary_dim", None) or s.head_dim
    r.style = _core.RopeStyle.interleaved
    s.rope = r
    s.parallel_residual = True
    s.mlp_bias = True
    s.lm_head_bias = True
    s.tie_embeddings = cfg.get("tie_word_embeddings", bool, False)
    p = _prefix(tensor_names, ["transformer.", ""], "wte.weight")
    names: NameMap = {"tok_embeddings.weight": p + "wte.weight", "lm_head.weight": "lm_head.weight",
                      "lm_head.bias": "lm_head.bias"}
    _layernorm_pair(names, "norm", p + "ln_f", tensor_names)
    for i in range(s.n_layers):
        src, dst = f"{p}h.{i}.", f"layers.{i}."
        _layernorm_pair(names, dst + "attn_norm", src + "ln_1", tensor_names)
        names[dst + "attn.o.weight"] = src + "attn.out_proj.weight"
        for a, b in (("up", "fc_in"), ("down", "fc_out")):
            names[dst + f"mlp.{a}.weight"] = src + f"mlp.{b}.weight"
            names[dst + f"mlp.{a}.bias"] = src + f"mlp.{b}.bias"
    return s, names, p


def _codegen(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """CodeGen: GPT-J's block with q, k, v fused in mp_num=4 blocks of [q, v, k]."""
    s, names, p = _gptj_like(cfg, tensor_names)
    mp = 4
    if s.n_heads % mp:
        raise cfg.error("n_head", f"({s.n_heads}) must be a multiple of CodeGen's mp_num (4)")
    local = s.hidden_size // mp
    # each of the mp blocks holds [q, v, k] of local width; heads run block-major
    parts = {part: [b * 3 * local + j * local + d for b in range(mp) for d in range(local)]
             for j, part in ((0, "q"), (1, "v"), (2, "k"))}
    for i in range(s.n_layers):
        _split_rows(names, f"layers.{i}.attn", f"{p}h.{i}.attn.qkv_proj.weight", parts)
    return s, names


def _gptj(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """EleutherAI GPT-J-6B (and its fine-tunes: GPT4All-J, Pygmalion 6B ...): GPT-J's block, q/k/v apart."""
    s, names, p = _gptj_like(cfg, tensor_names)
    for i in range(s.n_layers):
        for a in "qkv":
            names[f"layers.{i}.attn.{a}.weight"] = f"{p}h.{i}.attn.{a}_proj.weight"
    return s, names


def _gpt_neo(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """EleutherAI GPT-Neo (125M, 1.3B, 2.7B; TinyStories): GPT-2's block with unscaled attention scores, q/k/v
    apart and without biases, global and local layers (attention_types: a window of window_size)."""
    s, names, p = _gpt2_like(cfg, tensor_names, ("hidden_size", "num_heads", "num_layers", "intermediate_size",
                                                 "max_position_embeddings"), 2048, "gelu_new")
    s.attn_scale = 1.0  # (GPT-Neo does not scale its scores)
    s.attn_bias = False
    kinds = []
    spec_types = cfg.data.get("attention_types", [[["global", "local"], s.n_layers // 2]])
    try:
        for pattern, repeat in spec_types:
            kinds += list(pattern) * int(repeat)
    except (TypeError, ValueError):
        raise cfg.error("attention_types", "expected [[['global' | 'local', ...], repeat], ...]") from None
    if len(kinds) != s.n_layers or any(k not in ("global", "local") for k in kinds):
        raise cfg.error("attention_types", f"expected {s.n_layers} layers of 'global' / 'local', got {kinds}")
    if "local" in kinds:
        w = cfg.positive("window_size", 256)
        s.layer_windows = [w if k == "local" else 0 for k in kinds]
    for i in range(s.n_layers):
        src, dst = f"{p}h.{i}.attn.attention.", f"layers.{i}.attn."
        for a in "qkv":
            names[dst + f"{a}.weight"] = src + f"{a}_proj.weight"
        names[dst + "o.weight"] = src + "out_proj.weight"
        names[dst + "o.bias"] = src + "out_proj.bias"
    return s, names


def _gpt_bigcode(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """GPTBigCode (StarCoder, StarCoderBase, SantaCoder, WizardCoder, SQLCoder, tiny_starcoder): GPT-2's block
    with Linear (not Conv1D) weights and one key/value head (multi_query; else per-head [q, k, v] rows)."""
    s, names, p = _gpt2_like(cfg, tensor_names, ("n_embd", "n_head", "n_layer", "n_inner", "n_positions"), 1024,
                             "gelu_pytorch_tanh")
    if not cfg.get("scale_attn_weights", bool, True):
        s.attn_scale = 1.0
    H, hd = s.hidden_size, s.head_dim
    if cfg.get("multi_query", bool, True):
        s.n_kv_heads = 1
        parts = {"q": slice(0, H), "k": slice(H, H + hd), "v": slice(H + hd, H + 2 * hd)}
    else:  # per head: [q, k, v] of head_dim each
        parts = {a: _per_head_rows(s.n_heads, 3, hd, [j]) for j, a in enumerate("qkv")}
    for i in range(s.n_layers):
        src, dst = f"{p}h.{i}.", f"layers.{i}."
        _split_rows(names, dst + "attn", src + "attn.c_attn.weight", parts, bias=src + "attn.c_attn.bias")
        names[dst + "attn.o.weight"] = src + "attn.c_proj.weight"
        names[dst + "attn.o.bias"] = src + "attn.c_proj.bias"
    return s, names
