"""Hybrid decoders against transformers on tiny random checkpoints, under every ISA: Qwen3.5 (Gated DeltaNet
layers beside gated attention layers), dense and mixture-of-experts, text-only and as the image-and-text
checkpoint. Logits within
1e-4 + 2e-3 * max|logit|, greedy tokens identical; prompts in pieces, batches and the cache's reuse rules of a
recurrent state."""

from __future__ import annotations

import numpy as np
import pytest

import edgeformer

from conftest import assert_logits_close, prompt_ids, reference_cache

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
        "qwen3_5": (tf.Qwen3_5ForConditionalGeneration, tf.Qwen3_5Config(
            text_config=_text_config().to_dict(),
            vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                               patch_size=16, temporal_patch_size=2, spatial_merge_size=2),
            image_token_id=300, video_token_id=301, vision_start_token_id=302, vision_end_token_id=303)),
    }


CASES = ["qwen3_5_text", "qwen3_5_text_wide", "qwen3_5_moe_text", "qwen3_5"]


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
    out = model.generate(PROMPT, max_new_tokens=N_GREEDY, temperature=0, ignore_eos=True)
    assert out.token_ids == ref_tokens


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
    assert model.generate(PROMPT, max_new_tokens=N_GREEDY, temperature=0, ignore_eos=True).token_ids == ref_tokens
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
