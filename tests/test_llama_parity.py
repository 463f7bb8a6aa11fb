"""Llama and Mistral against transformers on tiny random checkpoints, under every ISA."""

from __future__ import annotations

import numpy as np
import pytest

import edgeformer

from conftest import assert_logits_close, ef_greedy, hf_greedy, hf_logits, make_llama, prompt_ids

# name -> (stored dtype, config overrides)
CASES = {
    "gqa": ("float32", {}),
    "mha": ("float32", {"num_key_value_heads": 4}),
    "mqa": ("float32", {"num_key_value_heads": 1}),
    "tied": ("float32", {"tie_word_embeddings": True}),
    "bias": ("float32", {"attention_bias": True, "mlp_bias": True}),
    "head_dim": ("float32", {"head_dim": 24}),
    "rope_linear": ("float32", {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
    # max_position 20 < prompt 32: the dynamic NTK base grows with the sequence
    "rope_dynamic": ("float32", {"max_position_embeddings": 20, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}),
    "rope_llama3": ("float32", {"rope_theta": 500000.0, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}}),
    "rope_yarn": ("float32", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                                               "original_max_position_embeddings": 32}}),
    "mistral_window": ("float32", {"model_type": "mistral", "sliding_window": 8}),
    # head size 8, not a multiple of the 16-lane panels: prompt attention keeps its row tiles
    "head_dim_8": ("float32", {"num_attention_heads": 8, "num_key_value_heads": 4}),
    "f16": ("float16", {}),
    "bf16": ("bfloat16", {}),
}
PROMPT = prompt_ids(32)
N_GREEDY = 16


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Each case built once: its directory and the transformers reference outputs."""
    cache = {}

    def get(name):
        if name not in cache:
            dtype, overrides = CASES[name]
            d = tmp_path_factory.mktemp(name)
            ref = make_llama(str(d), dtype=dtype, **dict(overrides))
            max_ctx = max(64, len(PROMPT) + N_GREEDY)
            cache[name] = (str(d), hf_logits(ref, PROMPT), hf_greedy(ref, PROMPT, N_GREEDY), max_ctx)
        return cache[name]

    return get


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(case, isa, checkpoints):
    path, ref_logits, _, max_ctx = checkpoints(case)
    model = edgeformer.load(path, threads=2, max_context=max_ctx)
    ours = model.logits(PROMPT)
    # f16: the same rounded weights, f32 compute on both sides. bf16: the weights meet activations rounded to bf16
    # (2^-9 relative, as PyTorch's bf16 and llama.cpp compute them), where transformers' f32 reference does not
    rel = {"float32": 2e-3, "float16": 3e-3, "bfloat16": 1e-2}[CASES[case][0]]
    assert_logits_close(ours, ref_logits, rel=rel)


@pytest.mark.parametrize("case", list(CASES))
def test_greedy_matches_transformers(case, isa, checkpoints):
    path, _, ref_tokens, max_ctx = checkpoints(case)
    model = edgeformer.load(path, threads=2, max_context=max_ctx)
    out = model.generate(PROMPT, max_new_tokens=N_GREEDY, temperature=0, ignore_eos=True)
    assert out.token_ids == ref_tokens
    assert len(out.token_ids) == N_GREEDY


def test_batch_logits_and_single_thread(checkpoints):
    path, ref_logits, _, max_ctx = checkpoints("gqa")
    model = edgeformer.load(path, threads=1, max_context=max_ctx)
    batch = np.array([PROMPT, PROMPT[::-1]])
    out = model.logits(batch)
    assert out.shape == (2, len(PROMPT), model.spec.vocab_size)
    assert_logits_close(out[0], ref_logits)
    assert_logits_close(out[1], model.logits(batch[1]))


def test_dtype_conversion_at_load(checkpoints):
    path, ref_logits, _, max_ctx = checkpoints("gqa")
    f16 = edgeformer.load(path, dtype="f16", threads=2, max_context=max_ctx).logits(PROMPT)
    bf16 = edgeformer.load(path, dtype="bf16", threads=2, max_context=max_ctx).logits(PROMPT)
    scale = float(np.abs(ref_logits).max())
    # rounding the weights moves the logits a little, and bf16 (8-bit mantissa) more than f16 (11-bit)
    e16, eb16 = (float(np.abs(x - ref_logits).max()) for x in (f16, bf16))
    assert 0 < e16 < 0.02 * scale
    assert e16 < eb16 < 0.1 * scale


def test_incremental_decode_equals_full_prompt(checkpoints):
    """Feeding the prompt in pieces through the KV cache gives the logits of one pass."""
    path, ref_logits, _, max_ctx = checkpoints("mistral_window")
    model = edgeformer.load(path, threads=2, max_context=max_ctx)
    core = model._core
    core.reset()
    parts = [core.forward(np.array(PROMPT[:5], np.int32), True)]
    for t in PROMPT[5:]:
        parts.append(core.forward(np.array([t], np.int32), True))
    assert_logits_close(np.concatenate(parts), ref_logits)


@pytest.mark.parametrize("case", ["gqa", "head_dim_8", "mistral_window", "f16"])
def test_f16_kv_cache(case, isa, checkpoints):
    """The f16 KV cache (the default beside narrower matrices): half the bytes, logits within the reference's
    tolerance, a prompt and its token-by-token replay reading the same rounded keys and values, greedy tokens
    as transformers'; on the panel layout (head size 16) and the row layout (head size 8)."""
    path, ref_logits, ref_tokens, max_ctx = checkpoints(case)
    auto = edgeformer.load(path, threads=2, max_context=max_ctx)
    assert auto._core.kv_dtype == ("f16" if case == "f16" else "f32")
    m16 = edgeformer.load(path, threads=2, max_context=max_ctx, kv_dtype="f16")
    m32 = edgeformer.load(path, threads=2, max_context=max_ctx, kv_dtype="f32")
    assert (m16._core.kv_dtype, m32._core.kv_dtype) == ("f16", "f32")
    a, b = m16.logits(PROMPT), m32.logits(PROMPT)
    assert not np.array_equal(a, b)  # the keys and values really are rounded
    assert_logits_close(a, ref_logits, rel=3e-3)
    assert float(((a - b) ** 2).sum() / (b**2).sum()) < 1e-5
    m16._core.reset()
    replay = np.concatenate([m16._core.forward(np.array([t], np.int32), True) for t in PROMPT])
    assert float(((replay - a) ** 2).sum() / (a**2).sum()) < 1e-9
    m16._core.reset()
    m16._cached = []
    assert ef_greedy(m16, PROMPT, N_GREEDY) == ref_tokens


def test_kv_dtype_argument(checkpoints):
    path, _, _, _ = checkpoints("gqa")
    with pytest.raises(ValueError, match="kv_dtype"):
        edgeformer.load(path, kv_dtype="q8_0")
