"""Hybrid decoders in GGUF: Qwen3.5 and Qwen3-Next (llama.cpp's ``qwen35``, ``qwen35moe``, ``qwen3next``) and LFM2
(``lfm2``, ``lfm2moe``: its attention layers those with key/value heads in attention.head_count_kv, an array; the
convolutions as [channels, taps]): metadata both ways, tensor names, and the layout changes llama.cpp's converter
makes, which are undone (read) or redone (written) here, for the Mamba family's files too (gguf_ssm.py: Granite
4.0-H, Mamba, Mamba2, Nemotron-H, Falcon-H1, Jamba; ssm_a and ssm_d as [heads, 1], ssm_norm as [groups, width]).

What the converter changes (convert_hf_to_gguf.py, Qwen3_5TextModel / Qwen3_5MoeTextModel):

* RMSNorms are stored with Qwen3.5's 1 added (as we compute with them), except the Gated DeltaNet output norm
  (``ssm_norm``), a plain one; ``A_log`` is stored as ``ssm_a = -exp(A_log)``; the convolution ``ssm_conv1d``
  as [channels, taps] (no middle axis); ``dt_bias`` as ``ssm_dt.bias``.
* ``attn_q`` is transformers' q_proj as it is: per head, the query's rows then its output gate's. Read, the two are
  split into owned copies (whole rows: a quantized matrix splits as stored).
* With fewer key heads than value heads, the value heads are "tiled" (value head ``r * Hk + g`` is transformers'
  ``g * (Hv / Hk) + r``: key head ``h % Hk``) in every tensor that has them, the columns of ``ssm_out`` included.
  That order is read as stored (ArchSpec.lin_v_tiled); written, a float model is permuted into it, and a model
  loaded quantized was laid out so at load (:func:`gguf_linear_layout`), as a quantized matrix's columns cannot
  move.

Qwen3-Next's files: q, k, v and z split from in_proj_qkvz into ``attn_qkv`` ([all q, all k, all v]) and ``attn_gate``
(older files: ``ssm_in``, the checkpoint's fused rows, read too), ``ssm_ba`` in_proj_ba as it is, value heads grouped
as in transformers.

Multi-token-prediction blocks (``nextn_predict_layers``) are left unread; fused expert gate/up tensors
(``ffn_gate_up_exps``) are read as views of their gate and up rows (gguf_io.load_gguf), for every architecture.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from gguf.constants import MODEL_TENSOR, Keys

from .gguf_common import (FALCON_H1, GRANITE_HYBRID, JAMBA, LFM2, LFM2MOE, MAMBA, MAMBA2, NEMOTRON_H, NEMOTRON_H_MOE,
                          QWEN35, QWEN35MOE, QWEN3NEXT, _Meta)

# (the Mamba family's: gguf_ssm.py)
SSM_ARCHS = (GRANITE_HYBRID, MAMBA, MAMBA2, NEMOTRON_H, NEMOTRON_H_MOE, FALCON_H1, JAMBA)
HYBRID_ARCHS = (QWEN35, QWEN35MOE, QWEN3NEXT, LFM2, LFM2MOE) + SSM_ARCHS
TILED_ARCHS = (QWEN35, QWEN35MOE)  # (Qwen3-Next's files keep transformers' grouped value heads)
# the image-and-text checkpoints are written as their language model
TEXT_MODEL_TYPE = {"qwen3_5": "qwen3_5_text", "qwen3_5_moe": "qwen3_5_moe_text"}

_K, _A, _R, _S = Keys.LLM, Keys.Attention, Keys.Rope, Keys.SSM
_RECURRENT_LAYERS = "{arch}.attention.recurrent_layers"  # (newer than gguf-py's Keys here)
_DEFAULT_SECTIONS = [11, 11, 10, 0]  # (llama.cpp requires the key; text positions make every section alike)


def _k(template: str, arch: str) -> str:
    return template.format(arch=arch)


# -- tensor names ------------------------------------------------------------------------------------------

_W = (".weight",)
_T = MODEL_TENSOR


def attention_names(a: str, out: str = "o_proj"):
    """An attention layer's q, k, v and output projections under a (the output's name: out)."""
    return [(_T.ATTN_Q, a + "q_proj", _W, "blk"), (_T.ATTN_K, a + "k_proj", _W, "blk"),
            (_T.ATTN_V, a + "v_proj", _W, "blk"), (_T.ATTN_OUT, a + out, _W, "blk")]


def name_table(arch: str):
    """(llama.cpp tensor, HF name, suffixes, stack) as gguf_names' tables; experts: gguf_names.expert_tensor."""
    L = "model.layers.{i}."
    if arch in SSM_ARCHS:
        from .gguf_ssm import ssm_name_table

        return ssm_name_table(arch)
    if arch in (LFM2, LFM2MOE):
        moe = [(_T.FFN_GATE_INP, L + "feed_forward.gate", _W, "blk"),
               (_T.FFN_EXP_PROBS_B, L + "feed_forward.expert_bias", ((".bias", ""),), "blk")] if arch == LFM2MOE else []
        return moe + [
            (_T.TOKEN_EMBD, "model.embed_tokens", _W, None),
            (_T.TOKEN_EMBD_NORM, "model.embedding_norm", _W, None),  # (the final norm, as the checkpoint names it)
            (_T.OUTPUT, "lm_head", _W, None),
            (_T.ATTN_NORM, L + "operator_norm", _W, "blk"),
            (_T.FFN_NORM, L + "ffn_norm", _W, "blk"),
            (_T.FFN_GATE, L + "feed_forward.w1", _W, "blk"),
            (_T.FFN_UP, L + "feed_forward.w3", _W, "blk"),
            (_T.FFN_DOWN, L + "feed_forward.w2", _W, "blk"),
            *attention_names(L + "self_attn.", "out_proj"),
            (_T.ATTN_Q_NORM, L + "self_attn.q_layernorm", _W, "blk"),
            (_T.ATTN_K_NORM, L + "self_attn.k_layernorm", _W, "blk"),
            (_T.SHORTCONV_CONV, L + "conv.conv", _W, "blk"),
            (_T.SHORTCONV_INPROJ, L + "conv.in_proj", _W, "blk"),
            (_T.SHORTCONV_OUTPROJ, L + "conv.out_proj", _W, "blk"),
        ]
    names = [
        (_T.TOKEN_EMBD, "model.embed_tokens", _W, None),
        (_T.OUTPUT_NORM, "model.norm", _W, None),
        (_T.OUTPUT, "lm_head", _W, None),
        (_T.ATTN_NORM, L + "input_layernorm", _W, "blk"),
        (_T.ATTN_POST_NORM, L + "post_attention_layernorm", _W, "blk"),
        *attention_names(L + "self_attn."),
        (_T.ATTN_Q_NORM, L + "self_attn.q_norm", _W, "blk"),
        (_T.ATTN_K_NORM, L + "self_attn.k_norm", _W, "blk"),
    ] + ([  # (Qwen3-Next: attn_qkv and attn_gate are read and written by read_tensor / write_tensor)
        (_T.SSM_IN, L + "linear_attn.in_proj_qkvz", _W, "blk"),
        (_T.SSM_BETA_ALPHA, L + "linear_attn.in_proj_ba", _W, "blk"),
    ] if arch == QWEN3NEXT else [
        (_T.ATTN_QKV, L + "linear_attn.in_proj_qkv", _W, "blk"),
        (_T.ATTN_GATE, L + "linear_attn.in_proj_z", _W, "blk"),
        (_T.SSM_BETA, L + "linear_attn.in_proj_b", _W, "blk"),
        (_T.SSM_ALPHA, L + "linear_attn.in_proj_a", _W, "blk"),
    ]) + [
        (_T.SSM_CONV1D, L + "linear_attn.conv1d", _W, "blk"),
        (_T.SSM_DT, L + "linear_attn.dt_bias", ((".bias", ""),), "blk"),
        (_T.SSM_A, L + "linear_attn.A_log", (("", ""),), "blk"),
        (_T.SSM_NORM, L + "linear_attn.norm", _W, "blk"),
        (_T.SSM_OUT, L + "linear_attn.out_proj", _W, "blk"),
    ]
    if arch in (QWEN35MOE, QWEN3NEXT):
        return names + [
            (_T.FFN_GATE_INP, L + "mlp.gate", _W, "blk"),
            (_T.FFN_GATE_SHEXP, L + "mlp.shared_expert.gate_proj", _W, "blk"),
            (_T.FFN_UP_SHEXP, L + "mlp.shared_expert.up_proj", _W, "blk"),
            (_T.FFN_DOWN_SHEXP, L + "mlp.shared_expert.down_proj", _W, "blk"),
            (_T.FFN_GATE_INP_SHEXP, L + "mlp.shared_expert_gate", _W, "blk"),
        ]
    return names + [(_T.FFN_GATE, L + "mlp.gate_proj", _W, "blk"), (_T.FFN_UP, L + "mlp.up_proj", _W, "blk"),
                    (_T.FFN_DOWN, L + "mlp.down_proj", _W, "blk")]


# -- metadata -> config.json -------------------------------------------------------------------------------

def config_qwen35(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """Qwen3.5's config from llama.cpp's keys: the attention layers' as a Llama's (rotary on a part of each head),
    the Gated DeltaNet sizes from the ssm keys, which layers are recurrent from attention.recurrent_layers or
    full_attention_interval, the experts' counts and widths (qwen35moe)."""
    from .gguf_readers import _config_llama

    moe = arch in (QWEN35MOE, QWEN3NEXT)
    ff_key = _k(_K.FEED_FORWARD_LENGTH, arch)
    if moe and not m.has(ff_key):  # (a MoE file need not have a dense width: the experts' serves)
        m = _Meta({**m.meta, ff_key: m.positive(_k(_K.EXPERT_FEED_FORWARD_LENGTH, arch))}, m.source)
    cfg = _config_llama(m, arch, names, rope_freqs, window=False)
    cfg.pop("mlp_bias")
    nextn = m.get(_k(_K.NEXTN_PREDICT_LAYERS, arch), int, 0)
    blocks = cfg["num_hidden_layers"]
    n = blocks - nextn
    if nextn < 0 or n <= 0:
        raise m.error(_k(_K.NEXTN_PREDICT_LAYERS, arch), f"({nextn}) leaves no layers of the {blocks} blocks")
    heads_v = m.positive(_k(_S.TIME_STEP_RANK, arch))
    inner_key = _k(_S.INNER_SIZE, arch)
    inner = m.positive(inner_key)
    if inner % heads_v:
        raise m.error(inner_key, f"({inner}) is not a multiple of {arch}.ssm.time_step_rank ({heads_v})")
    rkey = _k(_RECURRENT_LAYERS, arch)
    if m.has(rkey):
        flags = m.raw(rkey)
        if not (isinstance(flags, list) and len(flags) >= n and all(isinstance(f, bool) for f in flags)):
            raise m.error(rkey, f"expected {blocks} booleans (true: a Gated DeltaNet layer), got {flags!r}"[:200])
        types = ["linear_attention" if f else "full_attention" for f in flags[:n]]
    else:
        every = m.positive(_k(_K.FULL_ATTENTION_INTERVAL, arch), 4)
        types = ["linear_attention" if (i + 1) % every else "full_attention" for i in range(n)]
    head_dim = cfg["head_dim"]
    rotary = m.positive(_k(_R.DIMENSION_COUNT, arch), head_dim)
    model_type, cls = {QWEN35: ("qwen3_5_text", "Qwen3_5ForCausalLM"), QWEN35MOE: (
        "qwen3_5_moe_text", "Qwen3_5MoeForCausalLM"), QWEN3NEXT: ("qwen3_next", "Qwen3NextForCausalLM")}[arch]
    cfg.update(model_type=model_type, architectures=[cls], num_hidden_layers=n,
               partial_rotary_factor=rotary / head_dim, layer_types=types,
               linear_conv_kernel_dim=m.positive(_k(_S.CONV_KERNEL, arch)),
               linear_key_head_dim=m.positive(_k(_S.STATE_SIZE, arch)),
               linear_num_key_heads=m.positive(_k(_S.GROUP_COUNT, arch)),
               linear_num_value_heads=heads_v, linear_value_head_dim=inner // heads_v)
    if moe:
        ffe = m.positive(_k(_K.EXPERT_FEED_FORWARD_LENGTH, arch))
        cfg.update(num_experts=m.positive(_k(_K.EXPERT_COUNT, arch)),
                   num_experts_per_tok=m.positive(_k(_K.EXPERT_USED_COUNT, arch)), moe_intermediate_size=ffe,
                   # (llama.cpp's fallback: the dense width)
                   shared_expert_intermediate_size=m.positive(_k(_K.EXPERT_SHARED_FEED_FORWARD_LENGTH, arch),
                                                              cfg["intermediate_size"]))
    if arch == QWEN3NEXT:  # (llama.cpp's: every layer sparse, the chosen renormalized)
        cfg.update(norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[])
    return cfg


def _layer_heads(m: _Meta, arch: str, other: str) -> Tuple[int, int, int, List[int]]:
    """(embedding length, blocks, heads, key/value heads per layer): a layer with none is `other`, not attention."""
    hidden = m.positive(_k(_K.EMBEDDING_LENGTH, arch))
    n = m.positive(_k(_K.BLOCK_COUNT, arch))
    heads = m.positive(_k(_A.HEAD_COUNT, arch))
    kv_key = _k(_A.HEAD_COUNT_KV, arch)
    kv = m.raw(kv_key)
    kv = [kv] * n if isinstance(kv, int) and not isinstance(kv, bool) else kv
    if not (isinstance(kv, list) and len(kv) == n and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                                          for x in kv)) or len({x for x in kv if x}) > 1:
        raise m.error(kv_key, f"expected {n} counts, one value or 0 ({other}), got {kv!r}"[:200])
    return hidden, n, heads, kv


def config_lfm2(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """LFM2's config from llama.cpp's keys: a layer with no key/value heads (attention.head_count_kv, per layer)
    is a short convolution of shortconv.l_cache taps; the MLP width as the file holds it."""
    from .gguf_config import _vocab_size
    from .gguf_readers import _OUTPUT

    hidden, n, heads, kv = _layer_heads(m, arch, "a convolution layer")
    if hidden % heads:
        raise m.error(_k(_A.HEAD_COUNT, arch), f"({heads}) does not divide the embedding length ({hidden})")
    cfg = {"architectures": ["Lfm2ForCausalLM"], "model_type": "lfm2", "vocab_size": _vocab_size(m, arch),
            "hidden_size": hidden, "num_hidden_layers": n, "num_attention_heads": heads,
            "num_key_value_heads": max(kv) or heads, "layer_types": ["full_attention" if x else "conv" for x in kv],
            "intermediate_size": m.uniform_positive(_k(_K.FEED_FORWARD_LENGTH, arch)),
            "block_auto_adjust_ff_dim": False,
            "conv_L_cache": m.positive(_k(Keys.ShortConv.L_CACHE, arch)),
            "norm_eps": m.get(_k(_A.LAYERNORM_RMS_EPS, arch), float),
            "rope_theta": m.get(_k(_R.FREQ_BASE, arch), float, 1000000.0),
            "max_position_embeddings": m.positive(_k(_K.CONTEXT_LENGTH, arch)),
            "tie_word_embeddings": _OUTPUT not in names}
    if arch == LFM2MOE:  # (llama.cpp's: a sigmoid router, the chosen renormalized, unscaled)
        gate_key = _k(_K.EXPERT_GATING_FUNC, arch)
        if m.get(gate_key, int) != 2:
            raise m.error(gate_key, "must be 2 (sigmoid), as LFM2-MoE routes")
        cfg.update(model_type="lfm2_moe", architectures=["Lfm2MoeForCausalLM"],
                   num_experts=m.positive(_k(_K.EXPERT_COUNT, arch)),
                   num_experts_per_tok=m.positive(_k(_K.EXPERT_USED_COUNT, arch)),
                   moe_intermediate_size=m.uniform_positive(_k(_K.EXPERT_FEED_FORWARD_LENGTH, arch)),
                   num_dense_layers=m.get(_k(_K.LEADING_DENSE_BLOCK_COUNT, arch), int, 0),
                   use_expert_bias=True, norm_topk_prob=True, routed_scaling_factor=1.0)
    return cfg


# -- config.json -> metadata -------------------------------------------------------------------------------


def _layer_heads_metadata(spec, put, context: int, ffn: int) -> None:
    """The keys LFM2 and Granite 4.0-H share: a recurrent layer has no key/value heads (the read side:
    _layer_heads)."""
    put(_K.VOCAB_SIZE, spec.vocab_size)
    put(_K.CONTEXT_LENGTH, context)
    put(_K.EMBEDDING_LENGTH, spec.hidden_size)
    put(_K.BLOCK_COUNT, spec.n_layers)
    put(_K.FEED_FORWARD_LENGTH, ffn)
    put(_A.HEAD_COUNT, spec.n_heads)
    put(_A.HEAD_COUNT_KV, [0 if f else spec.n_kv_heads for f in spec.layer_linear])
    put(_A.LAYERNORM_RMS_EPS, spec.norm_eps)
    put(_R.FREQ_BASE, spec.rope.theta)


def lfm2_metadata(cfg, config: Dict[str, Any], put) -> None:
    """LFM2's keys as llama.cpp's converter writes them: key/value heads 0 on the convolution layers."""
    from .archs import spec_from_config

    spec = spec_from_config(config, cfg.source)[0]
    if spec.n_heads * spec.head_dim != spec.hidden_size:
        raise cfg.error("num_attention_heads", "times the head size differs from hidden_size: llama.cpp's lfm2 "
                                               "assumes them equal")
    _layer_heads_metadata(spec, put, cfg.positive("max_position_embeddings", 128000), spec.ffn_size)
    put(Keys.ShortConv.L_CACHE, spec.lin_conv)
    if spec.model_type == "lfm2_moe":  # (what llama.cpp's lfm2moe assumes, checked)
        for field, ok in (("use_expert_bias", spec.moe_select_bias), ("norm_topk_prob", spec.moe_norm_topk),
                          ("routed_scaling_factor", spec.moe_routed_scale == 1.0)):
            if not ok:
                raise cfg.error(field, "differs from what llama.cpp's lfm2moe assumes (an expert bias, renormalized, "
                                       "unscaled weights)")
        put(_K.EXPERT_COUNT, spec.n_experts)
        put(_K.EXPERT_USED_COUNT, spec.n_experts_used)
        put(_K.EXPERT_FEED_FORWARD_LENGTH, spec.moe_ffn_size)
        flags = list(spec.layer_moe) or [1] * spec.n_layers
        dense = flags.index(1) if 1 in flags else spec.n_layers
        if any(not f for f in flags[dense:]):
            raise cfg.error("num_dense_layers", "leaves dense layers among the sparse ones")
        put(_K.LEADING_DENSE_BLOCK_COUNT, dense)
        put(_K.EXPERT_GATING_FUNC, 2)  # (sigmoid)


def with_defaults(mt: str, config: Dict[str, Any]) -> Dict[str, Any]:
    """The text model's config with its class's defaults (a MoE's dense width: the experts')."""
    from .archs_hybrid import QWEN3_5_DEFAULTS, QWEN3_5_MOE_DEFAULTS, QWEN3_NEXT_DEFAULTS

    if mt == "qwen3_next":
        return {**QWEN3_NEXT_DEFAULTS, **config}
    if mt == "qwen3_5_moe_text":
        out = {**QWEN3_5_MOE_DEFAULTS, **config}
        out.setdefault("intermediate_size", out["moe_intermediate_size"])
        return out
    return {**QWEN3_5_DEFAULTS, **config}


def qwen35_metadata(cfg, config: Dict[str, Any], mt: str, params: Dict[str, Any], put) -> None:
    """What llama.cpp's qwen35 / qwen35moe read beyond a Llama's keys, after checking that llama.cpp computes the
    model as transformers does (one state size for keys and values; a MoE's shared expert)."""
    from .archs import spec_from_config

    spec = spec_from_config(config, cfg.source)[0]
    if spec.lin_k_dim != spec.lin_v_dim:
        raise cfg.error("linear_value_head_dim", f"({spec.lin_v_dim}) differs from linear_key_head_dim "
                                                 f"({spec.lin_k_dim}): llama.cpp's {mt} assumes them equal")
    put(_S.CONV_KERNEL, spec.lin_conv)
    put(_S.STATE_SIZE, spec.lin_k_dim)
    put(_S.GROUP_COUNT, spec.lin_k_heads)
    put(_S.TIME_STEP_RANK, spec.lin_v_heads)
    put(_S.INNER_SIZE, spec.lin_v_dim * spec.lin_v_heads)
    linear = [bool(f) for f in spec.layer_linear]
    put(_RECURRENT_LAYERS, linear)
    every = cfg.positive("full_attention_interval", 4)
    put(_K.FULL_ATTENTION_INTERVAL, every)
    if mt == "qwen3_next":
        if list(spec.layer_moe) and not all(spec.layer_moe):
            raise cfg.error("mlp_only_layers", f"names dense layers: llama.cpp reads every layer of a {mt} file as "
                                               "sparse")
        if not spec.moe_norm_topk:
            raise cfg.error("norm_topk_prob", f"is false: llama.cpp's {mt} always renormalizes")
        _experts_metadata(cfg, spec, mt, put)
        return
    sections = params.get("mrope_section")
    if isinstance(sections, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in sections):
        sections = (list(sections) + [0, 0, 0, 0])[:4]
    else:
        sections = _DEFAULT_SECTIONS
    put(_R.DIMENSION_SECTIONS, sections)
    if mt == "qwen3_5_moe_text":
        _experts_metadata(cfg, spec, mt, put)


def _experts_metadata(cfg, spec, mt: str, put) -> None:
    put(_K.EXPERT_COUNT, spec.n_experts)
    put(_K.EXPERT_USED_COUNT, spec.n_experts_used)
    put(_K.EXPERT_FEED_FORWARD_LENGTH, spec.moe_ffn_size)
    if not spec.shared_ffn_size:
        raise cfg.error("shared_expert_intermediate_size", f"is 0: llama.cpp's {mt} always has the shared expert")
    put(_K.EXPERT_SHARED_FEED_FORWARD_LENGTH, spec.shared_ffn_size)


# -- layouts -----------------------------------------------------------------------------------------------

def tiled_order(k_heads: int, v_heads: int, width: int) -> np.ndarray:
    """Index of transformers' row (or column) for each of llama.cpp's: value head r * k_heads + g takes head
    g * (v_heads / k_heads) + r, each `width` rows."""
    per = v_heads // k_heads
    heads = np.arange(v_heads).reshape(k_heads, per).T.reshape(-1)  # [g * per + r for r, g]
    return (heads[:, None] * width + np.arange(width)[None, :]).reshape(-1)


def _linear_orders(spec) -> Dict[str, tuple]:
    """{canonical part: (axis, index)} reordering a Gated DeltaNet layer's tensors from grouped to tiled."""
    hk, hv, dv = spec.lin_k_heads, spec.lin_v_heads, spec.lin_v_dim
    kd = 2 * hk * spec.lin_k_dim
    v_rows = tiled_order(hk, hv, dv)
    with_qk = np.concatenate([np.arange(kd), kd + v_rows])
    heads = tiled_order(hk, hv, 1)
    return {"lin.qkv.weight": (0, with_qk), "lin.conv.weight": (0, with_qk), "lin.z.weight": (0, v_rows),
            "lin.b.weight": (0, heads), "lin.a.weight": (0, heads), "lin.dt_bias": (0, heads),
            "lin.A_log": (0, heads), "lin.A": (0, heads), "lin.out.weight": (1, v_rows)}


def _needs_tiling(spec) -> bool:
    from .gguf_common import _ARCH_OF_MODEL_TYPE

    return (_ARCH_OF_MODEL_TYPE.get(spec.model_type) in TILED_ARCHS and spec.recurrent()
            and spec.lin_k_heads != spec.lin_v_heads)


def _fused_rows(spec, g: str) -> int:
    """Rows of a GGUF tensor that holds several of our weights' rows (as the checkpoint fuses them)."""
    kd, vd = spec.lin_k_heads * spec.lin_k_dim, spec.lin_v_heads * spec.lin_v_dim
    kind = g.split(".")[2]
    return {"attn_q": 2 * spec.n_heads * spec.head_dim, "ssm_ba": 2 * spec.lin_v_heads,
            "ssm_in": 2 * kd + 2 * vd}[kind]


def gguf_linear_layout(spec, names: Dict[str, Any]) -> None:
    """A model loaded quantized computes with its value heads in llama.cpp's tiled order (the orders are the same
    model), so that its GGUF file holds exactly its tensors: ssm_out's columns could not be moved once quantized."""
    from .archs import Derived

    if not _needs_tiling(spec) or spec.lin_v_tiled:
        return
    orders = _linear_orders(spec)
    for i in range(spec.n_layers):
        if not spec.layer_linear[i]:
            continue
        for part, (axis, idx) in orders.items():
            key = f"layers.{i}.{part}"
            if key not in names:  # (lin.A: the model's, not the checkpoint's)
                continue
            src = names[key]
            if not isinstance(src, str):
                raise ValueError(f"{key}: expected a checkpoint tensor, got {src!r}")
            names[key] = Derived(src, cols=idx) if axis else Derived(src, rows=idx)
    spec.lin_v_tiled = True


# weights llama.cpp's converter splits out of one checkpoint tensor as we hold them: {model_type: {part: tensor}}
_SPLIT = {"granitemoehybrid": {"mlp.gate.weight": "ffn_gate", "mlp.up.weight": "ffn_up", "mlp.down.weight": "ffn_down",
                               "moe.shared.gate.weight": "ffn_gate_shexp", "moe.shared.up.weight": "ffn_up_shexp",
                               "moe.shared.down.weight": "ffn_down_shexp"},
          "qwen3_next": {"lin.qkv.weight": "attn_qkv", "lin.z.weight": "attn_gate"}}
# Mamba2 mixers' vectors as llama.cpp shapes them ([heads, 1]; the norm [groups, width]), by model type
_MAMBA2_SHAPED = ("lin.A", "lin.D", "lin.norm.weight")
_MAMBA2_TYPES = ("granitemoehybrid", "mamba2", "nemotron_h", "falcon_h1")


def direct_name(spec, canonical: str) -> Optional[str]:
    """The GGUF tensor of a weight that llama.cpp's converter splits out of one checkpoint tensor and we hold as it
    does: Granite 4.0-H's shared MLP (input_linear's gate and up rows, ffn_gate / ffn_up or their _shexp), Qwen3-Next's
    q|k|v and z (in_proj_qkvz's rows, attn_qkv and attn_gate; an older file's fused ssm_in is read by read_tensor)."""
    table = _SPLIT.get(spec.model_type)
    if table is None or not canonical.startswith("layers."):
        return None
    kind = table.get(canonical.split(".", 2)[-1])
    return None if kind is None else f"blk.{canonical.split('.')[1]}.{kind}.weight"


def read_tensor(tmap, spec, canonical: str, v: Any, g: str, path: str) -> Optional[Tuple[str, str]]:
    """(canonical name, key in the file's tensor map) where a hybrid's weight is not the GGUF tensor `g` as stored
    under its own name (None where it is): rows of a tensor the file keeps fused as the checkpoint does (attn_q's
    query and gate rows, ssm_ba's b and a, an older Qwen3-Next file's ssm_in), added as owned copies; a Mamba2
    mixer's [heads, 1] and [groups, width] vectors flattened; and ssm_a, the decay rates themselves (lin.A) where the
    checkpoint has their logarithm (lin.A_log)."""
    from .archs import Derived

    part = canonical.split(".", 2)[-1]
    if spec.model_type in _MAMBA2_TYPES and part in ("lin.A_log", "lin.D", "lin.norm.weight"):
        out = canonical[:-len("_log")] if part == "lin.A_log" else canonical
        if g not in tmap:
            return out, g
        key = f"{g}[flat]"  # (as one vector)
        if key not in tmap:
            t = tmap.get(g)
            tmap.add_array(key, np.asarray(t.numpy()).reshape(-1), t.dtype, path, True)
        return out, key
    if canonical.endswith(".lin.A_log"):
        return canonical[:-len("_log")], g
    if not (isinstance(v, Derived) and v.rows is not None and not isinstance(v.rows, slice)):
        return None
    if g not in tmap:  # (rows of a fused tensor the file lacks)
        raise ValueError(f"{path}: no GGUF tensor '{g}' (for {canonical})")
    key = f"{g}[{canonical.split('.', 2)[-1]}]"
    if key not in tmap:
        t = tmap.get(g)
        a = t.numpy()
        want = _fused_rows(spec, g)
        if a.ndim != 2 or a.shape[0] != want:
            raise ValueError(f"{path}: {g} has shape {list(t.shape)}, expected {want} rows")
        tmap.add_array(key, a[np.asarray(v.rows)], t.dtype, path, True)
    return canonical, key


def write_tensor(spec, canonical: str, v: Any, a: np.ndarray, dtype, g: str, tensors: Dict[str, tuple]) -> bool:
    """Puts a hybrid's tensor into `tensors` in llama.cpp's layout where that differs from ours (True), else leaves
    it to the caller (False): tensors fused as in the checkpoint rebuilt from our rows (attn_q, ssm_ba), the
    convolution's and the Mamba2 mixers' vectors' shapes, and the value heads tiled where llama.cpp's files have them so
    and the model holds them grouped. (The model's lin.A is ssm_a as it is; split weights: direct_name.)"""
    from .archs import Derived

    if isinstance(v, Derived) and v.rows is not None and not isinstance(v.rows, slice):  # (rows of a fused tensor)
        full = tensors.get(g)
        if full is None:
            full = (np.zeros((_fused_rows(spec, g),) + a.shape[1:], a.dtype), dtype)
            tensors[g] = full
        full[0][np.asarray(v.rows)] = a
        return True
    part = canonical.split(".", 2)[-1]
    if not (canonical.startswith("layers.") and part.startswith("lin.")):
        return False
    order = _linear_orders(spec).get(part) if _needs_tiling(spec) and not spec.lin_v_tiled else None
    if order is not None:
        axis, idx = order
        if axis and str(dtype).split(".")[1] not in ("f32", "f16", "bf16"):
            raise ValueError(f"{canonical}: a quantized matrix's columns cannot be reordered into llama.cpp's "
                             "value-head order; load the model with a quantized dtype (which lays it out so)")
        a = a[:, idx] if axis else a[idx]
    if part == "lin.conv.weight":
        a = a.reshape(a.shape[0], -1)
    elif spec.model_type in _MAMBA2_TYPES and part in _MAMBA2_SHAPED:
        a = a.reshape(spec.ssm_groups, -1) if part == "lin.norm.weight" else a.reshape(-1, 1)
    tensors[g] = (np.ascontiguousarray(a), dtype)
    return True


__all__: List[str] = ["config_qwen35", "qwen35_metadata", "gguf_linear_layout", "read_tensor", "write_tensor",
                      "name_table", "tiled_order", "HYBRID_ARCHS", "SSM_ARCHS", "TILED_ARCHS", "TEXT_MODEL_TYPE"]
