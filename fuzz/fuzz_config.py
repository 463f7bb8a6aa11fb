#!/usr/bin/env python3
"""Fuzz config.json handling: a config dict -> edgeformer.archs.spec_from_config(cfg, "config.json", names)
(t5: the encoder and decoder specs), spec.validate(); then the config is written as config.json beside a
model.safetensors of random weights of the shapes it asks for (in the checkpoint's own names and layouts:
Conv1D transposes, fused QKV; one dummy tensor when the spec is invalid or too big) and loaded with
edgeformer.load (with a dtype conversion or quantization at load for some inputs); a model that loads
computes logits / hidden states over up to 8 tokens and generates 2.

An input is either JSON, a "case" {"config": {...}, "tensor_names": [...], "dtype": "", "perturb": [op, i]}
or a bare config dict (the seed corpus is such files, and every finding is saved as one, so replaying it
needs no atheris), or any other bytes, which atheris' FuzzedDataProvider turns into a case: a base config
of one architecture with random edits (plausible keys set to values of random types, keys deleted, rope
dicts made up) and a few hints of which tensors the checkpoint holds.

Allowed: a ValueError. Findings: any other exception; a crash, hang or memory blow-up.

    python fuzz/fuzz_config.py --make-seeds          # writes fuzz/corpus/config/
    python fuzz/fuzz_config.py fuzz/corpus/config -max_total_time=60
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List

import numpy as np

import edgeformer
from edgeformer.archs import ENCODER_DECODERS, Config, spec_from_config
from edgeformer.io import save_safetensors
from edgeformer.seq2seq import Seq2SeqModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

NAME = "config"
MAX_ELEMENTS = 1 << 18  # build a model only when its weights are this small (1 MiB of f32)
MAX_LAYERS = 64

BASES: Dict[str, Dict[str, Any]] = {
    "llama": {"model_type": "llama", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
              "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
              "max_position_embeddings": 32, "rms_norm_eps": 1e-5, "tie_word_embeddings": False},
    "mistral": {"model_type": "mistral", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
                "max_position_embeddings": 32, "sliding_window": 2},
    "gpt2": {"model_type": "gpt2", "vocab_size": 16, "n_embd": 8, "n_layer": 1, "n_head": 2, "n_positions": 16},
    "opt": {"model_type": "opt", "vocab_size": 16, "hidden_size": 8, "num_attention_heads": 2,
            "num_hidden_layers": 1, "ffn_dim": 16, "max_position_embeddings": 16, "word_embed_proj_dim": 4},
    "bloom": {"model_type": "bloom", "vocab_size": 16, "hidden_size": 8, "n_layer": 1, "n_head": 2},
    "falcon": {"model_type": "falcon", "vocab_size": 16, "hidden_size": 8, "num_hidden_layers": 1,
               "num_attention_heads": 2, "new_decoder_architecture": True, "num_kv_heads": 1,
               "max_position_embeddings": 16},
    "codegen": {"model_type": "codegen", "vocab_size": 16, "n_embd": 16, "n_layer": 1, "n_head": 4,
                "rotary_dim": 2, "n_positions": 16},
    "bert": {"model_type": "bert", "vocab_size": 16, "hidden_size": 8, "num_hidden_layers": 1,
             "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 16},
    "t5": {"model_type": "t5", "vocab_size": 16, "d_model": 8, "num_heads": 2, "d_kv": 4, "d_ff": 16,
           "num_layers": 1, "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 8},
    # session 20's encoders
    "mpnet": {"model_type": "mpnet", "vocab_size": 16, "hidden_size": 8, "num_hidden_layers": 1,
              "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 18},
    "distilbert": {"model_type": "distilbert", "vocab_size": 16, "dim": 8, "n_layers": 1, "n_heads": 2,
                   "hidden_dim": 16, "max_position_embeddings": 16},
    "modernbert": {"model_type": "modernbert", "vocab_size": 16, "hidden_size": 8, "num_hidden_layers": 2,
                   "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 16,
                   "local_attention": 4, "global_attn_every_n_layers": 2},
    # session 13's families
    "mixtral": {"model_type": "mixtral", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 1, "num_attention_heads": 2, "num_local_experts": 3, "num_experts_per_tok": 2,
                "max_position_embeddings": 32},
    "qwen2_moe": {"model_type": "qwen2_moe", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                  "num_hidden_layers": 2, "num_attention_heads": 2, "num_experts": 4, "num_experts_per_tok": 2,
                  "moe_intermediate_size": 8, "shared_expert_intermediate_size": 12, "mlp_only_layers": [1],
                  "max_position_embeddings": 32},
    "qwen3_moe": {"model_type": "qwen3_moe", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                  "num_hidden_layers": 1, "num_attention_heads": 2, "head_dim": 4, "num_experts": 4,
                  "num_experts_per_tok": 4, "moe_intermediate_size": 8, "norm_topk_prob": True,
                  "max_position_embeddings": 32},
    "gpt_oss": {"model_type": "gpt_oss", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 8,
                "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
                "num_local_experts": 3, "num_experts_per_tok": 2, "sliding_window": 2,
                "max_position_embeddings": 32},
    "gemma": {"model_type": "gemma", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
              "num_hidden_layers": 1, "num_attention_heads": 2, "head_dim": 4, "max_position_embeddings": 32},
    "gpt_neox": {"model_type": "gpt_neox", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                 "num_hidden_layers": 1, "num_attention_heads": 2, "rotary_pct": 0.5, "max_position_embeddings": 32},
    "phi": {"model_type": "phi", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2, "partial_rotary_factor": 0.5,
            "max_position_embeddings": 32},
    "starcoder2": {"model_type": "starcoder2", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                   "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "sliding_window": 3,
                   "max_position_embeddings": 32},
    "stablelm": {"model_type": "stablelm", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                 "num_hidden_layers": 1, "num_attention_heads": 2, "use_parallel_residual": True,
                 "max_position_embeddings": 32},
    "granite": {"model_type": "granite", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 1, "num_attention_heads": 2, "embedding_multiplier": 2.0,
                "residual_multiplier": 0.5, "logits_scaling": 3.0, "attention_multiplier": 0.1,
                "max_position_embeddings": 32},
    # session 14's families
    "stablelm_qk": {"model_type": "stablelm", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                    "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "qk_layernorm": True,
                    "max_position_embeddings": 32},
    "cohere_qk": {"model_type": "cohere", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                  "num_hidden_layers": 1, "num_attention_heads": 2, "use_qk_norm": True,
                  "max_position_embeddings": 32},
    "ernie4_5": {"model_type": "ernie4_5", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                 "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
                 "use_bias": True, "max_position_embeddings": 32},
    "ernie4_5_moe": {"model_type": "ernie4_5_moe", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "moe_num_experts": 4,
                     "moe_k": 2, "moe_intermediate_size": 8, "moe_num_shared_experts": 1, "max_position_embeddings": 32},
    "exaone4": {"model_type": "exaone4", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 2, "num_attention_heads": 2, "sliding_window": 2, "sliding_window_pattern": 2,
                "max_position_embeddings": 32},
    "glm4": {"model_type": "glm4", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
             "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
             "max_position_embeddings": 32},
    "glm4_moe": {"model_type": "glm4_moe", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                 "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
                 "n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 8, "n_group": 2,
                 "topk_group": 1, "routed_scaling_factor": 2.0, "use_qk_norm": True, "max_position_embeddings": 32},
    "internlm2": {"model_type": "internlm2", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                  "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "bias": True,
                  "max_position_embeddings": 32},
    "hunyuan_v1_dense": {"model_type": "hunyuan_v1_dense", "vocab_size": 16, "hidden_size": 8,
                         "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "rope_scaling": {"type": "dynamic", "alpha": 100.0, "factor": 1.0},
                         "max_position_embeddings": 32},
    "deepseek_v2": {"model_type": "deepseek_v2", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                    "num_hidden_layers": 2, "num_attention_heads": 2, "q_lora_rank": None, "kv_lora_rank": 8,
                    "qk_nope_head_dim": 4, "qk_rope_head_dim": 4, "v_head_dim": 4, "n_routed_experts": 4,
                    "num_experts_per_tok": 2, "moe_intermediate_size": 8, "n_shared_experts": 1,
                    "first_k_dense_replace": 1, "max_position_embeddings": 32},
    "deepseek_v3": {"model_type": "deepseek_v3", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                    "num_hidden_layers": 2, "num_attention_heads": 2, "q_lora_rank": 8, "kv_lora_rank": 8,
                    "qk_nope_head_dim": 4, "qk_rope_head_dim": 4, "v_head_dim": 8, "n_routed_experts": 4,
                    "num_experts_per_tok": 2, "moe_intermediate_size": 8, "n_shared_experts": 1, "n_group": 2,
                    "topk_group": 1, "first_k_dense_replace": 1, "max_position_embeddings": 32,
                    "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8,
                                     "mscale": 1.0, "mscale_all_dim": 1.0}},
    "xlm-roberta": {"model_type": "xlm-roberta", "vocab_size": 16, "hidden_size": 8, "num_hidden_layers": 1,
                    "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 18,
                    "pad_token_id": 1, "type_vocab_size": 1},
    "exaone": {"model_type": "exaone", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16, "num_layers": 1,
               "num_attention_heads": 2, "num_key_value_heads": 1, "layer_norm_epsilon": 1e-5,
               "activation_function": "silu", "max_position_embeddings": 32},
    "olmo3": {"model_type": "olmo3", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
              "num_hidden_layers": 2, "num_attention_heads": 2, "sliding_window": 4,
              "layer_types": ["sliding_attention", "full_attention"],
              "rope_parameters": {"full_attention": {"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e4,
                                                     "original_max_position_embeddings": 16},
                                  "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
              "max_position_embeddings": 32},
    "cohere2": {"model_type": "cohere2", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 2, "num_attention_heads": 2, "sliding_window": 4, "sliding_window_pattern": 2,
                "max_position_embeddings": 32},
    "arcee": {"model_type": "arcee", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
              "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 32},
    "qwen3_5_text": {"model_type": "qwen3_5_text", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
                     "linear_num_key_heads": 1, "linear_num_value_heads": 2, "linear_key_head_dim": 4,
                     "linear_value_head_dim": 4, "linear_conv_kernel_dim": 2,
                     "layer_types": ["linear_attention", "full_attention"], "max_position_embeddings": 32,
                   "partial_rotary_factor": 0.5},
    "qwen3_next": {"model_type": "qwen3_next", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                   "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
                   "linear_num_key_heads": 1, "linear_num_value_heads": 2, "linear_key_head_dim": 4,
                   "linear_value_head_dim": 4, "linear_conv_kernel_dim": 2, "num_experts": 2, "num_experts_per_tok": 1,
                   "moe_intermediate_size": 8, "shared_expert_intermediate_size": 8, "mlp_only_layers": [1],
                   "layer_types": ["linear_attention", "full_attention"], "max_position_embeddings": 32,
                   "partial_rotary_factor": 0.5},
    "lfm2": {"model_type": "lfm2", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 24, "num_hidden_layers": 2,
             "num_attention_heads": 2, "num_key_value_heads": 1, "layer_types": ["conv", "full_attention"],
             "block_multiple_of": 8, "conv_L_cache": 3, "max_position_embeddings": 32},
    "lfm2_moe": {"model_type": "lfm2_moe", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                 "moe_intermediate_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                 "layer_types": ["conv", "full_attention"], "num_dense_layers": 1, "num_experts": 3,
                 "num_experts_per_tok": 2, "max_position_embeddings": 32},
    "granitemoehybrid": {"model_type": "granitemoehybrid", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 8,
                         "shared_intermediate_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "num_key_value_heads": 1, "layer_types": ["mamba", "attention"], "mamba_n_heads": 4,
                         "mamba_d_head": 4, "mamba_n_groups": 2, "mamba_d_state": 4, "mamba_d_conv": 3,
                         "num_local_experts": 2, "num_experts_per_tok": 1, "max_position_embeddings": 32},
    "nemotron_h": {"model_type": "nemotron_h", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 8,
                   "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
                   "layers_block_type": ["linear_attention", "moe", "full_attention", "mlp"], "mamba_num_heads": 4,
                   "mamba_head_dim": 4, "n_groups": 2, "ssm_state_size": 4, "conv_kernel": 3, "n_routed_experts": 4,
                   "num_experts_per_tok": 2, "moe_intermediate_size": 4, "moe_shared_expert_intermediate_size": 4,
                   "n_group": 2, "topk_group": 1},
    "mamba2": {"model_type": "mamba2", "vocab_size": 16, "hidden_size": 8, "num_hidden_layers": 2, "num_heads": 4,
               "head_dim": 4, "state_size": 4, "n_groups": 2, "conv_kernel": 3, "expand": 2},
    "falcon_mamba": {"model_type": "falcon_mamba", "vocab_size": 16, "hidden_size": 8, "num_hidden_layers": 2,
                     "state_size": 4, "conv_kernel": 3, "time_step_rank": 2, "mixer_rms_eps": 1e-6},
    "falcon_h1": {"model_type": "falcon_h1", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                  "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
                  "mamba_d_ssm": 16, "mamba_n_heads": 4, "mamba_n_groups": 2, "mamba_d_state": 4, "mamba_d_conv": 3,
                  "mamba_rms_norm": True, "max_position_embeddings": 32, "embedding_multiplier": 2.0,
                  "ssm_multipliers": [1.0, 0.5, 2.0, 1.0, 1.5], "mlp_multipliers": [1.0, 0.5]},
    "jamba": {"model_type": "jamba", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
              "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "num_experts": 2,
              "num_experts_per_tok": 1, "expert_layer_period": 2, "expert_layer_offset": 1, "attn_layer_period": 2,
              "attn_layer_offset": 0, "mamba_d_state": 4, "mamba_d_conv": 3, "mamba_dt_rank": 2},
    "bamba": {"model_type": "bamba", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
              "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "attn_layer_indices": [1],
              "mamba_n_heads": 4, "mamba_d_head": 4, "mamba_n_groups": 2, "mamba_d_state": 4, "mamba_d_conv": 3},
    "gemma4_text": {"model_type": "gemma4_text", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                    "num_hidden_layers": 4, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
                    "global_head_dim": 8, "layer_types": ["sliding_attention", "full_attention", "sliding_attention",
                                                          "full_attention"], "sliding_window": 4,
                    "num_kv_shared_layers": 2, "use_double_wide_mlp": True, "hidden_size_per_layer_input": 4,
                    "vocab_size_per_layer_input": 12, "attention_k_eq_v": True, "num_global_key_value_heads": 1,
                    "max_position_embeddings": 32},
    "bitnet": {"model_type": "bitnet", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
               "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
               "max_position_embeddings": 32, "tie_word_embeddings": True},
    "gemma4_moe": {"model_type": "gemma4_text", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
                   "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
                   "global_head_dim": 8, "hidden_size_per_layer_input": 0, "enable_moe_block": True, "num_experts": 3,
                   "top_k_experts": 2, "moe_intermediate_size": 8, "max_position_embeddings": 32},
    "gemma3n_text": {"model_type": "gemma3n_text", "vocab_size": 16, "hidden_size": 8, "intermediate_size": [16, 8, 16],
                     "num_hidden_layers": 3, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
                     "layer_types": ["sliding_attention", "full_attention", "full_attention"], "sliding_window": 4,
                     "num_kv_shared_layers": 1, "hidden_size_per_layer_input": 4, "vocab_size_per_layer_input": 12,
                     "laurel_rank": 4, "activation_sparsity_pattern": [0.95, 0.0, 0.0], "altup_num_inputs": 3,
                     "max_position_embeddings": 32},
    "mistral3": {"model_type": "mistral3", "text_config": {
        "model_type": "ministral3", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
        "max_position_embeddings": 32,
        "rope_parameters": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 8,
                            "rope_theta": 1e4, "llama_4_scaling_beta": 0.1}}},
}

KEYS = sorted({
    "model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "intermediate_size", "max_position_embeddings", "rms_norm_eps", "hidden_act", "rope_theta",
    "rope_scaling", "rope_parameters", "partial_rotary_factor", "attention_bias", "mlp_bias",
    "tie_word_embeddings", "sliding_window",
    "n_embd", "n_head", "n_layer", "n_inner", "n_positions", "layer_norm_epsilon", "activation_function",
    "scale_attn_by_inverse_layer_idx", "scale_attn_weights",
    "ffn_dim", "enable_bias", "layer_norm_elementwise_affine", "do_layer_norm_before", "_remove_final_layer_norm",
    "word_embed_proj_dim", "n_embed", "seq_length", "apply_residual_connection_post_layernorm",
    "ffn_hidden_size", "activation", "new_decoder_architecture", "multi_query", "parallel_attn", "num_kv_heads",
    "bias", "alibi", "num_ln_in_parallel_attn", "rotary_dim",
    "position_embedding_type", "type_vocab_size", "layer_norm_eps",
    "d_model", "num_heads", "d_kv", "d_ff", "num_layers", "relative_attention_num_buckets",
    "relative_attention_max_distance", "feed_forward_proj", "num_decoder_layers", "scale_decoder_outputs",
    "num_local_experts", "num_experts", "num_experts_per_tok", "moe_intermediate_size",
    "shared_expert_intermediate_size", "norm_topk_prob", "mlp_only_layers", "decoder_sparse_step", "qkv_bias",
    "use_sliding_window", "max_window_layers", "layer_types", "swiglu_limit", "swiglu_alpha", "use_parallel_residual",
    "rotary_pct", "rotary_emb_base", "qk_layernorm", "use_bias", "norm_epsilon", "use_qkv_bias",
    "embedding_multiplier", "attention_multiplier", "residual_multiplier", "logits_scaling", "hidden_activation",
    "use_qk_norm", "moe_num_experts", "moe_k", "moe_num_shared_experts", "moe_layer_start_index",
    "moe_layer_end_index", "moe_layer_interval", "sliding_window_pattern", "n_routed_experts", "n_shared_experts",
    "routed_scaling_factor", "n_group", "topk_group", "first_k_dense_replace", "topk_method", "q_lora_rank",
    "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "rope_interleave", "mlp_layer_types",
    "pad_token_id", "num_layers", "attention_out_bias", "text_config", "llama_4_scaling_beta",
    "linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim",
    "linear_conv_kernel_dim", "full_attention_interval", "num_experts",
    "conv_L_cache", "conv_bias", "full_attn_idxs", "block_auto_adjust_ff_dim", "block_multiple_of",
    "block_ffn_dim_multiplier", "norm_eps", "num_dense_layers", "use_expert_bias",
    "mamba_n_heads", "mamba_d_head", "mamba_n_groups", "mamba_d_state", "mamba_d_conv", "mamba_expand",
    "mamba_conv_bias", "shared_intermediate_size", "time_step_limit", "position_embedding_type",
    "layers_block_type", "hybrid_override_pattern", "mamba_num_heads", "mamba_head_dim", "ssm_state_size", "n_groups",
    "conv_kernel", "use_conv_bias", "state_size", "expand", "moe_shared_expert_intermediate_size", "moe_latent_size",
    "rms_norm", "attention_head_dim", "mlp_hidden_act", "time_step_rank", "mixer_rms_eps", "mamba_d_ssm",
    "mamba_rms_norm", "mamba_norm_before_gate", "ssm_multipliers", "mlp_multipliers", "embedding_multiplier",
    "lm_head_multiplier", "key_multiplier", "attention_in_multiplier", "attention_out_multiplier",
    "ssm_in_multiplier", "ssm_out_multiplier", "projectors_bias", "expert_layer_period",
    "expert_layer_offset", "attn_layer_period", "attn_layer_offset", "mamba_dt_rank", "attn_layer_indices",
    "per_layer_config", "global_head_dim", "num_global_key_value_heads", "attention_k_eq_v", "num_kv_shared_layers",
    "use_double_wide_mlp", "hidden_size_per_layer_input", "vocab_size_per_layer_input", "enable_moe_block",
    "top_k_experts", "altup_num_inputs", "laurel_rank", "activation_sparsity_pattern", "altup_correct_scale",
    "altup_active_idx", "final_logit_softcapping",
})
ROPE_KEYS = ["rope_type", "type", "alpha", "factor", "low_freq_factor", "high_freq_factor",
             "original_max_position_embeddings", "attention_factor", "mscale", "mscale_all_dim", "beta_fast",
             "beta_slow", "truncate", "rope_theta", "partial_rotary_factor", "llama_4_scaling_beta"]
INTS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 31, 32, 33, 64, 256, 1024, -1, -2, 2**20, 2**24, 2**28, 2**29,
        2**30, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63, -(2**31), 10**6]
FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 4.0, 8.0, 0.25, 1.5, 3.0, 32.0, 1e-5, 1e-12, 1e-45, 1e30, 1e308,
          10000.0, 500000.0, float("nan"), float("inf"), float("-inf")]
STRINGS = ["silu", "swish", "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "relu2", "tanh", "",
           "default", "linear", "dynamic", "llama3", "yarn", "longrope", "gated-gelu", "gated-silu", "gated-relu",
           "gated-", "absolute", "relative_key", "llama", "mistral", "gpt2", "opt", "bloom", "falcon", "codegen",
           "bert", "t5", "lm_head.weight", "greedy", "group_limited_greedy", "noaux_tc", "dense", "sparse",
           "sliding_attention", "full_attention", "linear_attention", "LLLG", "mlp", "moe", "M-*E",
           "backbone.embeddings.weight"]
NAME_HINTS = ["lm_head.weight", "transformer.wte.weight", "wte.weight", "transformer.word_embeddings.weight",
              "word_embeddings.weight", "bert.embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight",
              "model.decoder.embed_tokens.weight", "decoder.embed_tokens.weight", "transformer.ln_f.gamma",
              "transformer.ln_f.beta", "ln_f.gamma", "ln_f.beta", "transformer.h.0.ln_1.gamma",
              "bert.embeddings.LayerNorm.gamma", "embeddings.LayerNorm.gamma", "embeddings.LayerNorm.beta",
              "roberta.embeddings.word_embeddings.weight", "language_model.model.embed_tokens.weight",
              "language_model.lm_head.weight"]
DTYPES = ["", "", "", "", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k", "q5_k", "q3_k", "q2_k", "iq4_xs", "iq2_xxs"]


# -- inputs ------------------------------------------------------------------------------------------------

def _value(fdp, depth: int = 0) -> Any:
    kind = fdp.ConsumeIntInRange(0, 11 if depth < 2 else 7)
    if kind == 0:
        return fdp.PickValueInList(INTS)
    if kind == 1:
        return fdp.ConsumeIntInRange(-(2**33), 2**33)
    if kind == 2:
        return fdp.PickValueInList(FLOATS)
    if kind == 3:
        return fdp.ConsumeFloat()
    if kind == 4:
        return fdp.ConsumeBool()
    if kind == 5:
        return None
    if kind == 6:
        return fdp.PickValueInList(STRINGS)
    if kind == 7:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 8))
    if kind in (8, 9):
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    return _rope_dict(fdp, depth + 1)


def _rope_dict(fdp, depth: int = 1) -> Dict[str, Any]:
    d: Dict[str, Any] = {}
    if fdp.ConsumeBool():
        d[fdp.PickValueInList(["rope_type", "type"])] = fdp.PickValueInList(
            ["default", "linear", "dynamic", "llama3", "yarn", "longrope"])
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        d[fdp.PickValueInList(ROPE_KEYS)] = _value(fdp, depth + 1)
    return d


def _fdp_case(data: bytes) -> Dict[str, Any]:
    import atheris  # only this form of input needs it

    fdp = atheris.FuzzedDataProvider(data)
    arch = fdp.PickValueInList(sorted(BASES))
    cfg = json.loads(json.dumps(BASES[arch]))
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        op = fdp.ConsumeIntInRange(0, 4)
        key = fdp.PickValueInList(KEYS)
        if op <= 1:
            cfg[key] = _value(fdp)
        elif op == 2:
            cfg.pop(key, None)
        elif op == 3:
            cfg[fdp.PickValueInList(["rope_scaling", "rope_parameters"])] = _rope_dict(fdp)
        else:  # a small positive integer for a size-like key (keeps models buildable)
            cfg[key] = fdp.ConsumeIntInRange(1, 40)
    names = [n for n in NAME_HINTS if fdp.ConsumeIntInRange(0, 7) == 0]
    dtype = fdp.PickValueInList(DTYPES)
    perturb = [fdp.ConsumeIntInRange(0, 7), fdp.ConsumeIntInRange(0, 255)]
    return {"config": cfg, "tensor_names": names, "dtype": dtype, "perturb": perturb}


def decode(data: bytes) -> Dict[str, Any]:
    """The case an input stands for (JSON as it is; anything else through the FuzzedDataProvider)."""
    if data[:1] == b"{":
        try:
            obj = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError):
            obj = None
        if isinstance(obj, dict):
            if isinstance(obj.get("config"), dict):
                return obj
            return {"config": obj}
    return _fdp_case(data)


def reproducer(data: bytes) -> bytes:
    """A finding is saved as its case in JSON, so that replaying it needs no atheris."""
    return json.dumps(decode(data), sort_keys=True).encode()


# -- already reported bugs (skipped while fuzzing, see common.SKIP_KNOWN) ---------------------------------

def _known(case) -> str:
    """The name of an open, already reported bug this case hits ("" for none): while fuzzing such inputs are
    skipped, so that a run is not spent re-finding one hang. None is open now. Those found so far (huge
    layer counts and bloom head counts looping for minutes in archs.py, T5 relative buckets indexing outside
    their table) are fixed, and their reproducers in fuzz/crashes/ are replayed by the tests."""
    return ""


# -- the checks --------------------------------------------------------------------------------------------

def _specs(case):
    """The specs and name maps the config makes (for the shapes of its checkpoint)."""
    cfg = case["config"]
    hints = case.get("tensor_names") or []
    if not isinstance(hints, list) or not all(isinstance(n, str) for n in hints):
        hints = []
    mt = cfg.get("model_type")
    if isinstance(mt, str) and mt in ENCODER_DECODERS:
        c = Config(cfg, "config.json")
        enc, enc_names, dec, dec_names = ENCODER_DECODERS[mt](c, hints)
        for s in (enc, dec):
            s.validate()
        return [(enc, enc_names), (dec, dec_names)]
    spec, names = spec_from_config(cfg, "config.json", hints)
    spec.validate()
    return [(spec, names)]


def _arrays(case, specs):
    """Random weights of the shapes the specs ask for, in the checkpoint's names and layouts, perturbed as
    the case says ({name: (array, stored as bf16)}); None when the model is too big to build here."""
    shapes: Dict[str, List[int]] = {}
    for spec, names in specs:
        s = common.source_shapes(spec, names)
        if s is None:
            raise common.Finding(f"harness: a canonical name it does not know in {sorted(names)[:8]}...")
        shapes.update(s)
    total = sum(common.numel(s) for s in shapes.values())
    if total > MAX_ELEMENTS or any(spec.n_layers > MAX_LAYERS for spec, _ in specs):
        common.feature("too big to build", specs[0][0].model_type)
        return None
    arrays = common.make_arrays(shapes, seed=total)
    op, idx = (list(case.get("perturb") or [0, 0]) + [0, 0])[:2]
    victim = sorted(arrays)[idx % len(arrays)] if arrays and isinstance(idx, int) else None
    out = {}
    for n, a in arrays.items():
        bf16 = False
        if n == victim:
            if op == 4:
                continue  # a tensor missing from the checkpoint
            if op == 5:
                a = np.zeros([d + 1 for d in a.shape] or [2], np.float32)  # a wrong shape
            if op == 1:
                a = a.astype(np.float16)
            if op == 2:
                a, bf16 = (a.view(np.uint32) >> 16).astype(np.uint16), True
            if op == 3:
                a = a.astype(np.int32)  # a wrong dtype
        out[n] = (a, bf16)
    return out


def _load_and_run(case, specs, arrays) -> None:
    """Writes config.json + model.safetensors and goes through edgeformer.load, then runs the model."""
    d = common.scratch("checkpoint")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(case["config"], f)
    save_safetensors({n: a for n, (a, _) in arrays.items()}, os.path.join(d, "model.safetensors"),
                     bf16=tuple(n for n, (_, b) in arrays.items() if b))
    dtype = case.get("dtype")
    dtype = dtype if isinstance(dtype, str) and dtype else None
    mp = specs[0][0].max_position if specs else 0
    model = edgeformer.load(d, dtype=dtype, threads=1, max_context=max(1, min(8, mp if mp > 0 else 8)))
    mt = model.config.get("model_type")
    common.feature("loaded", mt, dtype)
    V = model.spec.vocab_size
    T = model.max_context  # up to 8: every relative distance, sliding window, ALiBi bias up to 7 gets used
    ids = (np.arange(T, dtype=np.int64) * 7 % V).astype(np.int32)
    ids[-1] = V - 1
    if isinstance(model, Seq2SeqModel):
        n = min(3, T)
        out = model.logits(ids, decoder_input_ids=ids[:n])
        if out.shape != (n, V):
            raise common.Finding(f"decoder logits shape {out.shape}, expected {(n, V)}")
        model.generate(ids.tolist(), max_new_tokens=2, num_beams=2)
    elif model.is_encoder:
        h = model.hidden_states(ids)
        if h.shape != (T, model.spec.hidden_size):
            raise common.Finding(f"hidden_states shape {h.shape}, expected {(T, model.spec.hidden_size)}")
    else:
        out = model.logits(ids)
        if out.shape != (T, V):
            raise common.Finding(f"logits shape {out.shape}, expected {(T, V)}")
        model.generate(ids[: max(1, T // 2)].tolist(), max_new_tokens=2, temperature=0)
    common.feature("ran", mt, dtype)


def check(data: bytes) -> None:
    case = decode(data)
    if common.SKIP_KNOWN and _known(case):
        return  # no feature either: such inputs are not worth keeping in the corpus
    specs, arrays = None, None
    try:
        specs = _specs(case)
        common.feature("spec", specs[0][0].model_type, specs[0][0].pos, specs[0][0].rope.scaling)
        arrays = _arrays(case, specs)
    except ValueError as e:
        common.feature(common.error_class(e))
    if arrays is None:  # load() still reads the config (and must reject it with a ValueError)
        arrays = {"unused": (np.zeros(1, np.float32), False)}
    try:
        _load_and_run(case, specs, arrays)
    except ValueError as e:
        common.feature("load", common.error_class(e))


# -- seeds -------------------------------------------------------------------------------------------------

def make_seeds(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)

    def save(name, cfg, **kw):
        case = {"config": cfg, "tensor_names": kw.pop("names", []), "dtype": kw.pop("dtype", ""),
                "perturb": kw.pop("perturb", [0, 0])}
        with open(os.path.join(out_dir, name + ".json"), "w") as f:
            json.dump(case, f, sort_keys=True)

    for arch, cfg in BASES.items():
        save(arch, cfg)
    L = BASES["llama"]
    save("llama_tied_bias_q8", dict(L, tie_word_embeddings=True, attention_bias=True, mlp_bias=True), dtype="q8_0")
    save("llama_rope_linear", dict(L, rope_scaling={"type": "linear", "factor": 2.0}))
    save("llama_rope_dynamic", dict(L, rope_scaling={"rope_type": "dynamic", "factor": 2.0}))
    save("llama_rope_llama3", dict(L, rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}))
    save("llama_rope_yarn_v5", dict(L, rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                                                         "original_max_position_embeddings": 8}))
    save("llama_partial_headdim", dict(L, head_dim=8, partial_rotary_factor=0.5, hidden_act="gelu"), dtype="f16")
    save("gpt2_untied_bf16", dict(BASES["gpt2"], tie_word_embeddings=False, n_inner=12), names=["lm_head.weight"],
         dtype="bf16")
    save("opt_postln", dict(BASES["opt"], do_layer_norm_before=False, enable_bias=False, word_embed_proj_dim=8))
    save("bloom_3heads", dict(BASES["bloom"], hidden_size=12, n_head=3), names=["transformer.word_embeddings.weight"])
    F = BASES["falcon"]
    save("falcon_7b_style", dict(F, new_decoder_architecture=False, multi_query=True), dtype="q4_0")
    save("falcon_rw_alibi", dict(F, new_decoder_architecture=False, multi_query=False, alibi=True, bias=True,
                                 parallel_attn=False))
    save("falcon_groups_one_ln", dict(F, num_attention_heads=4, num_kv_heads=2, num_ln_in_parallel_attn=1))
    save("bert_prefixed_gamma", dict(BASES["bert"], type_vocab_size=3, hidden_act="gelu_new"),
         names=["bert.embeddings.word_embeddings.weight", "bert.embeddings.LayerNorm.gamma"])
    save("t5_v10_untied", dict(BASES["t5"], feed_forward_proj="relu", num_decoder_layers=2,
                               tie_word_embeddings=False), names=["lm_head.weight"])
    save("llama_missing_tensor", L, perturb=[4, 3])
    save("gpt2_wrong_shape", BASES["gpt2"], perturb=[5, 1])
    with open(os.path.join(out_dir, "fdp_bytes"), "wb") as f:  # the FuzzedDataProvider form
        f.write(bytes(range(256)))


if __name__ == "__main__":
    if sys.argv[1:] == ["--make-seeds"]:
        make_seeds(os.path.join(common.CORPUS_DIR, NAME))
    elif sys.argv[1:2] == ["--to-case"]:  # rewrites libFuzzer's artifacts as JSON cases (replay without atheris)
        for p in sys.argv[2:]:
            with open(p, "rb") as f:
                raw = f.read()
            try:
                is_json = isinstance(json.loads(raw.decode("utf-8")), dict)
            except (ValueError, RecursionError):
                is_json = False
            if not is_json:
                common.write_file(p, reproducer(raw))
    else:
        common.fuzz_main(NAME, check, reproducer)
