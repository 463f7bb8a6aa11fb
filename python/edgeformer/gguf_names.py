"""llama.cpp tensor names <-> Hugging Face tensor names, and the layout changes llama.cpp's converter makes.

* :func:`hf_names_from_gguf` / :func:`gguf_names_from_hf` map tensor names both ways (tables per
  architecture, as gguf-py's ``TENSOR_NAMES`` spell them);
* :func:`to_hf_layout` / :func:`to_gguf_layout` (with :func:`permute_qk` / :func:`unpermute_qk`,
  :func:`hf_row_order`, :func:`needs_transpose`) undo or redo the converter's row orders and transposes.

Layout changes made by llama.cpp's convert_hf_to_gguf.py (undone by :func:`to_hf_layout`):

* llama / mistral: ``attn_q`` rows permuted with ``permute(w, n_head)``, ``attn_k`` with ``n_head_kv``
  (weights and biases); only whole rows move, so quantized rows can be reordered as they are.
* gpt2: the Conv1D matrices (``attn_qkv``, ``attn_output``, ``ffn_up``, ``ffn_down``) are stored
  transposed, i.e. already as [out, in] rows (which is what the engine wants anyway; a quantized one cannot
  be transposed back).
* bloom: ``attn_qkv`` rows regrouped from per-head [q, k, v] to [all q, all k, all v].
* falcon: ``attn_qkv`` rows regrouped from kv groups [q..., k, v] to [all q, all k, all v].
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from gguf.constants import MODEL_TENSOR, TENSOR_NAMES

from .gguf_common import (
    _ARCH_OF_MODEL_TYPE,
    BERT,
    BLOOM,
    MPT,
    FALCON,
    GPT2,
    LLAMA,
    QWEN2,
    QWEN3,
    QWEN2MOE,
    QWEN3MOE,
    PHI3,
    GEMMA,
    GPTNEOX,
    PHI2,
    STARCODER2,
    STABLELM,
    GRANITE,
    GRANITEMOE,
    GPT_OSS,
    OLMO2,
    OLMOE,
    SMOLLM3,
    COMMAND_R,
    GEMMA2,
    GEMMA3,
    ERNIE4_5,
    EXAONE4,
    GLM4,
    HUNYUAN_DENSE,
    ERNIE4_5_MOE,
    GLM4_MOE,
    DEEPSEEK2,
    INTERNLM2,
    EXAONE,
    COHERE2,
    ARCEE,
    NEMOTRON,
    OLMO,
    SEED_OSS,
    MISTRAL3,
    QWEN35,
    QWEN35MOE,
    QWEN3NEXT,
    LFM2,
    LFM2MOE,
    GRANITE_HYBRID,
    MAMBA,
    FALCON_H1,
    JAMBA,
    STARCODER,
    MAMBA2,
    NEMOTRON_H,
    NEMOTRON_H_MOE,
    GEMMA4,
    GEMMA3N,
    BITNET,
    SUPPORTED_ARCHS,
    _falcon_variant,
)

__all__ = [
    "hf_names_from_gguf",
    "gguf_names_from_hf",
    "permute_qk",
    "unpermute_qk",
    "permute_qk_rows",
    "hf_row_order",
    "needs_transpose",
    "to_hf_layout",
    "to_gguf_layout",
]

# ------------------------------------------------------------------------------------------------------------
# tensor names
# ------------------------------------------------------------------------------------------------------------

_W = (".weight",)
_WB = (".weight", ".bias")
_T_ = MODEL_TENSOR

# (llama.cpp tensor, HF name ({i}: layer), suffixes, stack): stack None = global, "blk" / "enc" / "dec" =
# per layer
_LLAMA_NAMES = [
    (_T_.TOKEN_EMBD, "model.embed_tokens", _W, None),
    (_T_.OUTPUT_NORM, "model.norm", _W, None),
    (_T_.OUTPUT, "lm_head", _W, None),
    (_T_.ATTN_NORM, "model.layers.{i}.input_layernorm", _W, "blk"),
    (_T_.ATTN_Q, "model.layers.{i}.self_attn.q_proj", _WB, "blk"),
    (_T_.ATTN_K, "model.layers.{i}.self_attn.k_proj", _WB, "blk"),
    (_T_.ATTN_V, "model.layers.{i}.self_attn.v_proj", _WB, "blk"),
    (_T_.ATTN_OUT, "model.layers.{i}.self_attn.o_proj", _WB, "blk"),
    (_T_.FFN_NORM, "model.layers.{i}.post_attention_layernorm", _W, "blk"),
    (_T_.FFN_GATE, "model.layers.{i}.mlp.gate_proj", _WB, "blk"),
    (_T_.FFN_UP, "model.layers.{i}.mlp.up_proj", _WB, "blk"),
    (_T_.FFN_DOWN, "model.layers.{i}.mlp.down_proj", _WB, "blk"),
]
_BITNET_NAMES = [(t, hf, (".weight", ".scale") if sfx == _WB else sfx, stack)
                 for t, hf, sfx, stack in _LLAMA_NAMES if t != _T_.OUTPUT] + [
    (_T_.ATTN_SUB_NORM, "model.layers.{i}.self_attn.attn_sub_norm", _W, "blk"),
    (_T_.FFN_SUB_NORM, "model.layers.{i}.mlp.ffn_sub_norm", _W, "blk"),
]
# mixture of experts: the router and Qwen2-MoE's shared expert (the experts themselves, 3-D in GGUF and one
# tensor each in Hugging Face checkpoints, are matched by expert_tensor())
_MIXTRAL_NAMES = _LLAMA_NAMES + [(_T_.FFN_GATE_INP, "model.layers.{i}.block_sparse_moe.gate", _W, "blk")]
_QWEN_ROUTER = [(_T_.FFN_GATE_INP, "model.layers.{i}.mlp.gate", _W, "blk")]
_QWEN2MOE_NAMES = _LLAMA_NAMES + _QWEN_ROUTER + [
    (_T_.FFN_GATE_SHEXP, "model.layers.{i}.mlp.shared_expert.gate_proj", _W, "blk"),
    (_T_.FFN_UP_SHEXP, "model.layers.{i}.mlp.shared_expert.up_proj", _W, "blk"),
    (_T_.FFN_DOWN_SHEXP, "model.layers.{i}.mlp.shared_expert.down_proj", _W, "blk"),
    (_T_.FFN_GATE_INP_SHEXP, "model.layers.{i}.mlp.shared_expert_gate", _W, "blk"),
]
_QWEN3_NAMES = _LLAMA_NAMES + [
    (_T_.ATTN_Q_NORM, "model.layers.{i}.self_attn.q_norm", _W, "blk"),
    (_T_.ATTN_K_NORM, "model.layers.{i}.self_attn.k_norm", _W, "blk"),
]
_QWEN3MOE_NAMES = _QWEN3_NAMES + _QWEN_ROUTER
_PHI3_NAMES = [  # q, k, v fused (attn_qkv) and gate, up fused (ffn_up: gate rows first), as the checkpoint has them
    (_T_.TOKEN_EMBD, "model.embed_tokens", _W, None),
    (_T_.OUTPUT_NORM, "model.norm", _W, None),
    (_T_.OUTPUT, "lm_head", _W, None),
    (_T_.ATTN_NORM, "model.layers.{i}.input_layernorm", _W, "blk"),
    (_T_.ATTN_QKV, "model.layers.{i}.self_attn.qkv_proj", _W, "blk"),
    (_T_.ATTN_OUT, "model.layers.{i}.self_attn.o_proj", _W, "blk"),
    (_T_.FFN_NORM, "model.layers.{i}.post_attention_layernorm", _W, "blk"),
    (_T_.FFN_UP, "model.layers.{i}.mlp.gate_up_proj", _W, "blk"),
    (_T_.FFN_DOWN, "model.layers.{i}.mlp.down_proj", _W, "blk"),
]
_GEMMA_NAMES = [  # (norms stored with Gemma's 1 added, as the model uses them: llama.cpp's convention)
    (_T_.TOKEN_EMBD, "model.embed_tokens", _W, None),
    (_T_.OUTPUT_NORM, "model.norm", _W, None),
    (_T_.OUTPUT, "lm_head", _W, None),
    (_T_.ATTN_NORM, "model.layers.{i}.input_layernorm", _W, "blk"),
    (_T_.ATTN_Q, "model.layers.{i}.self_attn.q_proj", _W, "blk"),
    (_T_.ATTN_K, "model.layers.{i}.self_attn.k_proj", _W, "blk"),
    (_T_.ATTN_V, "model.layers.{i}.self_attn.v_proj", _W, "blk"),
    (_T_.ATTN_OUT, "model.layers.{i}.self_attn.o_proj", _W, "blk"),
    (_T_.ATTN_Q_NORM, "model.layers.{i}.self_attn.q_norm", _W, "blk"),
    (_T_.ATTN_K_NORM, "model.layers.{i}.self_attn.k_norm", _W, "blk"),
    (_T_.ATTN_POST_NORM, "model.layers.{i}.post_attention_layernorm", _W, "blk"),
    (_T_.FFN_NORM, "model.layers.{i}.pre_feedforward_layernorm", _W, "blk"),
    (_T_.FFN_POST_NORM, "model.layers.{i}.post_feedforward_layernorm", _W, "blk"),
    (_T_.FFN_GATE, "model.layers.{i}.mlp.gate_proj", _W, "blk"),
    (_T_.FFN_UP, "model.layers.{i}.mlp.up_proj", _W, "blk"),
    (_T_.FFN_DOWN, "model.layers.{i}.mlp.down_proj", _W, "blk"),
]
_GPT2_NAMES = [
    (_T_.TOKEN_EMBD, "transformer.wte", _W, None),
    (_T_.POS_EMBD, "transformer.wpe", _W, None),
    (_T_.OUTPUT_NORM, "transformer.ln_f", _WB, None),
    (_T_.OUTPUT, "lm_head", _W, None),
    (_T_.ATTN_NORM, "transformer.h.{i}.ln_1", _WB, "blk"),
    (_T_.ATTN_QKV, "transformer.h.{i}.attn.c_attn", _WB, "blk"),
    (_T_.ATTN_OUT, "transformer.h.{i}.attn.c_proj", _WB, "blk"),
    (_T_.FFN_NORM, "transformer.h.{i}.ln_2", _WB, "blk"),
    (_T_.FFN_UP, "transformer.h.{i}.mlp.c_fc", _WB, "blk"),
    (_T_.FFN_DOWN, "transformer.h.{i}.mlp.c_proj", _WB, "blk"),
]
# GPT-NeoX: q, k, v fused ([all q, all k, all v] in GGUF, per head in the checkpoint: see _qkv_rows)
_GPTNEOX_NAMES = [
    (_T_.TOKEN_EMBD, "gpt_neox.embed_in", _W, None),
    (_T_.OUTPUT_NORM, "gpt_neox.final_layer_norm", _WB, None),
    (_T_.OUTPUT, "embed_out", _W, None),
    (_T_.ATTN_NORM, "gpt_neox.layers.{i}.input_layernorm", _WB, "blk"),
    (_T_.ATTN_QKV, "gpt_neox.layers.{i}.attention.query_key_value", _WB, "blk"),
    (_T_.ATTN_OUT, "gpt_neox.layers.{i}.attention.dense", _WB, "blk"),
    (_T_.FFN_NORM, "gpt_neox.layers.{i}.post_attention_layernorm", _WB, "blk"),
    (_T_.FFN_UP, "gpt_neox.layers.{i}.mlp.dense_h_to_4h", _WB, "blk"),
    (_T_.FFN_DOWN, "gpt_neox.layers.{i}.mlp.dense_4h_to_h", _WB, "blk"),
]
_PHI2_NAMES = [
    (_T_.TOKEN_EMBD, "model.embed_tokens", _W, None),
    (_T_.OUTPUT_NORM, "model.final_layernorm", _WB, None),
    (_T_.OUTPUT, "lm_head", _WB, None),
    (_T_.ATTN_NORM, "model.layers.{i}.input_layernorm", _WB, "blk"),
    (_T_.ATTN_Q, "model.layers.{i}.self_attn.q_proj", _WB, "blk"),
    (_T_.ATTN_K, "model.layers.{i}.self_attn.k_proj", _WB, "blk"),
    (_T_.ATTN_V, "model.layers.{i}.self_attn.v_proj", _WB, "blk"),
    (_T_.ATTN_OUT, "model.layers.{i}.self_attn.dense", _WB, "blk"),
    (_T_.FFN_UP, "model.layers.{i}.mlp.fc1", _WB, "blk"),
    (_T_.FFN_DOWN, "model.layers.{i}.mlp.fc2", _WB, "blk"),
]
# StarCoder2 and StableLM: Llama's tensors with LayerNorm biases (StarCoder2: every projection's bias, no gate)
_STARCODER2_NAMES = [(t, hf, _W if t in (_T_.TOKEN_EMBD, _T_.OUTPUT) else _WB, stack) for t, hf, _, stack in _LLAMA_NAMES
                     if t not in (_T_.FFN_GATE, _T_.FFN_UP, _T_.FFN_DOWN)] + [
    (_T_.FFN_UP, "model.layers.{i}.mlp.c_fc", _WB, "blk"),
    (_T_.FFN_DOWN, "model.layers.{i}.mlp.c_proj", _WB, "blk"),
]
# (StableLM 2 12B's per-head q/k norms: one module per head in the checkpoint, [heads, head_dim] in GGUF, named by
# the first head's, the source archs.Stacked names)
_STABLELM_NAMES = [(t, hf, _WB if t in (_T_.OUTPUT_NORM, _T_.ATTN_NORM, _T_.FFN_NORM) else sfx, stack)
                   for t, hf, sfx, stack in _LLAMA_NAMES] + [
    (_T_.ATTN_Q_NORM, "model.layers.{i}.self_attn.q_layernorm.norms.0", _W, "blk"),
    (_T_.ATTN_K_NORM, "model.layers.{i}.self_attn.k_layernorm.norms.0", _W, "blk"),
]
# gpt-oss: Llama's attention with biases and sink logits (".weight" in GGUF, no suffix in the checkpoint), the
# pre-MLP norm named post_attention_norm, a router with a bias (experts: expert_tensor())
_GPT_OSS_NAMES = [
    (_T_.TOKEN_EMBD, "model.embed_tokens", _W, None),
    (_T_.OUTPUT_NORM, "model.norm", _W, None),
    (_T_.OUTPUT, "lm_head", _W, None),
    (_T_.ATTN_NORM, "model.layers.{i}.input_layernorm", _W, "blk"),
    (_T_.ATTN_POST_NORM, "model.layers.{i}.post_attention_layernorm", _W, "blk"),
    (_T_.ATTN_Q, "model.layers.{i}.self_attn.q_proj", _WB, "blk"),
    (_T_.ATTN_K, "model.layers.{i}.self_attn.k_proj", _WB, "blk"),
    (_T_.ATTN_V, "model.layers.{i}.self_attn.v_proj", _WB, "blk"),
    (_T_.ATTN_OUT, "model.layers.{i}.self_attn.o_proj", _WB, "blk"),
    (_T_.ATTN_SINKS, "model.layers.{i}.self_attn.sinks", ((".weight", ""),), "blk"),
    (_T_.FFN_GATE_INP, "model.layers.{i}.mlp.router", _WB, "blk"),
]
# OLMo 2: no pre-norms, the branches' output norms (post_attention_norm, post_ffw_norm), whole-width q/k norms
_OLMO2_NAMES = [(t, hf, _W, stack) for t, hf, _, stack in _LLAMA_NAMES if t not in (_T_.ATTN_NORM, _T_.FFN_NORM)] + [
    (_T_.ATTN_Q_NORM, "model.layers.{i}.self_attn.q_norm", _W, "blk"),
    (_T_.ATTN_K_NORM, "model.layers.{i}.self_attn.k_norm", _W, "blk"),
    (_T_.ATTN_POST_NORM, "model.layers.{i}.post_attention_layernorm", _W, "blk"),
    (_T_.FFN_POST_NORM, "model.layers.{i}.post_feedforward_layernorm", _W, "blk"),
]
# GLM-4-0414: Llama's attention with q/k/v biases, gate and up fused (ffn_up: gate rows first), Gemma 2's
# sandwich norms under other names
_GLM4_NAMES = [(t, hf, sfx, stack) for t, hf, sfx, stack in _LLAMA_NAMES if t not in (_T_.FFN_GATE, _T_.FFN_UP)] + [
    (_T_.FFN_UP, "model.layers.{i}.mlp.gate_up_proj", _W, "blk"),
    (_T_.ATTN_POST_NORM, "model.layers.{i}.post_self_attn_layernorm", _W, "blk"),
    (_T_.FFN_POST_NORM, "model.layers.{i}.post_mlp_layernorm", _W, "blk"),
]
# HunYuan: Llama's, with the q/k norms (after rotary) under their own names
_HUNYUAN_NAMES = _LLAMA_NAMES + [
    (_T_.ATTN_Q_NORM, "model.layers.{i}.self_attn.query_layernorm", _W, "blk"),
    (_T_.ATTN_K_NORM, "model.layers.{i}.self_attn.key_layernorm", _W, "blk"),
]
# DeepSeek's MoE names (ERNIE 4.5 MoE, GLM-4.5): the router mlp.gate, its selection bias (exp_probs_b: a ".bias" in
# GGUF, no suffix in the checkpoint), the shared expert mlp.shared_experts (with ERNIE's biases where use_bias)
def _deepseek_moe_names(select_bias: str):
    return [
        (_T_.FFN_GATE_INP, "model.layers.{i}.mlp.gate", _W, "blk"),
        (_T_.FFN_EXP_PROBS_B, "model.layers.{i}." + select_bias, ((".bias", ""),), "blk"),
        (_T_.FFN_GATE_SHEXP, "model.layers.{i}.mlp.shared_experts.gate_proj", _WB, "blk"),
        (_T_.FFN_UP_SHEXP, "model.layers.{i}.mlp.shared_experts.up_proj", _WB, "blk"),
        (_T_.FFN_DOWN_SHEXP, "model.layers.{i}.mlp.shared_experts.down_proj", _WB, "blk"),
    ]


_ERNIE_MOE_NAMES = _LLAMA_NAMES + [(_T_.OUTPUT, "lm_head", ((".bias", ".bias"),), None)] + _deepseek_moe_names(
    "mlp.moe_statics.e_score_correction_bias")
# GLM-4.5: the pre-MLP norm is post_attention_norm in llama.cpp's names; per-head q/k norms (use_qk_norm)
_GLM4_MOE_NAMES = [e for e in _QWEN3_NAMES if e[0] != _T_.FFN_NORM] + [
    (_T_.ATTN_POST_NORM, "model.layers.{i}.post_attention_layernorm", _W, "blk"),
] + _deepseek_moe_names("mlp.gate.e_score_correction_bias")
# DeepSeek-V2/V3 (latent attention: each head's k_b and v_b are matched by expert_tensor(), stacked in attn_k_b /
# attn_v_b; a checkpoint holds them in kv_b_proj)
_DEEPSEEK2_NAMES = [(t, hf, _W, stack) for t, hf, _, stack in _LLAMA_NAMES
                    if t not in (_T_.ATTN_Q, _T_.ATTN_K, _T_.ATTN_V, _T_.ATTN_OUT)] + [
    (_T_.ATTN_Q, "model.layers.{i}.self_attn.q_proj", _W, "blk"),
    (_T_.ATTN_Q_A, "model.layers.{i}.self_attn.q_a_proj", _W, "blk"),
    (_T_.ATTN_Q_A_NORM, "model.layers.{i}.self_attn.q_a_layernorm", _W, "blk"),
    (_T_.ATTN_Q_B, "model.layers.{i}.self_attn.q_b_proj", _W, "blk"),
    (_T_.ATTN_KV_A_MQA, "model.layers.{i}.self_attn.kv_a_proj_with_mqa", _W, "blk"),
    (_T_.ATTN_KV_A_NORM, "model.layers.{i}.self_attn.kv_a_layernorm", _W, "blk"),
    (_T_.ATTN_OUT, "model.layers.{i}.self_attn.o_proj", _W, "blk"),
] + _deepseek_moe_names("mlp.gate.e_score_correction_bias")
_BLOOM_NAMES = [
    (_T_.TOKEN_EMBD, "transformer.word_embeddings", _W, None),
    (_T_.TOKEN_EMBD_NORM, "transformer.word_embeddings_layernorm", _WB, None),
    (_T_.OUTPUT_NORM, "transformer.ln_f", _WB, None),
    (_T_.OUTPUT, "lm_head", _W, None),
    (_T_.ATTN_NORM, "transformer.h.{i}.input_layernorm", _WB, "blk"),
    (_T_.ATTN_QKV, "transformer.h.{i}.self_attention.query_key_value", _WB, "blk"),
    (_T_.ATTN_OUT, "transformer.h.{i}.self_attention.dense", _WB, "blk"),
    (_T_.FFN_NORM, "transformer.h.{i}.post_attention_layernorm", _WB, "blk"),
    (_T_.FFN_UP, "transformer.h.{i}.mlp.dense_h_to_4h", _WB, "blk"),
    (_T_.FFN_DOWN, "transformer.h.{i}.mlp.dense_4h_to_h", _WB, "blk"),
]


# (MPT: LayerNorms without biases, q/k/v fused as [all q, all k, all v] in both files, no biases)
_MPT_NAMES = [
    (_T_.TOKEN_EMBD, "transformer.wte", _W, None),
    (_T_.OUTPUT_NORM, "transformer.norm_f", _W, None),
    (_T_.OUTPUT, "lm_head", _W, None),
    (_T_.ATTN_NORM, "transformer.blocks.{i}.norm_1", _W, "blk"),
    (_T_.ATTN_QKV, "transformer.blocks.{i}.attn.Wqkv", _W, "blk"),
    (_T_.ATTN_OUT, "transformer.blocks.{i}.attn.out_proj", _W, "blk"),
    (_T_.FFN_NORM, "transformer.blocks.{i}.norm_2", _W, "blk"),
    (_T_.FFN_UP, "transformer.blocks.{i}.ffn.up_proj", _W, "blk"),
    (_T_.FFN_DOWN, "transformer.blocks.{i}.ffn.down_proj", _W, "blk"),
]


def _falcon_names(two_norms: bool):
    return (
        [
            (_T_.TOKEN_EMBD, "transformer.word_embeddings", _W, None),
            (_T_.OUTPUT_NORM, "transformer.ln_f", _WB, None),
            (_T_.OUTPUT, "lm_head", _W, None),
            # llama.cpp: attn_norm feeds the MLP (and the attention when there is one norm), attn_norm_2
            # the attention
            (
                _T_.ATTN_NORM,
                "transformer.h.{i}.ln_mlp" if two_norms else "transformer.h.{i}.input_layernorm",
                _WB,
                "blk",
            ),
        ]
        + ([(_T_.ATTN_NORM_2, "transformer.h.{i}.ln_attn", _WB, "blk")] if two_norms else [])
        + [
            (_T_.ATTN_QKV, "transformer.h.{i}.self_attention.query_key_value", _WB, "blk"),
            (_T_.ATTN_OUT, "transformer.h.{i}.self_attention.dense", _WB, "blk"),
            (_T_.FFN_UP, "transformer.h.{i}.mlp.dense_h_to_4h", _WB, "blk"),
            (_T_.FFN_DOWN, "transformer.h.{i}.mlp.dense_4h_to_h", _WB, "blk"),
        ]
    )


_BERT_NAMES = [
    (_T_.TOKEN_EMBD, "embeddings.word_embeddings", _W, None),
    (_T_.POS_EMBD, "embeddings.position_embeddings", _W, None),
    (_T_.TOKEN_TYPES, "embeddings.token_type_embeddings", _W, None),
    (_T_.TOKEN_EMBD_NORM, "embeddings.LayerNorm", _WB, None),
    (_T_.ATTN_Q, "encoder.layer.{i}.attention.self.query", _WB, "blk"),
    (_T_.ATTN_K, "encoder.layer.{i}.attention.self.key", _WB, "blk"),
    (_T_.ATTN_V, "encoder.layer.{i}.attention.self.value", _WB, "blk"),
    (_T_.ATTN_OUT, "encoder.layer.{i}.attention.output.dense", _WB, "blk"),
    (_T_.ATTN_OUT_NORM, "encoder.layer.{i}.attention.output.LayerNorm", _WB, "blk"),
    (_T_.FFN_UP, "encoder.layer.{i}.intermediate.dense", _WB, "blk"),
    (_T_.FFN_DOWN, "encoder.layer.{i}.output.dense", _WB, "blk"),
    (_T_.LAYER_OUT_NORM, "encoder.layer.{i}.output.LayerNorm", _WB, "blk"),
]


def _t5_names(gated: bool):
    up = "wi_1" if gated else "wi"
    names = [
        (_T_.TOKEN_EMBD, "shared", _W, None),
        (_T_.OUTPUT, "lm_head", _W, None),
        (_T_.ENC_OUTPUT_NORM, "encoder.final_layer_norm", _W, None),
        (_T_.DEC_OUTPUT_NORM, "decoder.final_layer_norm", _W, None),
    ]
    for stack, hf, tensors in (
        (
            "enc",
            "encoder",
            [
                (_T_.ENC_ATTN_NORM, "0.layer_norm"),
                (_T_.ENC_ATTN_Q, "0.SelfAttention.q"),
                (_T_.ENC_ATTN_K, "0.SelfAttention.k"),
                (_T_.ENC_ATTN_V, "0.SelfAttention.v"),
                (_T_.ENC_ATTN_OUT, "0.SelfAttention.o"),
                (_T_.ENC_ATTN_REL_B, "0.SelfAttention.relative_attention_bias"),
                (_T_.ENC_FFN_NORM, "1.layer_norm"),
                (_T_.ENC_FFN_GATE, "1.DenseReluDense.wi_0"),
                (_T_.ENC_FFN_UP, f"1.DenseReluDense.{up}"),
                (_T_.ENC_FFN_DOWN, "1.DenseReluDense.wo"),
            ],
        ),
        (
            "dec",
            "decoder",
            [
                (_T_.DEC_ATTN_NORM, "0.layer_norm"),
                (_T_.DEC_ATTN_Q, "0.SelfAttention.q"),
                (_T_.DEC_ATTN_K, "0.SelfAttention.k"),
                (_T_.DEC_ATTN_V, "0.SelfAttention.v"),
                (_T_.DEC_ATTN_OUT, "0.SelfAttention.o"),
                (_T_.DEC_ATTN_REL_B, "0.SelfAttention.relative_attention_bias"),
                (_T_.DEC_CROSS_ATTN_NORM, "1.layer_norm"),
                (_T_.DEC_CROSS_ATTN_Q, "1.EncDecAttention.q"),
                (_T_.DEC_CROSS_ATTN_K, "1.EncDecAttention.k"),
                (_T_.DEC_CROSS_ATTN_V, "1.EncDecAttention.v"),
                (_T_.DEC_CROSS_ATTN_OUT, "1.EncDecAttention.o"),
                (_T_.DEC_CROSS_ATTN_REL_B, "1.EncDecAttention.relative_attention_bias"),
                (_T_.DEC_FFN_NORM, "2.layer_norm"),
                (_T_.DEC_FFN_GATE, "2.DenseReluDense.wi_0"),
                (_T_.DEC_FFN_UP, f"2.DenseReluDense.{up}"),
                (_T_.DEC_FFN_DOWN, "2.DenseReluDense.wo"),
            ],
        ),
    ):
        for t, suffix in tensors:
            if not gated and t in (_T_.ENC_FFN_GATE, _T_.DEC_FFN_GATE):
                continue
            names.append((t, f"{hf}.block.{{i}}.layer.{suffix}", _W, stack))
    return names


def _gguf_arch(arch: str) -> str:
    a = _ARCH_OF_MODEL_TYPE.get(arch, arch)
    if a not in SUPPORTED_ARCHS:
        raise ValueError(f"unsupported GGUF architecture {arch!r} (supported: {', '.join(SUPPORTED_ARCHS)})")
    return a


def _name_table(arch: str, config: Optional[Dict[str, Any]]):
    a = _gguf_arch(arch)
    config = config or {}
    if a in (QWEN35, QWEN35MOE, QWEN3NEXT, LFM2, LFM2MOE, GRANITE_HYBRID, MAMBA, MAMBA2, NEMOTRON_H, NEMOTRON_H_MOE,
             FALCON_H1, JAMBA):
        from .gguf_hybrid import name_table

        return name_table(a)
    if a in (EXAONE, MISTRAL3):  # (Llama's tensors; EXAONE's checkpoint names are read as transformers renames them)
        return _LLAMA_NAMES
    if a == COHERE2:  # (Command-R's: attention and MLP share attn_norm)
        return [e for e in _LLAMA_NAMES if e[0] != _T_.FFN_NORM]
    if a == ARCEE:  # (no gate)
        return [e for e in _LLAMA_NAMES if e[0] != _T_.FFN_GATE]
    if a == OLMO:  # (norms without weights: no tensors for them)
        return [e for e in _LLAMA_NAMES if e[0] not in (_T_.OUTPUT_NORM, _T_.ATTN_NORM, _T_.FFN_NORM)]
    if a == NEMOTRON:  # (no gate; LayerNorms with biases)
        return [(t, hf, _WB if t in (_T_.OUTPUT_NORM, _T_.ATTN_NORM, _T_.FFN_NORM) else sfx, stack)
                for t, hf, sfx, stack in _LLAMA_NAMES if t != _T_.FFN_GATE]
    if a == SEED_OSS:  # (the pre-MLP norm under another name)
        return [(_T_.ATTN_POST_NORM if t == _T_.FFN_NORM else t, hf, sfx, stack) for t, hf, sfx, stack in _LLAMA_NAMES]
    if a == LLAMA:  # (Mixtral is a Llama with experts)
        return _MIXTRAL_NAMES
    if a == INTERNLM2:  # (llama.cpp's converter splits wqkv into a Llama's tensors)
        return _LLAMA_NAMES
    if a in (QWEN2, GEMMA):  # (Llama's tensors; Qwen2 has the q/k/v biases; Gemma's norms have their 1 added)
        return _LLAMA_NAMES
    if a == QWEN3:
        return _QWEN3_NAMES
    if a == QWEN2MOE:
        return _QWEN2MOE_NAMES
    if a in (QWEN3MOE, OLMOE):  # (OLMoE: Qwen3-MoE's tensors; its q/k norms span every head)
        return _QWEN3MOE_NAMES
    if a in (OLMO2, EXAONE4):  # (EXAONE 4: OLMo 2's tensors; its q/k norms are per head)
        return _OLMO2_NAMES
    if a == ERNIE4_5:
        return _LLAMA_NAMES
    if a == GLM4:
        return _GLM4_NAMES
    if a == HUNYUAN_DENSE:
        return _HUNYUAN_NAMES
    if a == ERNIE4_5_MOE:
        return _ERNIE_MOE_NAMES
    if a == GLM4_MOE:
        return _GLM4_MOE_NAMES
    if a == DEEPSEEK2:
        return _DEEPSEEK2_NAMES
    if a == PHI3:
        return _PHI3_NAMES
    if a in (GEMMA2, GEMMA3):
        return _GEMMA_NAMES
    if a == BITNET:  # (a tied head; sub-norms; each projection's own scale where a file has one)
        return _BITNET_NAMES
    if a in (GEMMA4, GEMMA3N):
        from .gguf_gemma import gemma3n_name_table, gemma4_name_table

        return gemma4_name_table() if a == GEMMA4 else gemma3n_name_table()
    if a in (GPT2, STARCODER):  # (StarCoder's Linear weights are GPT-2's names, not transposed)
        return _GPT2_NAMES
    if a == BLOOM:
        return _BLOOM_NAMES
    if a == MPT:
        return _MPT_NAMES
    if a == GPTNEOX:
        return _GPTNEOX_NAMES
    if a == STARCODER2:
        return _STARCODER2_NAMES
    if a == STABLELM:
        return _STABLELM_NAMES
    if a in (GRANITE, SMOLLM3):
        return _LLAMA_NAMES
    if a == GRANITEMOE:
        return _LLAMA_NAMES + [(_T_.FFN_GATE_INP, "model.layers.{i}.block_sparse_moe.router.layer", _W, "blk")]
    if a == COMMAND_R:  # (Llama's, bar the pre-MLP norm: attention and MLP share attn_norm; Command R+'s q/k norms)
        return [e for e in _QWEN3_NAMES if e[0] != _T_.FFN_NORM]
    if a == GPT_OSS:
        return _GPT_OSS_NAMES
    if a == PHI2:
        return _PHI2_NAMES
    if a == FALCON:
        return _falcon_names(_falcon_variant(config)[0] if config else False)
    if a == BERT:
        return _BERT_NAMES
    gated = str(config.get("feed_forward_proj", "gated-gelu")).startswith("gated-")
    return _t5_names(gated)


def _pairs(arch: str, n_layers: int, config: Optional[Dict[str, Any]]) -> List[Tuple[str, str]]:
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 0:
        raise ValueError(f"n_layers must be a non-negative integer, got {n_layers!r}")
    n_dec = n_layers
    if config and config.get("num_decoder_layers") is not None:
        n_dec = int(config["num_decoder_layers"])
    out = []
    for tensor, hf, suffixes, stack in _name_table(arch, config):
        tmpl = TENSOR_NAMES[tensor]
        layers = [None] if stack is None else range(n_dec if stack == "dec" else n_layers)
        for i in layers:
            for s in suffixes:  # (a pair: the GGUF name's suffix and the checkpoint's)
                gs, hs = s if isinstance(s, tuple) else (s, s)
                if i is None:
                    out.append((tmpl + gs, hf + hs))
                else:
                    out.append((tmpl.format(bid=i) + gs, hf.format(i=i) + hs))
    return out


def hf_names_from_gguf(arch: str, n_layers: int, config: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """llama.cpp tensor name -> the Hugging Face tensor name archs.py reads, for every tensor (weights and
    biases) the architecture may have; names a file lacks are simply unused.

    arch: llama.cpp's architecture (``llama``, ``gpt2``, ``bloom``, ``falcon``, ``bert``, ``t5``; a HF
    model_type such as ``mistral`` works too). config (optional, the HF config): picks the variant where the
    names depend on it (falcon's ln_attn / ln_mlp pair, T5's ``wi`` vs ``wi_0``/``wi_1`` and decoder depth).
    The tensors' layouts may differ from the HF checkpoint's: see :func:`to_hf_layout`.
    """
    return dict(_pairs(arch, n_layers, config))


_EXPERT_RE = re.compile(r"layers\.(\d+)\.moe\.experts\.(\d+)\.(gate|up|down)\.(weight|bias)")
_EXPERT_TENSORS = {"gate": _T_.FFN_GATE_EXP, "up": _T_.FFN_UP_EXP, "down": _T_.FFN_DOWN_EXP}
_LATENT_RE = re.compile(r"layers\.(\d+)\.attn\.(k_b|v_b)\.(\d+)\.weight")
_ALTUP_RE = re.compile(r"altup\.(proj|unembed)\.(\d+)\.weight")


def expert_tensor(canonical: str) -> Optional[Tuple[str, int, Optional[str]]]:
    """For an expert's matrix or bias (canonical ``layers.{i}.moe.experts.{e}.{gate,up,down}.{weight,bias}``): the
    GGUF tensor that stacks the layer's experts (``blk.{i}.ffn_gate_exps.weight``, [n_experts, rows, columns]), the expert's
    index in it, and the name older files (Mixtral before llama.cpp merged the experts) give the matrix on its own
    (``blk.{i}.ffn_gate.{e}.weight``). Latent attention's per-head matrices (``layers.{i}.attn.{k_b,v_b}.{h}.weight``)
    are stacked the same way (``blk.{i}.attn_k_b.weight``, [n_heads, rows, columns]; no older name), and Gemma 3n's
    AltUp projections (``altup.{proj,unembed}.{i}.weight`` in ``altup_proj.weight`` / ``altup_unembd_proj.weight``,
    [streams - 1, hidden, hidden]). None for any other tensor."""
    m = _ALTUP_RE.fullmatch(canonical)
    if m:
        kind = _T_.ALTUP_PROJ if m.group(1) == "proj" else _T_.ALTUP_UNEMBD_PROJ
        return TENSOR_NAMES[kind] + ".weight", int(m.group(2)), None
    m = _LATENT_RE.fullmatch(canonical)
    if m:
        kind = _T_.ATTN_K_B if m.group(2) == "k_b" else _T_.ATTN_V_B
        return TENSOR_NAMES[kind].format(bid=int(m.group(1))) + ".weight", int(m.group(3)), None
    m = _EXPERT_RE.fullmatch(canonical)
    if not m:
        return None
    layer, e, part, kind = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
    legacy = TENSOR_NAMES[{"gate": _T_.FFN_GATE, "up": _T_.FFN_UP, "down": _T_.FFN_DOWN}[part]].format(bid=layer)
    return TENSOR_NAMES[_EXPERT_TENSORS[part]].format(bid=layer) + "." + kind, e, f"{legacy}.{e}.{kind}"


_HF_ALIASES = {GPT2: ("transformer.", ""), STARCODER: ("transformer.", ""), BLOOM: ("transformer.", ""), MPT: ("transformer.", ""), FALCON: ("transformer.", ""),
               BERT: ("", "bert.", "roberta.")}


def gguf_names_from_hf(arch: str, n_layers: int, config: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """Hugging Face tensor name -> llama.cpp tensor name (the inverse of :func:`hf_names_from_gguf`, for a
    writer). Checkpoints saved with or without the model prefix (``transformer.h.0...`` and ``h.0...``,
    ``bert.encoder...`` and ``encoder...``) are both covered."""
    a = _gguf_arch(arch)
    out: Dict[str, str] = {}
    for g, hf in _pairs(a, n_layers, config):
        out[hf] = g
        if a in _HF_ALIASES:
            have, *alts = _HF_ALIASES[a]
            if hf.startswith(have) and hf != "lm_head.weight":
                for alt in alts:
                    out[alt + hf[len(have):]] = g
    return out


# ------------------------------------------------------------------------------------------------------------
# tensor layouts
# ------------------------------------------------------------------------------------------------------------

def permute_qk_rows(rows: int, n_head: int) -> np.ndarray:
    """Row indices of llama.cpp's Q/K permutation: ``permute(w) == w[permute_qk_rows(len(w), n_head)]``.

    convert_hf_to_gguf.py:
    ``w.reshape(n_head, 2, rows // n_head // 2, *rest).swapaxes(1, 2).reshape(w.shape)``:
    within each head, the two rotary halves (HF's rotate_half layout) are interleaved into pairs (ggml's).
    """
    if isinstance(n_head, bool) or not isinstance(n_head, (int, np.integer)) or n_head <= 0:
        raise ValueError(f"n_head must be a positive integer, got {n_head!r}")
    if rows % (2 * n_head):
        raise ValueError(
            f"cannot permute {rows} rows for {n_head} heads: rows must be a multiple of 2 * n_head"
        )
    return np.arange(rows).reshape(n_head, 2, rows // n_head // 2).swapaxes(1, 2).reshape(-1)


def _rows_of(a: Any, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim not in (1, 2):
        raise ValueError(
            f"{what}: expected a 1-D (bias) or 2-D [rows, cols] array, got shape {list(a.shape)}"
        )
    return a


def permute_qk(rows_array: Any, n_head: int) -> np.ndarray:
    """llama.cpp's permutation of q_proj / k_proj rows (n_head: that tensor's head count, i.e. the kv head
    count for k_proj). Works on [rows, cols] weights, [rows] biases, and [rows, bytes_per_row] arrays of raw
    quantized blocks (only whole rows move)."""
    a = _rows_of(rows_array, "permute_qk")
    return a[permute_qk_rows(a.shape[0], n_head)]


def unpermute_qk(rows_array: Any, n_head: int) -> np.ndarray:
    """The inverse of :func:`permute_qk`: GGUF attn_q / attn_k rows back to Hugging Face's order."""
    a = _rows_of(rows_array, "unpermute_qk")
    return a[np.argsort(permute_qk_rows(a.shape[0], n_head))]


def _cfg_int(config: Dict[str, Any], *fields: str) -> int:
    for f in fields:
        v = config.get(f)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    raise ValueError(f"config: needs a positive integer '{fields[0]}'")


def _layer_kind(gguf_name: str, suffixes: Tuple[str, ...] = (".weight", ".bias")) -> Optional[str]:
    """'attn_q' for 'blk.3.attn_q.weight' (the end of gguf-py's 'blk.{bid}.attn_q'), None off the blocks."""
    for suffix in suffixes:
        if gguf_name.endswith(suffix):
            m = re.fullmatch(_BLK_RE, gguf_name[: -len(suffix)])
            return m.group(1) if m else None
    return None


_BLK_RE = (
    re.escape(TENSOR_NAMES[MODEL_TENSOR.ATTN_Q])
    .replace(re.escape("{bid}"), r"\d+")
    .replace("attn_q", r"(\w+)")
)
_KIND = {
    t: TENSOR_NAMES[t].split(".")[-1]
    for t in (
        MODEL_TENSOR.ATTN_Q,
        MODEL_TENSOR.ATTN_K,
        MODEL_TENSOR.ATTN_QKV,
        MODEL_TENSOR.ATTN_OUT,
        MODEL_TENSOR.FFN_UP,
        MODEL_TENSOR.FFN_DOWN,
    )
}


def _gguf_row_order(arch: str, gguf_name: str, config: Dict[str, Any], rows: int) -> Optional[np.ndarray]:
    """Row indices r with gguf_tensor = hf_tensor[r] (None: same order)."""
    a = _gguf_arch(arch)
    kind = _layer_kind(gguf_name)
    if a == LLAMA and kind in (_KIND[MODEL_TENSOR.ATTN_Q], _KIND[MODEL_TENSOR.ATTN_K]):
        nh = _cfg_int(config, "num_attention_heads")
        nkv = config.get("num_key_value_heads") or nh
        return permute_qk_rows(rows, nh if kind == _KIND[MODEL_TENSOR.ATTN_Q] else nkv)
    if a in (BLOOM, FALCON) and kind == _KIND[MODEL_TENSOR.ATTN_QKV]:
        if a == BLOOM:
            nh = _cfg_int(config, "n_head", "num_attention_heads")
            if rows % (3 * nh):
                raise ValueError(f"tensor '{gguf_name}': {rows} rows do not split into 3 x {nh} heads")
            hd = rows // (3 * nh)
            # HF: [head][q, k, v][head_dim] -> GGUF: [q, k, v][head][head_dim]
            return np.arange(rows).reshape(nh, 3, hd).transpose(1, 0, 2).reshape(-1)
        _, nh, nkv = _falcon_variant(config)
        if rows % (nh + 2 * nkv):
            raise ValueError(
                f"tensor '{gguf_name}': {rows} rows do not split into {nh} q + 2 x {nkv} kv heads"
            )
        hd = rows // (nh + 2 * nkv)
        if not config.get("new_decoder_architecture", False) and nkv == nh:
            g = np.arange(rows).reshape(nh, 3, hd)  # per-head [q, k, v]
            return np.concatenate([g[:, 0].reshape(-1), g[:, 1].reshape(-1), g[:, 2].reshape(-1)])
        r = nh // nkv
        g = np.arange(rows).reshape(nkv, r + 2, hd)  # kv groups [q..., k, v]
        return np.concatenate([g[:, :r].reshape(-1), g[:, r].reshape(-1), g[:, r + 1].reshape(-1)])
    return None


def hf_row_order(arch: str, gguf_name: str, config: Dict[str, Any], rows: int) -> Optional[np.ndarray]:
    """Row indices r with ``hf_tensor = gguf_tensor[r]`` for the tensors llama.cpp's converter reorders
    (llama attn_q / attn_k, bloom and falcon attn_qkv; weights and biases), None for the others. These
    can be fed to archs.Derived(rows=...) and work on quantized rows as well."""
    order = _gguf_row_order(arch, gguf_name, config, rows)
    return None if order is None else np.argsort(order)


_GPT2_TRANSPOSED = {_KIND[t] for t in (_T_.ATTN_QKV, _T_.ATTN_OUT, _T_.FFN_UP, _T_.FFN_DOWN)}


def needs_transpose(arch: str, gguf_name: str) -> bool:
    """True for GPT-2's Conv1D weights, which GGUF stores transposed ([out, in]) relative to the HF file."""
    if _gguf_arch(arch) != GPT2:
        return False
    return _layer_kind(gguf_name, (".weight",)) in _GPT2_TRANSPOSED


def to_hf_layout(
    arch: str, gguf_name: str, array: Any, config: Dict[str, Any], quantized: bool = False
) -> np.ndarray:
    """A GGUF tensor in the Hugging Face checkpoint's layout (row order, transposition).

    quantized: the array holds raw block bytes [rows, bytes_per_row]; rows can still be reordered, but a
    transpose (GPT-2's Conv1D weights) cannot be done and raises ValueError.
    """
    a = np.asarray(array)
    if needs_transpose(arch, gguf_name):
        if quantized:
            raise ValueError(
                f"tensor '{gguf_name}': a quantized GPT-2 matrix cannot be transposed back to Conv1D "
                "layout; use it as stored ([out, in] rows)"
            )
        if a.ndim != 2:
            raise ValueError(f"tensor '{gguf_name}': expected a 2-D matrix, got shape {list(a.shape)}")
        return np.ascontiguousarray(a.T)
    if a.ndim == 0:
        return a
    order = hf_row_order(arch, gguf_name, config, a.shape[0])
    return a if order is None else a[order]


def to_gguf_layout(
    arch: str, gguf_name: str, array: Any, config: Dict[str, Any], quantized: bool = False
) -> np.ndarray:
    """A Hugging Face tensor in llama.cpp's layout for the GGUF tensor gguf_name (inverse of to_hf_layout)."""
    a = np.asarray(array)
    if needs_transpose(arch, gguf_name):
        if quantized:
            raise ValueError(
                f"tensor '{gguf_name}': cannot transpose quantized rows; transpose before quantizing"
            )
        if a.ndim != 2:
            raise ValueError(f"tensor '{gguf_name}': expected a 2-D matrix, got shape {list(a.shape)}")
        return np.ascontiguousarray(a.T)
    if a.ndim == 0:
        return a
    order = _gguf_row_order(arch, gguf_name, config, a.shape[0])
    return a if order is None else a[order]
