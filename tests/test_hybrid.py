"""Hybrid decoders against transformers on tiny random checkpoints, under every ISA: Qwen3.5 (Gated DeltaNet
layers beside gated attention layers), dense and mixture-of-experts, text-only and as the image-and-text
checkpoint, Qwen3-Next, LFM2 (gated short convolutions), dense and mixture-of-experts, Granite 4.0-H, Nemotron-H
(layers of one branch each), Mamba2 (Mamba2 mixers alone), Mamba, Falcon-Mamba, Falcon-H1, Jamba and Bamba. Logits
within 1e-4 + 2e-3 * max|logit|, greedy tokens identical; prompts in pieces, batches and the cache's reuse rules
of a recurrent state; GGUF in and out as llama.cpp writes each."""

from __future__ import annotations

import numpy as np
import pytest

import edgeformer

from conftest import assert_logits_close, ef_greedy, prompt_ids, reference_cache

PROMPT = prompt_ids(32)
N_GREEDY = 16


def _text_config(moe: bool = False, **kw):
    import transformers as tf

    base = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
                linear_key_head_dim=16, linear_value_head_dim=8, linear_conv_kernel_dim=4,
                max_position_embeddings=64, bos_token_id=0, eos_token_id=None, pad_token_id=None,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5})
    base.update(kw)
    if moe:
        del base["intermediate_size"]
        return tf.Qwen3_5MoeTextConfig(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                                       shared_expert_intermediate_size=48, **base)
    return tf.Qwen3_5TextConfig(**base)


def _cases():
    import transformers as tf

    return {
        # three Gated DeltaNet layers, then a gated attention layer
        "qwen3_5_text": (tf.Qwen3_5ForCausalLM, _text_config()),
        # value heads 2 per key head, other sizes
        "qwen3_5_text_wide": (tf.Qwen3_5ForCausalLM, _text_config(
            linear_num_value_heads=8, linear_value_head_dim=16, linear_conv_kernel_dim=3,
            layer_types=["linear_attention", "full_attention", "linear_attention", "full_attention"])),
        # experts in every layer, a gated shared expert
        "qwen3_5_moe_text": (tf.Qwen3_5MoeForCausalLM, _text_config(moe=True)),
        "qwen3_5": _wrapper(_text_config()),
        # Qwen3-Next: q, k, v, z (and b, a) fused per key head; a dense layer among the sparse ones; weights not
        # renormalized over the chosen experts
        "qwen3_next": (tf.Qwen3NextForCausalLM, tf.Qwen3NextConfig(**{
            **_text_config().to_dict(), "model_type": "qwen3_next", "num_experts": 4, "num_experts_per_tok": 2,
            "moe_intermediate_size": 32, "shared_expert_intermediate_size": 48, "mlp_only_layers": [1],
            "norm_topk_prob": False})),
        # as llama.cpp reads them (one state size for keys and values), value heads 2 per key head
        "qwen3_5_text_eq": (tf.Qwen3_5ForCausalLM, _text_config(linear_value_head_dim=16)),
        "qwen3_5_moe_text_eq": (tf.Qwen3_5MoeForCausalLM, _text_config(moe=True, linear_value_head_dim=16,
                                                                        tie_word_embeddings=True)),
        "qwen3_5_eq": _wrapper(_text_config(linear_value_head_dim=16, linear_num_value_heads=2)),
        # LFM2: gated short convolutions beside GQA attention layers; its MLP width adjusted from intermediate_size
        "lfm2": (tf.Lfm2ForCausalLM, tf.Lfm2Config(
            vocab_size=320, hidden_size=64, intermediate_size=192, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, layer_types=["conv", "conv", "full_attention", "conv"],
            block_multiple_of=32, bos_token_id=0, eos_token_id=None, pad_token_id=None)),
        "lfm2_untied": (tf.Lfm2ForCausalLM, tf.Lfm2Config(
            vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=64, full_attn_idxs=[1], layer_types=None,
            block_auto_adjust_ff_dim=False, conv_L_cache=4, tie_word_embeddings=False, bos_token_id=0,
            eos_token_id=None, pad_token_id=None)),
        # LFM2-MoE: a dense first layer, then a sigmoid router whose expert bias (random here) only chooses
        "lfm2_moe": (_with_expert_bias, tf.Lfm2MoeConfig(
            vocab_size=320, hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, num_dense_layers=1,
            num_experts=6, num_experts_per_tok=2, routed_scaling_factor=1.5,
            layer_types=["conv", "full_attention", "conv", "conv"], bos_token_id=0, eos_token_id=None,
            pad_token_id=None)),
        "lfm2_moe_eq": (_with_expert_bias, tf.Lfm2MoeConfig(
            vocab_size=320, hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, num_dense_layers=1,
            num_experts=4, num_experts_per_tok=2, layer_types=["conv", "full_attention", "conv"], bos_token_id=0,
            eos_token_id=None, pad_token_id=None)),
        # Granite 4.0-H: Mamba2 mixers (2 groups) beside attention, Granite's multipliers, no positions; experts
        # beside the shared MLP, or that MLP alone (dense, rotary)
        "granite_hybrid": (tf.GraniteMoeHybridForCausalLM, tf.GraniteMoeHybridConfig(**_granite_hybrid())),
        "granite_hybrid_dense": (tf.GraniteMoeHybridForCausalLM, tf.GraniteMoeHybridConfig(**_granite_hybrid(
            num_local_experts=0, position_embedding_type="rope", mamba_n_groups=1, time_step_limit=[0.0, 4.0]))),
        "granite_hybrid_rope": (tf.GraniteMoeHybridForCausalLM, tf.GraniteMoeHybridConfig(**_granite_hybrid(
            num_local_experts=0, position_embedding_type="rope"))),
        # Nemotron-H: each layer one branch (a Mamba2 mixer, attention without positions, a squared-ReLU MLP)
        "nemotron_h": (tf.NemotronHForCausalLM, tf.NemotronHConfig(**_nemotron_h())),
        "nemotron_h_tied": (tf.NemotronHForCausalLM, tf.NemotronHConfig(**_nemotron_h(
            layers_block_type=["full_attention", "linear_attention", "mlp"], n_groups=1, use_conv_bias=False,
            tie_word_embeddings=True, time_step_limit=[0.0, 4.0]))),
        # Nemotron 3: experts without a gate (squared ReLU) and a shared one, DeepSeek-V3's router (random
        # selection biases); two groups of experts, weights not renormalized, scaled
        "nemotron_h_moe": (_with_score_bias, tf.NemotronHConfig(**_nemotron_h(
            layers_block_type=["linear_attention", "moe", "full_attention", "moe"], n_routed_experts=8,
            num_experts_per_tok=2, moe_intermediate_size=32, moe_shared_expert_intermediate_size=48))),
        "nemotron_h_moe_groups": (_with_score_bias, tf.NemotronHConfig(**_nemotron_h(
            layers_block_type=["linear_attention", "moe", "full_attention", "mlp", "moe"], n_routed_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=32, moe_shared_expert_intermediate_size=48, n_group=2, topk_group=1,
            norm_topk_prob=False, routed_scaling_factor=2.5))),
        # Mamba2: its mixers alone
        "mamba2": (tf.Mamba2ForCausalLM, tf.Mamba2Config(
            vocab_size=320, hidden_size=64, num_hidden_layers=3, num_heads=8, head_dim=16, state_size=16, n_groups=2,
            bos_token_id=0, eos_token_id=None, pad_token_id=None)),
        # Mamba and Falcon-Mamba (dt, B and C RMS-normalized without weights): their mixers alone
        "mamba": (tf.MambaForCausalLM, tf.MambaConfig(
            vocab_size=320, hidden_size=64, num_hidden_layers=3, state_size=8, conv_kernel=3, bos_token_id=0,
            eos_token_id=None, pad_token_id=None)),
        "falcon_mamba": (tf.FalconMambaForCausalLM, tf.FalconMambaConfig(
            vocab_size=320, hidden_size=64, num_hidden_layers=2, state_size=16, time_step_rank=8,
            tie_word_embeddings=False, bos_token_id=0, eos_token_id=None, pad_token_id=None)),
        # Falcon-H1: a Mamba2 mixer beside every attention layer, its multipliers (folded into the weights); the
        # mixer's output norm none, after the gate, or before it
        "falcon_h1": (tf.FalconH1ForCausalLM, tf.FalconH1Config(**_falcon_h1())),
        "falcon_h1_norm": (tf.FalconH1ForCausalLM, tf.FalconH1Config(**_falcon_h1(
            mamba_rms_norm=True, mamba_norm_before_gate=False))),
        "falcon_h1_tied": (tf.FalconH1ForCausalLM, tf.FalconH1Config(**_falcon_h1(tie_word_embeddings=True))),
        "falcon_h1_norm_first": (tf.FalconH1ForCausalLM, tf.FalconH1Config(**_falcon_h1(
            mamba_rms_norm=True, mamba_norm_before_gate=True, mamba_n_groups=1))),
        # Jamba: Mamba mixers (weighted dt, B and C norms) beside attention without positions, experts every
        # other layer (softmax, not renormalized)
        "jamba": (tf.JambaForCausalLM, tf.JambaConfig(
            vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, expert_layer_period=2,
            expert_layer_offset=1, attn_layer_period=4, attn_layer_offset=2, mamba_d_state=8, mamba_dt_rank=8,
            max_position_embeddings=64, bos_token_id=0, eos_token_id=None, pad_token_id=None)),
        # Bamba: Granite 4.0-H's mixers beside attention with rotary on half of each head
        "bamba": (tf.BambaForCausalLM, tf.BambaConfig(
            vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, attn_layer_indices=[1], mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=2,
            mamba_d_state=16, max_position_embeddings=64, bos_token_id=0, eos_token_id=None, pad_token_id=None)),
        "qwen3_next_eq": (tf.Qwen3NextForCausalLM, tf.Qwen3NextConfig(**{
            **_text_config(linear_value_head_dim=16).to_dict(), "model_type": "qwen3_next", "num_experts": 4,
            "num_experts_per_tok": 2, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 48})),
    }


def _granite_hybrid(**kw):
    return {**dict(vocab_size=320, hidden_size=64, intermediate_size=32, shared_intermediate_size=48,
                   num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                   layer_types=["linear_attention", "linear_attention", "full_attention", "linear_attention"],
                   mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=2, mamba_d_state=16, mamba_d_conv=4,
                   num_local_experts=4, num_experts_per_tok=2, embedding_multiplier=2.0, attention_multiplier=0.1,
                   residual_multiplier=0.5, logits_scaling=3.0, bos_token_id=0, eos_token_id=None,
                   pad_token_id=None), **kw}


def _falcon_h1(**kw):
    return {**dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16, mamba_d_ssm=96, mamba_n_heads=6, mamba_d_head=16,
                   mamba_n_groups=2, mamba_d_state=16, max_position_embeddings=64, embedding_multiplier=2.0,
                   lm_head_multiplier=0.5, attention_in_multiplier=0.8, key_multiplier=1.3,
                   attention_out_multiplier=0.7, ssm_in_multiplier=1.2, ssm_out_multiplier=0.6,
                   mlp_multipliers=[1.5, 0.4], ssm_multipliers=[0.9, 1.1, 0.5, 2.0, 1.7], bos_token_id=0,
                   eos_token_id=None, pad_token_id=None), **kw}


def _nemotron_h(**kw):
    return {**dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                   head_dim=16, layers_block_type=["linear_attention", "mlp", "full_attention", "mlp",
                                                   "linear_attention", "mlp"],
                   mamba_num_heads=8, mamba_head_dim=16, ssm_state_size=16, n_groups=2, bos_token_id=0,
                   eos_token_id=None, pad_token_id=None), **kw}


def _with_score_bias(cfg):
    """A Nemotron 3 whose router's selection biases (a buffer, zeros at init) are random."""
    import torch
    import transformers as tf

    model = tf.NemotronHForCausalLM(cfg)
    g = torch.Generator().manual_seed(5)
    for layer in model.model.layers:
        router = getattr(layer.mixer, "gate", None)
        if router is not None and hasattr(router, "e_score_correction_bias"):
            router.e_score_correction_bias.copy_(0.3 * torch.randn(router.e_score_correction_bias.shape, generator=g))
    return model


def _with_expert_bias(cfg):
    """An LFM2-MoE whose expert biases (a buffer, zeros at init) are random."""
    import torch
    import transformers as tf

    model = tf.Lfm2MoeForCausalLM(cfg)
    g = torch.Generator().manual_seed(3)
    for layer in model.model.layers:
        bias = getattr(layer.feed_forward, "expert_bias", None)
        if bias is not None:
            bias.copy_(0.3 * torch.randn(bias.shape, generator=g))
    return model


def _wrapper(text_config):
    import transformers as tf

    return (tf.Qwen3_5ForConditionalGeneration, tf.Qwen3_5Config(
        text_config=text_config.to_dict(),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=16, temporal_patch_size=2, spatial_merge_size=2),
        image_token_id=300, video_token_id=301, vision_start_token_id=302, vision_end_token_id=303))


CASES = ["qwen3_5_text", "qwen3_5_text_wide", "qwen3_5_moe_text", "qwen3_5", "qwen3_next", "lfm2", "lfm2_untied",
         "lfm2_moe", "granite_hybrid", "granite_hybrid_dense", "nemotron_h", "nemotron_h_tied", "nemotron_h_moe",
         "nemotron_h_moe_groups", "mamba2", "mamba", "falcon_mamba", "falcon_h1", "falcon_h1_norm",
         "falcon_h1_norm_first", "falcon_h1_tied", "jamba", "bamba"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return reference_cache(tmp_path_factory, _cases, PROMPT, N_GREEDY)


@pytest.mark.parametrize("case", CASES)
def test_hybrid_logits(case, isa, built):
    path, ref, _ = built(case)
    model = edgeformer.load(path, threads=2, max_context=64)
    assert model.spec.recurrent()
    assert_logits_close(model.logits(PROMPT), ref)


@pytest.mark.parametrize("case", CASES)
def test_hybrid_greedy(case, isa, built):
    path, _, ref_tokens = built(case)
    model = edgeformer.load(path, threads=2, max_context=64)
    assert ef_greedy(model, PROMPT, N_GREEDY) == ref_tokens


def test_recurrent_state_over_prompt_pieces_and_turns(built, monkeypatch):
    """A prompt prefilled in pieces carries the state from piece to piece; a second prompt that continues all
    cached tokens reuses the state, one that shares only part of them starts over: each as transformers
    computes it from scratch. The cache refuses to drop part of a recurrent state."""
    from edgeformer import model as model_mod

    path, ref, ref_tokens = built("qwen3_5_text")
    model = edgeformer.load(path, threads=2, max_context=64)
    monkeypatch.setattr(model_mod, "PREFILL_CHUNK", 8)
    assert_logits_close(model.logits(PROMPT), ref)
    first = model.generate(PROMPT[:20], max_new_tokens=4, temperature=0, ignore_eos=True)
    assert model._cached == PROMPT[:20] + first.token_ids[:-1]
    # the full prompt does not continue the cached tokens (they end in generated ones): started over, still exact
    assert ef_greedy(model, PROMPT, N_GREEDY) == ref_tokens
    # a prompt continuing every cached token runs only its new ones
    cached = list(model._cached)
    longer = cached + [5, 6]
    assert model._reset_to(longer) == len(cached)  # (kept whole)
    assert model._reset_to(longer[:5] + [7, 8]) == 0 and model._cached == []  # (part of it: dropped)
    model.generate(cached, max_new_tokens=1, temperature=0, ignore_eos=True)  # (refill: the same cached tokens)
    assert model._cached[:len(cached)] == cached
    cached = list(model._cached)
    longer = cached + [5, 6]
    assert model._reset_to(longer) == len(cached)
    again = model.generate(longer, max_new_tokens=3, temperature=0, ignore_eos=True)
    fresh = edgeformer.load(path, threads=2, max_context=64).generate(longer, max_new_tokens=3, temperature=0,
                                                                      ignore_eos=True)
    assert again.token_ids == fresh.token_ids
    core = model._core
    core.reset()
    core.prefill(np.asarray(PROMPT[:10], np.int32))
    with pytest.raises(ValueError, match="recurrent"):
        core.truncate(5)
    core.truncate(10)  # (all of it, or none)
    core.truncate(0)


def test_recurrent_batches_and_batcher(built):
    """Several sequences decoded as one batch each keep their own state; a Batcher (whose prefix cache a
    recurrent model does not use) and prompt lookup (off for it) give the tokens of one prompt alone."""
    path, _, ref_tokens = built("qwen3_5_text")
    model = edgeformer.load(path, threads=2, max_context=64)
    prompts = [PROMPT, PROMPT[:9], prompt_ids(14, seed=7)]
    alone = [model.generate(p, max_new_tokens=10, temperature=0, ignore_eos=True).token_ids for p in prompts]
    assert alone[0] == ref_tokens[:10]
    batch = model.generate(prompts, max_new_tokens=10, temperature=0, ignore_eos=True)
    assert [r.token_ids for r in batch] == alone
    with edgeformer.Batcher(model, max_batch=2, prefix_cache=4) as b:
        assert b.prefix_cache == 0
        reqs = [b.submit(p, max_new_tokens=10, temperature=0, ignore_eos=True) for p in prompts + prompts[:1]]
        got = [r.wait().token_ids for r in reqs]
    assert got == alone + alone[:1]
    looked = model.generate(PROMPT, max_new_tokens=10, temperature=0, ignore_eos=True, prompt_lookup=4)
    assert looked.token_ids == ref_tokens[:10]


# GGUF as llama.cpp's converter writes Qwen3.5 (qwen35, qwen35moe): the value heads in its tiled order, attn_q
# holding each head's query and gate, ssm_a the decay rates; the image-and-text checkpoint as its language model;
# Qwen3-Next (qwen3next), LFM2 (lfm2: the convolution layers those without key/value heads) and Granite 4.0-H
# (granitehybrid: likewise its Mamba2 layers)
GGUF_CASES = {"qwen3_5_text_eq": "qwen35", "qwen3_5_moe_text_eq": "qwen35moe", "qwen3_5_eq": "qwen35",
              "qwen3_next_eq": "qwen3next", "lfm2": "lfm2", "lfm2_untied": "lfm2", "lfm2_moe_eq": "lfm2moe",
              "granite_hybrid": "granitehybrid", "granite_hybrid_rope": "granitehybrid", "nemotron_h": "nemotron_h",
              "nemotron_h_moe": "nemotron_h_moe", "mamba2": "mamba2", "mamba": "mamba", "falcon_mamba": "mamba",
              "falcon_h1": "falcon-h1", "falcon_h1_norm": "falcon-h1", "jamba": "jamba"}
# tensors each writes as llama.cpp's converter does
GGUF_NAMES = {"qwen35": {"blk.0.ssm_a", "blk.0.ssm_dt.bias", "blk.0.attn_qkv.weight", "blk.0.attn_gate.weight",
                         "blk.0.ssm_beta.weight", "blk.3.attn_q.weight"},
              "qwen3next": {"blk.0.ssm_a", "blk.0.attn_qkv.weight", "blk.0.attn_gate.weight", "blk.0.ssm_ba.weight"},
              "lfm2": {"token_embd_norm.weight", "blk.0.shortconv.conv.weight", "blk.0.shortconv.in_proj.weight",
                       "blk.0.shortconv.out_proj.weight"}}
GGUF_NAMES["qwen35moe"] = GGUF_NAMES["qwen35"]
GGUF_NAMES["granitehybrid"] = {"blk.0.ssm_in.weight", "blk.0.ssm_a", "blk.0.ssm_d", "blk.0.ssm_conv1d.bias",
                               "blk.0.ssm_norm.weight", "blk.2.attn_q.weight"}
GGUF_NAMES["mamba2"] = {"blk.0.attn_norm.weight", "blk.0.ssm_in.weight", "blk.0.ssm_a", "blk.0.ssm_d",
                        "blk.0.ssm_conv1d.bias", "blk.0.ssm_norm.weight", "output_norm.weight", "output.weight"}
GGUF_NAMES["nemotron_h"] = GGUF_NAMES["mamba2"] | {"blk.1.attn_norm.weight", "blk.1.ffn_up.weight",
                                                   "blk.1.ffn_down.weight", "blk.2.attn_q.weight"}
GGUF_NAMES["nemotron_h_moe"] = GGUF_NAMES["mamba2"] | {"blk.1.ffn_up_exps.weight", "blk.1.ffn_down_exps.weight",
                                                       "blk.1.ffn_gate_inp.weight", "blk.1.exp_probs_b.bias",
                                                       "blk.1.ffn_up_shexp.weight", "blk.2.attn_q.weight"}
GGUF_NAMES["mamba"] = {"blk.0.attn_norm.weight", "blk.0.ssm_in.weight", "blk.0.ssm_x.weight", "blk.0.ssm_dt.weight",
                       "blk.0.ssm_dt.bias", "blk.0.ssm_a", "blk.0.ssm_d", "blk.0.ssm_conv1d.bias", "output_norm.weight"}
GGUF_NAMES["falcon-h1"] = {"blk.0.ffn_norm", "blk.0.attn_norm.weight", "blk.0.ssm_in.weight", "blk.0.ssm_a",
                           "blk.0.attn_q.weight", "blk.0.ffn_gate.weight", "output.weight", "output_norm.weight"}
GGUF_NAMES["jamba"] = {"blk.0.ssm_dt_norm.weight", "blk.0.ssm_b_norm.weight", "blk.0.ssm_x.weight",
                       "blk.0.ffn_gate.weight", "blk.1.ffn_gate_inp.weight", "blk.1.ffn_gate_exps.weight",
                       "blk.2.attn_q.weight", "blk.2.ffn_norm.weight", "output_norm.weight"}
GGUF_NAMES["lfm2moe"] = GGUF_NAMES["lfm2"] | {"blk.1.exp_probs_b.bias", "blk.1.ffn_gate_exps.weight",
                                              "blk.1.ffn_gate_inp.weight", "blk.0.ffn_gate.weight"}


@pytest.mark.parametrize("case", list(GGUF_CASES))
def test_hybrid_gguf_roundtrip(case, built, tmp_path):
    """Written as f32 and read back: transformers' logits and greedy tokens; quantized at load and written, the
    file holds exactly the model's tensors (logits bit-identical to the checkpoint loaded quantized)."""
    import gguf

    path, ref, ref_tokens = built(case)
    out = str(tmp_path / "m.gguf")
    edgeformer.quantize(path, out, "f32")
    r = gguf.GGUFReader(out)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    assert arch == GGUF_CASES[case]
    assert GGUF_NAMES[arch] <= {t.name for t in r.tensors}
    model = edgeformer.load(out, threads=2, max_context=64)
    assert model.spec.lin_v_tiled == (arch in ("qwen35", "qwen35moe"))  # (read in llama.cpp's order)
    assert_logits_close(model.logits(PROMPT), ref)
    assert ef_greedy(model, PROMPT, N_GREEDY) == ref_tokens
    q = str(tmp_path / "q.gguf")
    edgeformer.quantize(path, q, "q8_0")
    direct = edgeformer.load(path, dtype="q8_0", threads=2, max_context=64)
    np.testing.assert_array_equal(edgeformer.load(q, threads=2, max_context=64).logits(PROMPT),
                                  direct.logits(PROMPT))


@pytest.mark.parametrize("case", ["qwen3_5_text", "qwen3_next"])
def test_hybrid_gguf_refuses_what_llama_cpp_reads_otherwise(case, built, tmp_path):
    """llama.cpp sizes the states by one head size: a model whose key and value heads differ is refused by name,
    and no file is left."""
    path, _, _ = built(case)
    with pytest.raises(ValueError, match="linear_value_head_dim"):
        edgeformer.quantize(path, str(tmp_path / "m.gguf"), "f32")
    assert not (tmp_path / "m.gguf").exists()


@pytest.mark.parametrize("case,match", [("falcon_h1_norm_first", "mamba_norm_before_gate"),
                                        ("falcon_h1_tied", "lm_head_multiplier"), ("bamba", "'bamba'")])
def test_falcon_h1_gguf_refuses_what_llama_cpp_computes_otherwise(case, match, built, tmp_path):
    """llama.cpp's falcon-h1 normalizes the mixer's output after its gate and has no logit scale (a tied head whose
    multiplier differs from the embeddings' needs one); its granitehybrid rotates Bamba's whole heads, not half of
    each: refused by name, no file left."""
    path, _, _ = built(case)
    with pytest.raises(ValueError, match=match):
        edgeformer.quantize(path, str(tmp_path / "m.gguf"), "f32")
    assert not (tmp_path / "m.gguf").exists()


@pytest.mark.parametrize("case,field,value,match", [
    ("qwen3_next_eq", "mlp_only_layers", [1], "mlp_only_layers"),
    ("qwen3_next_eq", "decoder_sparse_step", 2, "mlp_only_layers"),
    ("qwen3_next_eq", "norm_topk_prob", False, "norm_topk_prob"),
    ("lfm2_moe_eq", "routed_scaling_factor", 1.5, "routed_scaling_factor"),
    ("lfm2_moe_eq", "use_expert_bias", False, "use_expert_bias"),
    ("lfm2_moe_eq", "norm_topk_prob", False, "norm_topk_prob")])
def test_moe_hybrid_gguf_metadata_refuses_what_llama_cpp_reads_otherwise(case, field, value, match, built):
    """llama.cpp reads every Qwen3-Next layer as sparse and renormalizes the chosen experts' weights; its LFM2-MoE
    has the expert bias, renormalizes and does not scale."""
    import json

    from edgeformer.gguf_config import gguf_metadata_from_config

    path, _, _ = built(case)
    with open(path + "/config.json") as f:
        cfg = json.load(f)
    assert gguf_metadata_from_config(cfg, "config.json")["general.architecture"] == GGUF_CASES[case]
    with pytest.raises(ValueError, match=match):
        gguf_metadata_from_config({**cfg, field: value}, "config.json")


def _rewrite_gguf(src: str, dst: str, tensors) -> None:
    """A copy of GGUF file src with its metadata and the tensors tensors({name: array}) returns."""
    import gguf

    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, bytes(r.fields["general.architecture"].parts[-1]).decode())
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        v = f.contents()
        if isinstance(v, list):
            w.add_array(k, v)
        elif isinstance(v, str):
            w.add_string(k, v)
        elif isinstance(v, bool):
            w.add_bool(k, v)
        elif isinstance(v, float):
            w.add_float32(k, v)
        else:
            w.add_uint32(k, v)
    for name, a in tensors({t.name: np.array(t.data) for t in r.tensors}).items():
        w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_hybrid_gguf_bad_query_rows_named(built, tmp_path):
    """A qwen35 file whose attn_q lacks the gate's rows fails with the tensor's name, not a crash."""
    path, _, _ = built("qwen3_5_text_eq")
    good = str(tmp_path / "m.gguf")
    edgeformer.quantize(path, good, "f32")

    def halve(t):
        t["blk.3.attn_q.weight"] = t["blk.3.attn_q.weight"][:t["blk.3.attn_q.weight"].shape[0] // 2]
        return t

    _rewrite_gguf(good, str(tmp_path / "bad.gguf"), halve)
    with pytest.raises(ValueError, match="blk.3.attn_q.weight"):
        edgeformer.load(str(tmp_path / "bad.gguf"), threads=2, max_context=64)


def test_qwen3_next_gguf_of_an_older_converter(built, tmp_path):
    """Qwen3-Next files of llama.cpp's first converter hold in_proj_qkvz as it is (ssm_in), not split into
    attn_qkv and attn_gate: read alike."""
    from safetensors.numpy import load_file

    path, ref, _ = built("qwen3_next_eq")
    new = str(tmp_path / "m.gguf")
    edgeformer.quantize(path, new, "f32")
    hf = load_file(path + "/model.safetensors")

    def fuse(t):
        for i in range(4):
            if f"blk.{i}.attn_qkv.weight" in t:
                del t[f"blk.{i}.attn_qkv.weight"], t[f"blk.{i}.attn_gate.weight"]
                t[f"blk.{i}.ssm_in.weight"] = hf[f"model.layers.{i}.linear_attn.in_proj_qkvz.weight"]
        return t

    _rewrite_gguf(new, str(tmp_path / "old.gguf"), fuse)
    assert_logits_close(edgeformer.load(str(tmp_path / "old.gguf"), threads=2, max_context=64).logits(PROMPT), ref)


def test_nemotron_h_as_nvidia_publishes_it(built, tmp_path):
    """NVIDIA's Nemotron-H checkpoints name the model backbone. (transformers 5 saves model.) and describe the
    layers by hybrid_override_pattern's letters, with the older field names: read alike; a letter outside M, *, -,
    E is refused by name, and so are an expert layer whose tensors the checkpoint lacks and a mixer activation
    other than SiLU."""
    import json
    import shutil

    from safetensors.numpy import load_file, save_file

    path, ref, _ = built("nemotron_h")
    with open(path + "/config.json") as f:
        cfg = json.load(f)
    old = {k: v for k, v in cfg.items() if k not in ("layers_block_type", "n_groups", "head_dim", "conv_kernel")}
    old.update(hybrid_override_pattern="M-*-M-", mamba_n_groups=cfg["n_groups"], attention_head_dim=cfg["head_dim"],
               mamba_d_conv=cfg["conv_kernel"], num_hidden_layers=6)
    dst = tmp_path / "nvidia"
    shutil.copytree(path, dst)
    (dst / "config.json").write_text(json.dumps(old))
    tensors = load_file(path + "/model.safetensors")
    save_file({("backbone." + k[6:] if k.startswith("model.") else k): v for k, v in tensors.items()},
              str(dst / "model.safetensors"))
    assert_logits_close(edgeformer.load(str(dst), threads=2, max_context=64).logits(PROMPT), ref)
    for change, match in (({"hybrid_override_pattern": "M-*-Mx"}, "hybrid_override_pattern"),
                          ({"hybrid_override_pattern": "M-*EM-"}, "backbone.layers.3.mixer.gate.weight"),
                          ({"mamba_hidden_act": "gelu"}, "mamba_hidden_act")):
        (dst / "config.json").write_text(json.dumps({**old, **change}))
        with pytest.raises(ValueError, match=match):
            edgeformer.load(str(dst), threads=2, max_context=64)


def test_nemotron_h_moe_stacked_experts(built, tmp_path):
    """Experts stacked per layer (up_proj [experts, width, hidden], down_proj), as transformers 5 can hold them, are
    read as NVIDIA's one tensor per expert are."""
    import re
    import shutil

    import numpy as np
    from safetensors.numpy import load_file, save_file

    path, ref, _ = built("nemotron_h_moe")
    tensors = load_file(path + "/model.safetensors")
    stacked, parts = {}, {}
    for k, v in tensors.items():
        m = re.fullmatch(r"(.*\.mixer\.experts\.)(\d+)\.(up|down)_proj\.weight", k)
        if m:
            parts.setdefault(f"{m.group(1)}{m.group(3)}_proj", {})[int(m.group(2))] = v
        else:
            stacked[k] = v
    assert parts
    for k, by_expert in parts.items():
        stacked[k] = np.stack([by_expert[e] for e in sorted(by_expert)])
    dst = tmp_path / "stacked"
    shutil.copytree(path, dst)
    save_file(stacked, str(dst / "model.safetensors"))
    assert_logits_close(edgeformer.load(str(dst), threads=2, max_context=64).logits(PROMPT), ref)


def test_repr_names_recurrent_layers(built):
    """A model's repr counts its recurrent layers, and names attention heads only where it has attention."""
    path, _, _ = built("mamba2")
    r = repr(edgeformer.load(path, threads=2, max_context=64))
    assert "recurrent layers=3" in r and "heads=" not in r, r
    path, _, _ = built("qwen3_5_text")
    r = repr(edgeformer.load(path, threads=2, max_context=64))
    assert "recurrent layers=3" in r and "heads=4/2" in r, r


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_scaled_weights_keep_their_float_type(dtype, tmp_path):
    """Derived.scale (Falcon-H1's multipliers) multiplies a bf16 or f16 checkpoint tensor by a constant or per row
    and rounds back to that type as torch does (round to nearest even), keeping the checkpoint's memory."""
    import torch

    from safetensors.torch import save_file

    from edgeformer import _core
    from edgeformer.archs import Derived

    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 32, generator=g).to(getattr(torch, dtype))
    path = str(tmp_path / "w.safetensors")
    save_file({"w": w}, path)
    checkpoint = _core.TensorMap.open_safetensors([path])
    rows = [0.5, 1.5, 3.0, 0.7, 2.0, 1.1]
    for scale, want in ((1.7, w.float() * 1.7), (rows, w.float() * torch.tensor(rows)[:, None])):
        a, got_dtype, _ = Derived("w", scale=scale).build(checkpoint)
        assert str(got_dtype).split(".")[1] == {"bfloat16": "bf16", "float16": "f16"}[dtype]
        expect = want.to(getattr(torch, dtype))
        expect = expect.view(torch.int16).numpy().view(np.uint16) if dtype == "bfloat16" else expect.numpy()
        np.testing.assert_array_equal(a, expect)
