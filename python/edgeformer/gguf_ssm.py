"""The Mamba family in GGUF: Granite 4.0-H (llama.cpp's ``granitehybrid``: Mamba2 layers those without key/value
heads; the shared MLP's gate and up split), Mamba2 and Nemotron-H (``mamba2``, ``nemotron_h``, ``nemotron_h_moe``:
Nemotron-H's MLP or expert layers those with a feed-forward width, its attention layers those with key/value heads,
both per-layer arrays), Mamba and Falcon-Mamba (``mamba``), Falcon-H1 (``falcon-h1``: its multipliers folded into
the weights) and Jamba (``jamba``): tensor names, config.json from the metadata, and the metadata from a config.
A Mamba2 mixer's ssm_a and ssm_d are [heads, 1], its ssm_norm [groups, width] (gguf_hybrid's read_tensor /
write_tensor reshape them); ssm_a is -exp(A_log), as the model holds it."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from gguf.constants import MODEL_TENSOR, Keys

from .gguf_common import (FALCON_H1, GRANITE_HYBRID, JAMBA, MAMBA, MAMBA2, NEMOTRON_H, NEMOTRON_H_MOE, _Meta)
from .gguf_hybrid import _W, _layer_heads, _layer_heads_metadata, _k, attention_names

_K, _A, _R, _S = Keys.LLM, Keys.Attention, Keys.Rope, Keys.SSM
_T = MODEL_TENSOR


def ssm_name_table(arch: str):
    """(llama.cpp tensor, HF name, suffixes, stack) as gguf_names' tables; experts: gguf_names.expert_tensor."""
    L = "model.layers.{i}."
    if arch == GRANITE_HYBRID:  # (the shared MLP: direct_name; the experts: expert_tensor)
        return [
            (_T.TOKEN_EMBD, "model.embed_tokens", _W, None),
            (_T.OUTPUT_NORM, "model.norm", _W, None),
            (_T.OUTPUT, "lm_head", _W, None),
            (_T.ATTN_NORM, L + "input_layernorm", _W, "blk"),
            (_T.FFN_NORM, L + "post_attention_layernorm", _W, "blk"),
            *attention_names(L + "self_attn."),
            (_T.FFN_GATE_INP, L + "block_sparse_moe.router.layer", _W, "blk"),
        ] + _mamba2_names(L + "mamba.")
    if arch == FALCON_H1:  # (its pre-MLP norm named without ".weight", as llama.cpp's converter writes it)
        return [(_T.TOKEN_EMBD, "model.embed_tokens", _W, None),
                (_T.OUTPUT_NORM, "model.final_layernorm", _W, None),
                (_T.OUTPUT, "lm_head", _W, None),
                (_T.ATTN_NORM, L + "input_layernorm", _W, "blk"),
                (_T.FFN_PRE_NORM, L + "pre_ff_layernorm", (("", ".weight"),), "blk"),
                *attention_names(L + "self_attn."),
                (_T.FFN_GATE, L + "feed_forward.gate_proj", _W, "blk"),
                (_T.FFN_UP, L + "feed_forward.up_proj", _W, "blk"),
                (_T.FFN_DOWN, L + "feed_forward.down_proj", _W, "blk")] + _mamba2_names(L + "mamba.")
    if arch == JAMBA:  # (its experts: gguf_names.expert_tensor)
        return [(_T.TOKEN_EMBD, "model.embed_tokens", _W, None),
                (_T.OUTPUT_NORM, "model.final_layernorm", _W, None),
                (_T.OUTPUT, "lm_head", _W, None),
                (_T.ATTN_NORM, L + "input_layernorm", _W, "blk"),
                (_T.FFN_NORM, L + "pre_ff_layernorm", _W, "blk"),
                *attention_names(L + "self_attn."),
                (_T.FFN_GATE_INP, L + "feed_forward.router", _W, "blk"),
                (_T.FFN_GATE, L + "feed_forward.gate_proj", _W, "blk"),
                (_T.FFN_UP, L + "feed_forward.up_proj", _W, "blk"),
                (_T.FFN_DOWN, L + "feed_forward.down_proj", _W, "blk")] + _mamba_names(L + "mamba.")
    if arch == MAMBA:  # (its time step through dt_proj, a weight and a bias; A per channel and state)
        return [(_T.TOKEN_EMBD, "backbone.embeddings", _W, None),
                (_T.OUTPUT_NORM, "backbone.norm_f", _W, None),
                (_T.OUTPUT, "lm_head", _W, None),
                (_T.ATTN_NORM, "backbone.layers.{i}.norm", _W, "blk")] + _mamba_names("backbone.layers.{i}.mixer.")
    if arch in (MAMBA2, NEMOTRON_H, NEMOTRON_H_MOE):  # (the original checkpoints' names: backbone.; one norm per layer)
        B = "backbone.layers.{i}."
        moe = [(_T.FFN_GATE_INP, B + "mixer.gate", _W, "blk"),
               (_T.FFN_EXP_PROBS_B, B + "mixer.gate.e_score_correction_bias", ((".bias", ""),), "blk"),
               (_T.FFN_UP_SHEXP, B + "mixer.shared_experts.up_proj", _W, "blk"),
               (_T.FFN_DOWN_SHEXP, B + "mixer.shared_experts.down_proj", _W, "blk")] if arch == NEMOTRON_H_MOE else []
        return moe + [
            (_T.TOKEN_EMBD, "backbone.embeddings", _W, None),
            (_T.OUTPUT_NORM, "backbone.norm_f", _W, None),
            (_T.OUTPUT, "lm_head", _W, None),
            (_T.ATTN_NORM, B + "norm", _W, "blk"),
            *attention_names(B + "mixer."),
            (_T.FFN_UP, B + "mixer.up_proj", (".weight", ".bias"), "blk"),
            (_T.FFN_DOWN, B + "mixer.down_proj", (".weight", ".bias"), "blk"),
        ] + _mamba2_names(B + "mixer.")
    raise ValueError(f"no tensor names for {arch!r}")


# Falcon-Mamba's mixer_rms_eps (dt's, B's and C's norms), which llama.cpp has no key for: it normalizes them with the
# layers' epsilon. Ours, read back where present (llama.cpp ignores it and computes as with its converter's files).
_MIXER_EPS = "edgeformer.ssm.dt_b_c_rms_eps"


def _mamba2_names(m: str):
    """A Mamba2 mixer's tensors under m (its ssm_a: the checkpoint's A_log, read_tensor / write_tensor convert)."""
    return [(_T.SSM_IN, m + "in_proj", _W, "blk"),
            (_T.SSM_CONV1D, m + "conv1d", (".weight", ".bias"), "blk"),
            (_T.SSM_DT, m + "dt_bias", ((".bias", ""),), "blk"),
            (_T.SSM_A, m + "A_log", (("", ""),), "blk"),
            (_T.SSM_D, m + "D", (("", ""),), "blk"),
            (_T.SSM_NORM, m + "norm", _W, "blk"),
            (_T.SSM_OUT, m + "out_proj", _W, "blk")]


def _mamba_names(m: str):
    """A Mamba mixer's tensors under m (Jamba's dt, B and C norms too; its ssm_a: the checkpoint's A_log)."""
    return [(_T.SSM_IN, m + "in_proj", _W, "blk"),
            (_T.SSM_CONV1D, m + "conv1d", (".weight", ".bias"), "blk"),
            (_T.SSM_X, m + "x_proj", _W, "blk"),
            (_T.SSM_DT, m + "dt_proj", (".weight", ".bias"), "blk"),
            (_T.SSM_DT_NORM, m + "dt_layernorm", _W, "blk"),
            (_T.SSM_B_NORM, m + "b_layernorm", _W, "blk"),
            (_T.SSM_C_NORM, m + "c_layernorm", _W, "blk"),
            (_T.SSM_A, m + "A_log", (("", ""),), "blk"),
            (_T.SSM_D, m + "D", (("", ""),), "blk"),
            (_T.SSM_OUT, m + "out_proj", _W, "blk")]


def config_granite_hybrid(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """Granite 4.0-H's config from llama.cpp's keys: a layer without key/value heads is a Mamba2 mixer (the ssm
    keys), rope.scaling.finetuned switches rotary on, Granite's four scales; experts where expert_count is set (their
    width feed_forward_length, the shared MLP's expert_shared_feed_forward_length), else the shared MLP alone."""
    from .gguf_config import _vocab_size
    from .gguf_readers import _OUTPUT

    hidden, n, heads, kv = _layer_heads(m, arch, "a Mamba2 layer")
    nh, inner = m.positive(_k(Keys.SSM.TIME_STEP_RANK, arch)), m.positive(_k(Keys.SSM.INNER_SIZE, arch))
    if inner % nh or inner % hidden:
        raise m.error(_k(Keys.SSM.INNER_SIZE, arch), f"({inner}) is not a multiple of the heads ({nh}) and the "
                                                     f"embedding length ({hidden})")
    ff = m.uniform_positive(_k(_K.FEED_FORWARD_LENGTH, arch))
    experts = m.get(_k(_K.EXPERT_COUNT, arch), int, 0)
    cfg = {"architectures": ["GraniteMoeHybridForCausalLM"], "model_type": "granitemoehybrid",
           "vocab_size": _vocab_size(m, arch), "hidden_size": hidden, "num_hidden_layers": n,
           "num_attention_heads": heads, "num_key_value_heads": max(kv) or heads,
           "layer_types": ["attention" if x else "mamba" for x in kv],
           "rms_norm_eps": m.get(_k(_A.LAYERNORM_RMS_EPS, arch), float),
           "rope_theta": m.get(_k(_R.FREQ_BASE, arch), float, 10000.0),
           "max_position_embeddings": m.positive(_k(_K.CONTEXT_LENGTH, arch)),
           "position_embedding_type": "rope" if m.get(_k(_R.SCALING_FINETUNED, arch), bool, True) else None,
           "mamba_n_heads": nh, "mamba_d_head": inner // nh, "mamba_expand": inner // hidden,
           "mamba_n_groups": m.positive(_k(Keys.SSM.GROUP_COUNT, arch)),
           "mamba_d_state": m.positive(_k(Keys.SSM.STATE_SIZE, arch)),
           "mamba_d_conv": m.positive(_k(Keys.SSM.CONV_KERNEL, arch)),
           "mamba_conv_bias": _conv_bias(names, kv),
           "num_local_experts": experts, "intermediate_size": ff,
           "shared_intermediate_size": (m.positive(_k(_K.EXPERT_SHARED_FEED_FORWARD_LENGTH, arch), ff) if experts
                                        else ff),
           "tie_word_embeddings": _OUTPUT not in names}
    if experts:
        cfg["num_experts_per_tok"] = m.positive(_k(_K.EXPERT_USED_COUNT, arch))
    for key, field in ((_K.EMBEDDING_SCALE, "embedding_multiplier"), (_A.SCALE, "attention_multiplier"),
                       (_K.RESIDUAL_SCALE, "residual_multiplier"), (_K.LOGIT_SCALE, "logits_scaling")):
        cfg[field] = m.get(_k(key, arch), float, 1.0)
    return cfg


def _ssm_keys(m: _Meta, arch: str, names: set) -> Tuple[int, int, int, int, float, Dict[str, Any]]:
    """(embedding length, blocks, time_step_rank, inner size, RMSNorm epsilon, the config fields every Mamba-family
    reader shares): the ssm keys' values as llama.cpp's files hold them."""
    from .gguf_config import _vocab_size
    from .gguf_readers import _OUTPUT

    hidden, n = m.positive(_k(_K.EMBEDDING_LENGTH, arch)), m.positive(_k(_K.BLOCK_COUNT, arch))
    rank, inner = m.positive(_k(_S.TIME_STEP_RANK, arch)), m.positive(_k(_S.INNER_SIZE, arch))
    if inner % rank and arch not in (MAMBA, JAMBA):  # (Mamba's time_step_rank is its time step's rank)
        raise m.error(_k(_S.INNER_SIZE, arch), f"({inner}) is not a multiple of the heads ({rank})")
    eps_key = _k(_A.LAYERNORM_RMS_EPS, arch)
    eps = (m.get(eps_key, float) if m.has(eps_key) or arch in (MAMBA, MAMBA2, JAMBA)
           else m.get(_k(_A.LAYERNORM_EPS, arch), float))
    common = {"vocab_size": _vocab_size(m, arch), "hidden_size": hidden, "num_hidden_layers": n,
              "tie_word_embeddings": _OUTPUT not in names}
    return hidden, n, rank, inner, eps, common


def _conv_bias(names: set, kv: List[int]) -> bool:
    """Whether the mixers' convolutions have a bias: the first layer without key/value heads (a mixer) says."""
    return f"blk.{kv.index(0) if 0 in kv else 0}.ssm_conv1d.bias" in names


def config_mamba(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """Mamba's or Falcon-Mamba's config (ssm.dt_b_c_rms: dt, B and C RMS-normalized, with the layers' epsilon as
    llama.cpp computes, or our own key's)."""
    hidden, n, rank, inner, eps, common = _ssm_keys(m, arch, names)
    falcon = m.get(_k(_S.DT_B_C_RMS, arch), bool, False)
    cfg = {**common, "architectures": ["FalconMambaForCausalLM" if falcon else "MambaForCausalLM"],
           "model_type": "falcon_mamba" if falcon else "mamba", "layer_norm_epsilon": eps,
           "conv_kernel": m.positive(_k(_S.CONV_KERNEL, arch)), "intermediate_size": inner, "time_step_rank": rank,
           "state_size": m.positive(_k(_S.STATE_SIZE, arch)), "use_conv_bias": "blk.0.ssm_conv1d.bias" in names}
    return {**cfg, "mixer_rms_eps": m.get(_MIXER_EPS, float, eps)} if falcon else cfg


def config_mamba2(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """Mamba2's config: its heads are time_step_rank."""
    hidden, n, nh, inner, eps, common = _ssm_keys(m, arch, names)
    if inner % hidden:
        raise m.error(_k(_S.INNER_SIZE, arch), f"({inner}) is not a multiple of the embedding length ({hidden})")
    return {**common, "architectures": ["Mamba2ForCausalLM"], "model_type": "mamba2", "layer_norm_epsilon": eps,
            "conv_kernel": m.positive(_k(_S.CONV_KERNEL, arch)), "n_groups": m.positive(_k(_S.GROUP_COUNT, arch), 1),
            "num_heads": nh, "head_dim": inner // nh, "expand": inner // hidden,
            "state_size": m.positive(_k(_S.STATE_SIZE, arch)), "use_conv_bias": "blk.0.ssm_conv1d.bias" in names}


def config_jamba(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """Jamba's config: attention where a layer has key/value heads, experts where it has a router, both every
    n-th layer from an offset (as Jamba's config describes them)."""
    hidden, n, rank, inner, eps, common = _ssm_keys(m, arch, names)
    _, _, heads, kv = _layer_heads(m, arch, "a Mamba layer")
    attn = [i for i, x in enumerate(kv) if x]
    sparse = [i for i in range(n) if f"blk.{i}.ffn_gate_inp.weight" in names]
    a_offset, a_period = _periodic(m, _k(_A.HEAD_COUNT_KV, arch), attn, n)
    e_offset, e_period = _periodic(m, "blk.N.ffn_gate_inp.weight", sparse, n) if sparse else (0, 1)
    return {**common, "architectures": ["JambaForCausalLM"], "model_type": "jamba", "rms_norm_eps": eps,
            "num_attention_heads": heads, "num_key_value_heads": max(kv) or heads,
            "intermediate_size": m.uniform_positive(_k(_K.FEED_FORWARD_LENGTH, arch)),
            "max_position_embeddings": m.positive(_k(_K.CONTEXT_LENGTH, arch)),
            "attn_layer_offset": a_offset, "attn_layer_period": a_period, "expert_layer_offset": e_offset,
            "expert_layer_period": e_period,
            "num_experts": m.positive(_k(_K.EXPERT_COUNT, arch)) if sparse else 1,
            "num_experts_per_tok": m.positive(_k(_K.EXPERT_USED_COUNT, arch), 1) if sparse else 1,
            "mamba_d_state": m.positive(_k(_S.STATE_SIZE, arch)), "mamba_d_conv": m.positive(_k(_S.CONV_KERNEL, arch)),
            "mamba_expand": inner // hidden, "mamba_dt_rank": rank, "mamba_conv_bias": _conv_bias(names, kv)}


def config_falcon_h1(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """Falcon-H1's config: its multipliers are folded into the file's weights (none left), its mixers' output
    normalized after the gate where the file has ssm_norm."""
    hidden, n, nh, inner, eps, common = _ssm_keys(m, arch, names)
    heads = m.positive(_k(_A.HEAD_COUNT, arch))
    return {**common, "architectures": ["FalconH1ForCausalLM"], "model_type": "falcon_h1",
            "num_attention_heads": heads, "num_key_value_heads": m.positive(_k(_A.HEAD_COUNT_KV, arch), heads),
            "head_dim": m.positive(_k(_A.KEY_LENGTH, arch), hidden // heads),
            "intermediate_size": m.uniform_positive(_k(_K.FEED_FORWARD_LENGTH, arch)), "rms_norm_eps": eps,
            "rope_theta": m.get(_k(_R.FREQ_BASE, arch), float, 10000.0),
            "max_position_embeddings": m.positive(_k(_K.CONTEXT_LENGTH, arch)), "mamba_d_ssm": inner,
            "mamba_n_heads": nh, "mamba_d_head": inner // nh,
            "mamba_n_groups": m.positive(_k(_S.GROUP_COUNT, arch), 1),
            "mamba_d_state": m.positive(_k(_S.STATE_SIZE, arch)), "mamba_d_conv": m.positive(_k(_S.CONV_KERNEL, arch)),
            "mamba_conv_bias": "blk.0.ssm_conv1d.bias" in names,
            "mamba_rms_norm": "blk.0.ssm_norm.weight" in names, "mamba_norm_before_gate": False}


def config_nemotron_h(m: _Meta, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """Nemotron-H's (and Nemotron 3's, nemotron_h_moe) config: the layer types from the per-layer counts, as llama.cpp
    tells them: a feed-forward width (an MLP or expert layer), else key/value heads (attention), else a Mamba2 mixer."""
    hidden, n, nh, inner, eps, common = _ssm_keys(m, arch, names)
    _, _, heads, kv = _layer_heads(m, arch, "a Mamba2 or MLP layer")
    ff_key = _k(_K.FEED_FORWARD_LENGTH, arch)
    ff = m.raw(ff_key)
    ff = [ff] * n if isinstance(ff, int) and not isinstance(ff, bool) else ff
    if not (isinstance(ff, list) and len(ff) == n and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                                          for x in ff)) or len({x for x in ff if x}) != 1:
        raise m.error(ff_key, f"expected {n} widths, one value or 0 (not an MLP layer), got {ff!r}"[:200])
    moe = arch == NEMOTRON_H_MOE  # (its layers with a feed-forward width are experts)
    types = [("moe" if moe else "mlp") if f else "full_attention" if k else "linear_attention" for f, k in zip(ff, kv)]
    cfg = {**common, "architectures": ["NemotronHForCausalLM"], "model_type": "nemotron_h",
           "layers_block_type": types, "layer_norm_epsilon": eps, "conv_kernel": m.positive(_k(_S.CONV_KERNEL, arch)),
           "n_groups": m.positive(_k(_S.GROUP_COUNT, arch), 1), "num_attention_heads": heads,
           "num_key_value_heads": max(kv) or heads, "head_dim": m.positive(_k(_A.KEY_LENGTH, arch), hidden // heads),
           "intermediate_size": max(ff), "mamba_num_heads": nh, "mamba_head_dim": inner // nh,
           "ssm_state_size": m.positive(_k(_S.STATE_SIZE, arch)),
           "use_conv_bias": _conv_bias(names, [f or k for f, k in zip(ff, kv)]),
           "mlp_bias": any(x.endswith(".ffn_up.bias") for x in names)}
    if moe:
        if m.has(_k(_K.MOE_LATENT_SIZE, arch)):
            raise m.error(_k(_K.MOE_LATENT_SIZE, arch), "is set (latent expert projections): not supported yet")
        cfg.update(n_routed_experts=m.positive(_k(_K.EXPERT_COUNT, arch)),
                   num_experts_per_tok=m.positive(_k(_K.EXPERT_USED_COUNT, arch)),
                   moe_intermediate_size=m.uniform_positive(_k(_K.EXPERT_FEED_FORWARD_LENGTH, arch), max(ff)),
                   moe_shared_expert_intermediate_size=m.positive(_k(_K.EXPERT_SHARED_FEED_FORWARD_LENGTH, arch)),
                   n_shared_experts=1, norm_topk_prob=m.get(_k(_K.EXPERT_WEIGHTS_NORM, arch), bool, False),
                   routed_scaling_factor=m.get(_k(_K.EXPERT_WEIGHTS_SCALE, arch), float, 1.0),
                   n_group=m.positive(_k(_K.EXPERT_GROUP_COUNT, arch), 1),
                   topk_group=m.positive(_k(_K.EXPERT_GROUP_USED_COUNT, arch), 1))
    return cfg


def _periodic(m: _Meta, key: str, layers: List[int], n: int) -> Tuple[int, int]:
    """(offset, period) of layer indices every period-th from offset (Jamba's attention and expert layers)."""
    offset = layers[0] if layers else n
    period = layers[1] - layers[0] if len(layers) > 1 else n
    if layers != list(range(offset, n, period)) or offset >= period:
        raise m.error(key, f"places its layers at {layers}: not every n-th from an offset below n, as Jamba's "
                           "config describes them")
    return offset, period


def granite_hybrid_metadata(cfg, config: Dict[str, Any], put) -> None:
    """Granite 4.0-H's keys as llama.cpp's converter writes them, after checking what llama.cpp assumes (no time
    step clamp)."""
    from . import _core

    spec = _ssm_metadata(cfg, config, put, None)
    rope = spec.pos == _core.PosKind.rotary
    _layer_heads_metadata(spec, put, cfg.positive("max_position_embeddings", 4096) if rope else 1 << 20,
                          spec.moe_ffn_size if spec.n_experts else spec.ffn_size)
    put(_A.KEY_LENGTH, spec.head_dim)
    put(_A.VALUE_LENGTH, spec.head_dim)
    put(_R.DIMENSION_COUNT, spec.head_dim)
    put(_R.SCALING_FINETUNED, rope)
    put(_K.EMBEDDING_SCALE, spec.emb_scale)
    put(_A.SCALE, spec.attn_scale)
    put(_K.RESIDUAL_SCALE, spec.residual_scale)
    put(_K.LOGIT_SCALE, 1.0 / spec.logits_scale)
    if spec.n_experts:
        put(_K.EXPERT_COUNT, spec.n_experts)
        put(_K.EXPERT_USED_COUNT, spec.n_experts_used)
        put(_K.EXPERT_SHARED_FEED_FORWARD_LENGTH, spec.shared_ffn_size)


def nemotron_has_experts(config: Dict[str, Any]) -> bool:
    """Whether a Nemotron-H config has expert layers (Nemotron 3), which llama.cpp calls nemotron_h_moe."""
    types = config.get("layers_block_type") or config.get("hybrid_override_pattern") or []
    return "moe" in types or "E" in types


def _ssm_metadata(cfg, config: Dict[str, Any], put, context: Optional[int]):
    """The model's spec, after the keys every Mamba-family file has (the mixer's sizes: Mamba2's heads as
    time_step_rank, Mamba's time step rank; the context length where given) and the check of what llama.cpp
    assumes of a Mamba2 mixer (no time step clamp)."""
    from .archs import spec_from_config

    spec = spec_from_config(config, cfg.source)[0]
    mamba1 = spec.ssm_dt_rank > 0
    if not mamba1 and (spec.ssm_dt_min != 0.0 or spec.ssm_dt_max != 0.0):
        raise cfg.error("time_step_limit", f"clamps the time step: llama.cpp's {spec.model_type} does not")
    put(_K.VOCAB_SIZE, spec.vocab_size)
    put(_K.CONTEXT_LENGTH, context)  # (None: not put)
    put(_K.EMBEDDING_LENGTH, spec.hidden_size)
    put(_K.BLOCK_COUNT, spec.n_layers)
    put(_A.LAYERNORM_RMS_EPS, spec.norm_eps)
    put(_S.CONV_KERNEL, spec.lin_conv)
    put(_S.INNER_SIZE, spec.ssm_heads * spec.ssm_head_dim)
    put(_S.STATE_SIZE, spec.ssm_state)
    put(_S.TIME_STEP_RANK, spec.ssm_dt_rank if mamba1 else spec.ssm_heads)
    if not mamba1:
        put(_S.GROUP_COUNT, spec.ssm_groups)
    return spec


def mamba_metadata(cfg, config: Dict[str, Any], put) -> None:
    """Mamba's and Falcon-Mamba's keys as llama.cpp's converter writes them (ssm.dt_b_c_rms for Falcon-Mamba, its
    mixer_rms_eps also under our own key)."""
    spec = _ssm_metadata(cfg, config, put, 1 << 20)  # (no positions: the converter's "arbitrary value")
    put(_K.FEED_FORWARD_LENGTH, 0)
    put(_A.HEAD_COUNT, 0)
    put(_S.DT_B_C_RMS, spec.ssm_bcdt_eps > 0)
    if spec.ssm_bcdt_eps > 0:
        put(_MIXER_EPS, spec.ssm_bcdt_eps)


def mamba2_metadata(cfg, config: Dict[str, Any], put) -> None:
    """Mamba2's keys as llama.cpp's converter writes them, after checking that the mixers have the convolution bias
    llama.cpp's mamba2 requires."""
    spec = _ssm_metadata(cfg, config, put, 1 << 20)
    if not spec.ssm_conv_bias:
        raise cfg.error("use_conv_bias", "is false: llama.cpp's mamba2 requires the convolution's bias")
    put(_K.FEED_FORWARD_LENGTH, 0)
    put(_A.HEAD_COUNT, 0)


def nemotron_h_metadata(cfg, config: Dict[str, Any], put) -> None:
    """Nemotron-H's keys as llama.cpp's converter writes them: per layer, key/value heads (attention) and
    feed-forward widths (an MLP or, nemotron_h_moe, experts) tell the layer types."""
    spec = _ssm_metadata(cfg, config, put, 1 << 20)
    moe = spec.n_experts > 0
    if moe:  # (llama.cpp's nemotron_h_moe: every layer with a feed-forward width has experts)
        if not all(spec.layer_moe[i] for i, k in enumerate(spec.layer_linear) if k == 4):
            raise cfg.error("layers_block_type", "mixes MLP and expert layers: llama.cpp's nemotron_h_moe has "
                                                 "experts only")
        put(_K.EXPERT_COUNT, spec.n_experts)
        put(_K.EXPERT_USED_COUNT, spec.n_experts_used)
        put(_K.EXPERT_FEED_FORWARD_LENGTH, spec.moe_ffn_size)
        put(_K.EXPERT_SHARED_FEED_FORWARD_LENGTH, spec.shared_ffn_size)
        put(_K.EXPERT_SHARED_COUNT, 1 if spec.shared_ffn_size else 0)
        put(_K.EXPERT_WEIGHTS_NORM, bool(spec.moe_norm_topk))
        put(_K.EXPERT_WEIGHTS_SCALE, float(spec.moe_routed_scale))
        put(_K.EXPERT_GROUP_COUNT, max(spec.moe_groups, 1))
        put(_K.EXPERT_GROUP_USED_COUNT, max(spec.moe_groups_used, 1))
        put(_K.EXPERT_GATING_FUNC, 2)  # (sigmoid)
    put(_K.FEED_FORWARD_LENGTH, [(spec.moe_ffn_size if moe else spec.ffn_size) if k == 4 else 0
                                 for k in spec.layer_linear])
    put(_A.HEAD_COUNT, spec.n_heads)
    put(_A.HEAD_COUNT_KV, [spec.n_kv_heads if k == 0 else 0 for k in spec.layer_linear])
    put(_A.LAYERNORM_EPS, spec.norm_eps)
    put(_A.KEY_LENGTH, spec.head_dim)
    put(_A.VALUE_LENGTH, spec.head_dim)
    put(_R.SCALING_FINETUNED, False)


def jamba_metadata(cfg, config: Dict[str, Any], put) -> None:
    """Jamba's keys as llama.cpp's converter writes them: the attention layers those with key/value heads (a
    per-layer array), the experts' count (their layers: those with a router tensor), after checking what llama.cpp
    assumes (one head size of hidden_size / heads; the convolution's bias)."""
    spec = _ssm_metadata(cfg, config, put, cfg.positive("max_position_embeddings", 262144))
    if spec.n_heads * spec.head_dim != spec.hidden_size:
        raise cfg.error("num_attention_heads", "times the head size differs from hidden_size: llama.cpp's jamba "
                                               "assumes them equal")
    if not spec.ssm_conv_bias:
        raise cfg.error("mamba_conv_bias", "is false: llama.cpp's jamba requires the convolution's bias")
    put(_K.FEED_FORWARD_LENGTH, spec.ffn_size)
    put(_A.HEAD_COUNT, spec.n_heads)
    put(_A.HEAD_COUNT_KV, [0 if k else spec.n_kv_heads for k in spec.layer_linear])
    put(_K.EXPERT_COUNT, max(spec.n_experts, 1))
    put(_K.EXPERT_USED_COUNT, max(spec.n_experts_used, 1))


def falcon_h1_metadata(cfg, config: Dict[str, Any], put) -> None:
    """Falcon-H1's keys as llama.cpp's converter writes them (its multipliers are in the weights), after checking
    what llama.cpp computes: the mixer's output normalized after the gate, no logit scale."""
    spec = _ssm_metadata(cfg, config, put, cfg.positive("max_position_embeddings", 8192))
    if spec.ssm_norm == 2:
        raise cfg.error("mamba_norm_before_gate", "is true: llama.cpp's falcon-h1 normalizes after the gate")
    if spec.logits_scale != 1.0:
        raise cfg.error("lm_head_multiplier", "differs from embedding_multiplier with a tied head: llama.cpp's "
                                              "falcon-h1 has no logit scale")
    put(_K.FEED_FORWARD_LENGTH, spec.ffn_size)
    put(_A.HEAD_COUNT, spec.n_heads)
    put(_A.HEAD_COUNT_KV, spec.n_kv_heads)
    put(_A.KEY_LENGTH, spec.head_dim)
    put(_A.VALUE_LENGTH, spec.head_dim)
    put(_R.FREQ_BASE, spec.rope.theta)


# the config readers and metadata writers of the families with Mamba or Mamba2 mixers, by llama.cpp architecture
SSM_CONFIG = {GRANITE_HYBRID: config_granite_hybrid, MAMBA: config_mamba, MAMBA2: config_mamba2,
              NEMOTRON_H: config_nemotron_h, NEMOTRON_H_MOE: config_nemotron_h, FALCON_H1: config_falcon_h1,
              JAMBA: config_jamba}
SSM_METADATA = {GRANITE_HYBRID: granite_hybrid_metadata, MAMBA: mamba_metadata, MAMBA2: mamba2_metadata,
                NEMOTRON_H: nemotron_h_metadata, NEMOTRON_H_MOE: nemotron_h_metadata, FALCON_H1: falcon_h1_metadata,
                JAMBA: jamba_metadata}
