"""The bf16 KV cache (kv_dtype="bf16"): keys and values rounded to bf16, the attention products in bf16 where the
ISA multiplies bf16 panels (avx512bf16, amx: the cache in quant.h's bf16 panels; the tile unit from 32 keys) and
on rows elsewhere. Against transformers within bf16's rounding, under every ISA; a prompt's logits equal to the
same tokens fed one decode step at a time; forks copy it; prompts longer than a tile of keys, windows and odd
lengths (value products over whole pairs of positions, padded with zero weights)."""

from __future__ import annotations

import numpy as np
import pytest

import edgeformer

from conftest import hf_logits, make_llama, prompt_ids

PROMPT = prompt_ids(75)  # (more than two tiles of 32 keys, an odd count)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = {}
    for case, over in {"panels": {"head_dim": 32}, "rows": {"head_dim": 24},
                       "window": {"head_dim": 32, "model_type": "mistral", "sliding_window": 37}}.items():
        path = str(tmp_path_factory.mktemp(case))
        out[case] = (path, hf_logits(make_llama(path, max_position_embeddings=128, **over), PROMPT))
    return out


@pytest.mark.parametrize("case", ["panels", "rows", "window"])
def test_bf16_cache_against_transformers(case, isa, models):
    path, ref = models[case]
    m = edgeformer.load(path, threads=2, max_context=96, kv_dtype="bf16")
    assert m._core.kv_dtype == "bf16"
    got = m.logits(PROMPT)
    scale = np.abs(ref).max()
    err = np.abs(got - ref).max() / scale
    assert err < 1e-2, err  # (bf16 keys, values, queries and weights: 8 bits of mantissa)
    f16 = edgeformer.load(path, threads=2, max_context=96, kv_dtype="f16").logits(PROMPT)
    assert np.abs(f16 - ref).max() / scale < err  # (and it is the coarser cache: the test sees its rounding)
    assert (got.argmax(1) == ref.argmax(1)).mean() > 0.9


@pytest.mark.parametrize("case", ["panels", "window"])
def test_bf16_cache_decode_steps_match_the_prompt(case, isa, models):
    """Steps of one token read the cache the prompt wrote (pairs of positions split across calls, a partner
    position not written yet) and give the prompt's own logits."""
    path, _ = models[case]
    m = edgeformer.load(path, threads=2, max_context=96, kv_dtype="bf16")
    whole = m._core.forward(np.asarray(PROMPT, np.int32), True)
    m._core.reset()
    m._core.forward(np.asarray(PROMPT[:40], np.int32), False)
    for i in range(40, len(PROMPT)):
        step = m._core.forward(np.asarray([PROMPT[i]], np.int32), True)[0]
        assert np.abs(step - whole[i]).max() <= 2e-3 * max(1.0, np.abs(whole[i]).max()), i
    fork = m._core.fork()  # (a fork given the cache's first 41 positions, an odd count: the same next step)
    fork.copy_cache_from(m._core, 41)
    m._core.truncate(41)
    nxt = np.asarray([PROMPT[3], PROMPT[5]], np.int32)
    np.testing.assert_array_equal(fork.forward(nxt, True), m._core.forward(nxt, True))


def test_bf16_cache_argument_errors(models):
    path, _ = models["panels"]
    with pytest.raises(ValueError, match="'kv_dtype' must be None, 'f16', 'bf16' or 'f32'"):
        edgeformer.load(path, kv_dtype="f8")


def test_default_cache_type_follows_the_matrices_and_the_isa(isa, models):
    """kv_dtype=None: f32 beside f32 matrices, bf16 beside bf16 and block-quantized matrices where the tile unit
    runs their prompts in bf16 (amx), f16 otherwise (int8's prompts stay 8-bit products); a model loaded under
    amx keeps its bf16 cache when the ISA changes after the load."""
    path, _ = models["panels"]
    tiles = "bf16" if isa == "amx" else "f16"
    want = {"f32": "f32", "f16": "f16", "bf16": tiles, "q8_0": tiles, "int8": "f16"}
    for dtype, kv in want.items():
        assert edgeformer.load(path, dtype=dtype, max_context=96)._core.kv_dtype == kv, dtype
    if isa != "amx":
        return
    m = edgeformer.load(path, dtype="bf16", threads=2, max_context=96)
    tiles = m.logits(PROMPT)
    explicit = edgeformer.load(path, dtype="bf16", threads=2, max_context=96, kv_dtype="bf16").logits(PROMPT)
    np.testing.assert_array_equal(tiles, explicit)
    f16 = edgeformer.load(path, dtype="bf16", threads=2, max_context=96, kv_dtype="f16").logits(PROMPT)
    assert 0 < np.abs(tiles - f16).max() < 1e-2 * np.abs(f16).max()  # (bf16 weights either way; the cache differs)
    edgeformer._core.set_isa("avx512")  # (no bf16 panel products: the generic kernels read the same cache)
    np.testing.assert_allclose(m.logits(PROMPT), tiles, atol=2e-3 * np.abs(tiles).max())
