#!/usr/bin/env python3
"""Does llama.cpp read our GGUF files as we do? For each architecture: a tiny random model (transformers, the test
suite's make_model), written as f16 GGUF by `edgeformer.quantize`, then evaluated on one prompt by edgeformer and by
llama.cpp (llama-cpp-python): the NMSE between their logits, and each against transformers on the checkpoint. A
layout or metadata convention we got wrong shows as an NMSE near 1; both engines' rounding as 1e-7 .. 1e-5.

    python benchmarks/agree_llama_cpp_archs.py [ARCH ...] --llama-cpp /work/engines/llama_avx512

Not a test: llama.cpp is not a test dependency. Session 13's run: benchmarks/results/agree-llama-cpp-archs-s13.md."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))


def cases():
    import transformers as tf

    from test_hybrid import _falcon_h1, _with_score_bias
    from test_gemma4 import BASE, CASES
    from test_moe import _with_select_bias

    b = dict(vocab_size=320, max_position_embeddings=64, bos_token_id=0, eos_token_id=None, pad_token_id=None)
    d = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, **b)
    oss_rope = {"rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                "original_max_position_embeddings": 16, "rope_theta": 150000.0}
    g4 = {**BASE, "hidden_size": 128, "head_dim": 32, "global_head_dim": 64}
    q35 = dict(linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=32, linear_value_head_dim=32,
               rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
               tie_word_embeddings=False, **{**d, "num_hidden_layers": 4})
    return {
        "llama": lambda: (tf.LlamaForCausalLM, tf.LlamaConfig(tie_word_embeddings=False, **d)),
        "qwen2": lambda: (tf.Qwen2ForCausalLM, tf.Qwen2Config(tie_word_embeddings=False, **d)),
        "qwen3": lambda: (tf.Qwen3ForCausalLM, tf.Qwen3Config(head_dim=64, tie_word_embeddings=False, **d)),
        "qwen2_moe": lambda: (tf.Qwen2MoeForCausalLM, tf.Qwen2MoeConfig(
            num_experts=6, num_experts_per_tok=3, moe_intermediate_size=64, shared_expert_intermediate_size=192,
            tie_word_embeddings=False, **{**d, "intermediate_size": 192})),
        "qwen3_moe": lambda: (tf.Qwen3MoeForCausalLM, tf.Qwen3MoeConfig(
            head_dim=64, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=64, norm_topk_prob=True,
            tie_word_embeddings=False, **d)),
        "mixtral": lambda: (tf.MixtralForCausalLM, tf.MixtralConfig(
            num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=False, **{**d, "intermediate_size": 64})),
        "gemma": lambda: (tf.GemmaForCausalLM, tf.GemmaConfig(head_dim=256, **d)),
        "gemma2": lambda: (tf.Gemma2ForCausalLM, tf.Gemma2Config(
            head_dim=64, sliding_window=6, query_pre_attn_scalar=64, **{**d, "num_hidden_layers": 3})),
        "gemma3": lambda: (tf.Gemma3ForCausalLM, tf.Gemma3TextConfig(
            head_dim=64, sliding_window=6, query_pre_attn_scalar=64, **{**d, "num_hidden_layers": 7})),
        "gpt_neox": lambda: (tf.GPTNeoXForCausalLM, tf.GPTNeoXConfig(**{k: v for k, v in d.items()
                                                                         if k != "num_key_value_heads"})),
        "phi": lambda: (tf.PhiForCausalLM, tf.PhiConfig(**{k: v for k, v in d.items() if k != "num_key_value_heads"})),
        "starcoder2": lambda: (tf.Starcoder2ForCausalLM, tf.Starcoder2Config(**d)),
        "stablelm": lambda: (tf.StableLmForCausalLM, tf.StableLmConfig(use_qkv_bias=True, **d)),
        "granite": lambda: (tf.GraniteForCausalLM, tf.GraniteConfig(
            embedding_multiplier=3.0, attention_multiplier=0.05, residual_multiplier=0.4, logits_scaling=2.5, **d)),
        "olmo2": lambda: (tf.Olmo2ForCausalLM, tf.Olmo2Config(**d)),
        "granitemoe": lambda: (tf.GraniteMoeForCausalLM, tf.GraniteMoeConfig(
            num_local_experts=4, num_experts_per_tok=2, embedding_multiplier=3.0, attention_multiplier=0.05,
            residual_multiplier=0.4, logits_scaling=2.5, **{**d, "intermediate_size": 64})),
        "smollm3": lambda: (tf.SmolLM3ForCausalLM, tf.SmolLM3Config(**{**d, "num_hidden_layers": 4})),
        "cohere": lambda: (tf.CohereForCausalLM, tf.CohereConfig(logit_scale=0.5, **d)),
        "olmoe": lambda: (tf.OlmoeForCausalLM, tf.OlmoeConfig(num_experts=4, num_experts_per_tok=2, **{
            **d, "intermediate_size": 64, "num_key_value_heads": 4})),  # (llama.cpp's olmoe has no kv groups)
        "gpt_oss": lambda: (tf.GptOssForCausalLM, tf.GptOssConfig(
            head_dim=32, num_local_experts=4, num_experts_per_tok=2, sliding_window=6,
            rope_parameters={"rope_type": "default", "rope_theta": 150000.0},
            **{**d, "intermediate_size": 128, "num_hidden_layers": 4})),
        "ernie4_5": lambda: (tf.Ernie4_5ForCausalLM, tf.Ernie4_5Config(head_dim=32, **d)),
        # (llama.cpp windows the 64-layer model only: EXAONE 4.0 32B's shape)
        "exaone4": lambda: (tf.Exaone4ForCausalLM, tf.Exaone4Config(
            sliding_window=6, sliding_window_pattern=4, **{**d, "num_hidden_layers": 64})),
        "exaone4_global": lambda: (tf.Exaone4ForCausalLM, tf.Exaone4Config(
            sliding_window=None, layer_types=["full_attention"] * 2, **d)),
        "glm4": lambda: (tf.Glm4ForCausalLM, tf.Glm4Config(head_dim=32, **d)),
        "hunyuan": lambda: (tf.HunYuanDenseV1ForCausalLM, tf.HunYuanDenseV1Config(
            head_dim=32, rope_parameters={"rope_type": "dynamic", "alpha": 1000.0, "factor": 1.0,
                                          "rope_theta": 10000.0}, **d)),
        "internlm3": lambda: (tf.LlamaForCausalLM, tf.InternLM3Config(head_dim=32, attention_bias=True, mlp_bias=True, **d)),
        "stablelm_qk": lambda: (tf.StableLmForCausalLM, tf.StableLmConfig(qk_layernorm=True, **d)),
        # (llama.cpp reads q/k norms in 64-layer models only: Command R+'s shape)
        "cohere_qk": lambda: (tf.CohereForCausalLM, tf.CohereConfig(logit_scale=0.5, use_qk_norm=True, **{
            **d, "num_hidden_layers": 64})),
        "ernie4_5_moe": lambda: (tf.Ernie4_5_MoeForCausalLM, tf.Ernie4_5_MoeConfig(
            moe_num_experts=8, moe_k=3, moe_intermediate_size=64, moe_num_shared_experts=2,
            **{**d, "num_hidden_layers": 3})),
        "glm4_moe": lambda: (_with_select_bias(tf.Glm4MoeForCausalLM), tf.Glm4MoeConfig(
            head_dim=32, n_routed_experts=8, num_experts_per_tok=3, moe_intermediate_size=64, n_shared_experts=1,
            routed_scaling_factor=2.5, use_qk_norm=True, attention_bias=True, **{**d, "num_hidden_layers": 3})),
        "glm4_moe_groups": lambda: (_with_select_bias(tf.Glm4MoeForCausalLM), tf.Glm4MoeConfig(
            head_dim=32, n_routed_experts=8, num_experts_per_tok=3, moe_intermediate_size=64, n_shared_experts=1,
            routed_scaling_factor=2.5, n_group=4, topk_group=2, **{**d, "num_hidden_layers": 3})),
        "deepseek_v2": lambda: (tf.DeepseekV2ForCausalLM, tf.DeepseekV2Config(
            q_lora_rank=None, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=32, v_head_dim=32,
            n_routed_experts=8, num_experts_per_tok=3, moe_intermediate_size=64, n_shared_experts=2,
            first_k_dense_replace=1, routed_scaling_factor=1.5, **{**d, "num_hidden_layers": 27,
                                                                     "num_key_value_heads": 4})),
        "deepseek_v3": lambda: (_with_select_bias(tf.DeepseekV3ForCausalLM), tf.DeepseekV3Config(
            q_lora_rank=64, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=32, v_head_dim=64,
            n_routed_experts=8, num_experts_per_tok=3, moe_intermediate_size=64, n_shared_experts=1,
            first_k_dense_replace=1, n_group=4, topk_group=2, routed_scaling_factor=2.5,
            rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                             "mscale": 1.0, "mscale_all_dim": 1.0, "rope_theta": 10000.0},
            **{**d, "num_hidden_layers": 3, "num_key_value_heads": 4})),
        "glm4_moe_lite": lambda: (_with_select_bias(tf.Glm4MoeLiteForCausalLM), tf.Glm4MoeLiteConfig(
            q_lora_rank=64, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=32, v_head_dim=64,
            n_routed_experts=8, num_experts_per_tok=3, moe_intermediate_size=64, n_shared_experts=1,
            routed_scaling_factor=1.8, **{**d, "num_hidden_layers": 3, "num_key_value_heads": 4})),
        "llama31": lambda: (tf.LlamaForCausalLM, tf.LlamaConfig(tie_word_embeddings=False, rope_parameters={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16, "rope_theta": 10000.0}, **d)),
        # session 15's: EXAONE 3.5 (llama3 rope), OLMo 3 (window, yarn on the full layers), Command R7B, Arcee
        # (yarn), Seed-OSS, Ministral 3 (yarn and the query scaling past 16 positions)
        "exaone": lambda: (tf.AutoModelForCausalLM.from_config, tf.ExaoneConfig(rope_parameters={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16, "rope_theta": 10000.0}, **d)),
        "olmo3": lambda: (tf.Olmo3ForCausalLM, tf.Olmo3Config(sliding_window=6, rope_parameters={
            "full_attention": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                               "rope_theta": 10000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}, **{**d, "num_hidden_layers": 4})),
        "cohere2": lambda: (tf.Cohere2ForCausalLM, tf.Cohere2Config(sliding_window=6, logit_scale=0.5,
                                                                    **{**d, "num_hidden_layers": 4})),
        "arcee": lambda: (tf.ArceeForCausalLM, tf.ArceeConfig(rope_parameters={
            "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "rope_theta": 10000.0}, **d)),
        "seed_oss": lambda: (tf.SeedOssForCausalLM, tf.SeedOssConfig(head_dim=32, **d)),
        "ministral3": lambda: (tf.Ministral3ForCausalLM, tf.Ministral3Config(head_dim=32, rope_parameters={
            "rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16,
            "beta_fast": 32.0, "beta_slow": 1.0, "mscale_all_dim": 1.0, "mscale": 1.0, "llama_4_scaling_beta": 0.5},
            **d)),
        # session 16's: Qwen3.5 (Gated DeltaNet layers, 2 value heads per key head: llama.cpp's tiled order), dense
        # and mixture-of-experts, Qwen3-Next (its fused inputs; grouped value heads), LFM2 (short convolutions)
        "qwen3_5": lambda: (tf.Qwen3_5ForCausalLM, tf.Qwen3_5TextConfig(head_dim=32, **q35)),
        "qwen3_5_moe": lambda: (tf.Qwen3_5MoeForCausalLM, tf.Qwen3_5MoeTextConfig(
            head_dim=32, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64,
            shared_expert_intermediate_size=96, **{k: v for k, v in q35.items() if k != "intermediate_size"})),
        "qwen3_next": lambda: (tf.Qwen3NextForCausalLM, tf.Qwen3NextConfig(
            head_dim=32, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64,
            shared_expert_intermediate_size=96, **q35)),
        "lfm2": lambda: (tf.Lfm2ForCausalLM, tf.Lfm2Config(
            layer_types=["conv", "conv", "full_attention", "conv"], block_multiple_of=64,
            **{**d, "num_hidden_layers": 4, "intermediate_size": 384})),
        "lfm2_moe": lambda: (tf.Lfm2MoeForCausalLM, tf.Lfm2MoeConfig(
            layer_types=["conv", "full_attention", "conv", "conv"], num_dense_layers=1, num_experts=8,
            num_experts_per_tok=2, moe_intermediate_size=64, **{**d, "num_hidden_layers": 4})),
        "granite_hybrid": lambda: (tf.GraniteMoeHybridForCausalLM, tf.GraniteMoeHybridConfig(
            layer_types=["mamba", "mamba", "attention", "mamba"], mamba_n_heads=8, mamba_d_head=32, mamba_n_groups=2,
            mamba_d_state=16, num_local_experts=4, num_experts_per_tok=2, shared_intermediate_size=96,
            embedding_multiplier=2.0, attention_multiplier=0.1, residual_multiplier=0.5, logits_scaling=3.0,
            **{**d, "num_hidden_layers": 4, "intermediate_size": 64})),
        "nemotron_h": lambda: (tf.NemotronHForCausalLM, tf.NemotronHConfig(
            layers_block_type=["linear_attention", "mlp", "full_attention", "mlp", "linear_attention", "mlp"],
            head_dim=32, mamba_num_heads=8, mamba_head_dim=32, ssm_state_size=16, n_groups=2, tie_word_embeddings=False,
            **{k: v for k, v in d.items() if k != "num_hidden_layers"})),
        "nemotron_h_moe": lambda: (_with_score_bias, tf.NemotronHConfig(
            layers_block_type=["linear_attention", "moe", "full_attention", "moe", "linear_attention", "moe"],
            head_dim=32, mamba_num_heads=8, mamba_head_dim=32, ssm_state_size=16, n_groups=2, n_routed_experts=8,
            num_experts_per_tok=2, moe_intermediate_size=64, moe_shared_expert_intermediate_size=96, n_group=2,
            topk_group=1, routed_scaling_factor=2.5, tie_word_embeddings=False,
            **{k: v for k, v in d.items() if k != "num_hidden_layers"})),
        "mamba2": lambda: (tf.Mamba2ForCausalLM, tf.Mamba2Config(
            num_hidden_layers=3, num_heads=8, head_dim=32, state_size=16, n_groups=2, tie_word_embeddings=False,
            **{k: v for k, v in d.items() if k in ("hidden_size", *b)})),
        "mamba": lambda: (tf.MambaForCausalLM, tf.MambaConfig(
            num_hidden_layers=3, state_size=16, tie_word_embeddings=False,
            **{k: v for k, v in d.items() if k in ("hidden_size", *b)})),
        # (llama.cpp normalizes dt, B and C with the layers' epsilon: equal here; mixer_rms_eps's default below)
        "falcon_mamba": lambda: (tf.FalconMambaForCausalLM, tf.FalconMambaConfig(
            num_hidden_layers=3, state_size=16, mixer_rms_eps=1e-5, tie_word_embeddings=False,
            **{k: v for k, v in d.items() if k in ("hidden_size", *b)})),
        "falcon_mamba_1e-6": lambda: (tf.FalconMambaForCausalLM, tf.FalconMambaConfig(
            num_hidden_layers=3, state_size=16, tie_word_embeddings=False,
            **{k: v for k, v in d.items() if k in ("hidden_size", *b)})),
        "falcon_h1": lambda: (tf.FalconH1ForCausalLM, tf.FalconH1Config(**_falcon_h1(
            **{**d, "intermediate_size": 192}, head_dim=32, mamba_d_ssm=256, mamba_n_heads=8, mamba_d_head=32))),
        "falcon_h1_norm": lambda: (tf.FalconH1ForCausalLM, tf.FalconH1Config(**_falcon_h1(
            **{**d, "intermediate_size": 192}, head_dim=32, mamba_d_ssm=256, mamba_n_heads=8, mamba_d_head=32,
            mamba_rms_norm=True, mamba_norm_before_gate=False))),
        "jamba": lambda: (tf.JambaForCausalLM, tf.JambaConfig(
            num_experts=4, num_experts_per_tok=2, expert_layer_period=2, expert_layer_offset=1, attn_layer_period=4,
            attn_layer_offset=2, mamba_d_state=16, tie_word_embeddings=False, **{**d, "num_hidden_layers": 6})),
        "gpt_bigcode": lambda: (tf.GPTBigCodeForCausalLM, tf.GPTBigCodeConfig(
            n_embd=128, n_layer=2, n_head=4, n_positions=64, multi_query=True, tie_word_embeddings=False,
            **{k: v for k, v in b.items() if k != "max_position_embeddings"})),
        # Gemma 4: E2B's shape (per-layer inputs, shared KV, double-wide MLPs) and 31B's (keys as values)
        "gemma4_e2b": lambda: (tf.Gemma4ForCausalLM, tf.Gemma4TextConfig(**{**g4, **CASES["e2b"]})),
        "gemma4_31b": lambda: (tf.Gemma4ForCausalLM, tf.Gemma4TextConfig(**{**g4, **CASES["31b"]})),
        "gemma4_moe": lambda: (tf.Gemma4ForCausalLM, tf.Gemma4TextConfig(**{**g4, **CASES["moe"]})),
        "gpt_oss_yarn": lambda: (tf.GptOssForCausalLM, tf.GptOssConfig(
            head_dim=32, num_local_experts=4, num_experts_per_tok=2, sliding_window=6, rope_parameters=oss_rope,
            **{**d, "intermediate_size": 128, "num_hidden_layers": 4})),
    }


def nmse(a, ref) -> float:
    return float(((a - ref) ** 2).sum() / (ref**2).sum())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("archs", nargs="*")
    ap.add_argument("--llama-cpp", default=None, help="folder with an installed llama_cpp package")
    ap.add_argument("--out", default=None, help="markdown file for the table")
    ap.add_argument("--type", default="f16", choices=["f16", "f32"], help="the files' weight type")
    a = ap.parse_args()
    if a.llama_cpp:
        sys.path.insert(0, a.llama_cpp)
    import llama_cpp

    import edgeformer
    from conftest import hf_logits, make_model, prompt_ids

    table = cases()
    prompt = prompt_ids(32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.archs or list(table):
            cls, cfg = table[name]()
            d = os.path.join(tmp, name)
            ref = hf_logits(make_model(d, cls, cfg), prompt)
            edgeformer.quantize(d, d + ".gguf", a.type)
            ours = edgeformer.load(d + ".gguf", threads=2, max_context=64, kv_dtype="f32").logits(prompt)
            try:
                m = llama_cpp.Llama(model_path=d + ".gguf", n_ctx=64, logits_all=True, verbose=False)
            except ValueError as e:
                rows.append((name, f"llama.cpp did not load it: {e}", "", f"{nmse(ours, ref):.2g}"))
                continue
            m.eval(prompt)
            theirs = np.array(m.scores[: len(prompt)])
            rows.append((name, f"{nmse(ours, theirs):.2g}", f"{nmse(theirs, ref):.2g}", f"{nmse(ours, ref):.2g}"))
            print(*rows[-1], flush=True)
    md = [f"llama-cpp-python {llama_cpp.__version__}, edgeformer {edgeformer.__version__}; {a.type} files written by "
          "edgeformer, a 32-token prompt, logits NMSE", "",
          "| arch | ours vs llama.cpp | llama.cpp vs transformers | ours vs transformers |", "|---|---|---|---|"]
    md += [f"| {' | '.join(r)} |" for r in rows]
    print("\n".join(md))
    if a.out:
        with open(a.out, "w") as f:
            f.write("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
