"""Batched decoding: several sequences' decode steps as one forward over forks of one model (shared weights, a
KV cache each). Model.fork(), the core's decode_batch(), and generate() with a list of prompts.

The reference is the model's own single-sequence path (itself checked against transformers in
test_families.py): each row of a batch step must give the logits that sequence's own one-token step gives, at
every family's positions (rotary with dynamic scaling, learned, ALiBi, sliding window), on both KV cache
layouts (panels where the head size is a multiple of 16, rows elsewhere), f16 and f32 caches, quantized
weights, under every ISA.
"""

from __future__ import annotations

import numpy as np
import pytest

import edgeformer
from edgeformer import _core

from conftest import make_llama, make_model, prompt_ids
from test_families import _decoders

LENGTHS = [5, 17, 1, 33]  # prompts of different lengths: every row of a step at its own position


def _build(case: str, path: str, **load):
    if case in _decoders():
        cls, cfg = _decoders()[case]
        make_model(path, cls, cfg)
    else:
        over = {
            "llama": {},
            "llama_rows": {"head_dim": 24},  # the row cache
            "mistral_window": {"model_type": "mistral", "sliding_window": 6},
            "rope_dynamic": {"max_position_embeddings": 20, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}},
        }[case]
        make_llama(path, **over)
    return edgeformer.load(path, threads=2, max_context=64, **load)


def _batch_vs_single(model, steps: int = 6, tol: float = 1e-5):
    """Batch steps against the same sequences stepped one at a time (in forks of their own, with the same
    history: dynamic rotary scaling keeps each key's frequencies from the call that computed it)."""
    core = model._core
    forks = [core.fork() for _ in LENGTHS]
    alone = [core.fork() for _ in LENGTHS]
    prompts = [prompt_ids(n, seed=10 + i) for i, n in enumerate(LENGTHS)]
    for f, g, p in zip(forks, alone, prompts):
        if len(p) > 1:
            f.prefill(np.asarray(p[:-1], np.int32))
            g.prefill(np.asarray(p[:-1], np.int32))
    toks = [p[-1] for p in prompts]
    for step in range(steps):
        logits = _core.decode_batch(forks, np.asarray(toks, np.int32))
        assert logits.shape == (len(forks), model.spec.vocab_size)
        for i, g in enumerate(alone):
            ref = g.forward(np.asarray([toks[i]], np.int32), False)[0]
            err = np.abs(logits[i] - ref).max()
            assert err <= tol * max(1.0, np.abs(ref).max()), (step, i, err)
            assert forks[i].n_past == g.n_past == LENGTHS[i] + step
        toks = [int(np.argmax(row)) for row in logits]


@pytest.mark.parametrize("case", ["llama", "llama_rows", "mistral_window", "rope_dynamic", "gpt2", "opt_post_proj",
                                  "bloom", "falcon_new", "codegen"])
def test_batch_rows_are_single_steps(case, tmp_path, isa):
    _batch_vs_single(_build(case, str(tmp_path)))


@pytest.mark.parametrize("load", [{"dtype": "q4_0"}, {"dtype": "q8_0"}, {"dtype": "int8"}, {"kv_dtype": "f16"},
                                  {"dtype": "f16"}, {"dtype": "bf16"}, {"kv_dtype": "bf16"}])
def test_batch_rows_are_single_steps_quantized(load, tmp_path, isa):
    # a batch step multiplies several tokens: the kernels for T > 1 must keep the decode precision (q8_0's two
    # activation levels) that one-token steps have
    model = _build("llama", str(tmp_path), **load)
    _batch_vs_single(model, tol=1e-4 if "dtype" in load else 1e-5)


def test_generate_list_of_prompts_matches_one_by_one(tmp_path):
    model = _build("llama", str(tmp_path))
    prompts = [prompt_ids(n, seed=20 + i) for i, n in enumerate([9, 3, 30, 14])]
    batch = model.generate(prompts, max_new_tokens=12, temperature=0, ignore_eos=True)
    assert isinstance(batch, list) and len(batch) == len(prompts)
    for p, r in zip(prompts, batch):
        alone = model.generate(p, max_new_tokens=12, temperature=0, ignore_eos=True)
        assert r.token_ids == alone.token_ids and r.text == alone.text and r.finish_reason == "length"
        assert r.prompt_tokens == len(p) and r.decode_tokens_per_s > 0
    rect = model.generate(np.asarray([prompts[0][:3], prompts[1][:3]]), max_new_tokens=4, temperature=0)
    assert [r.token_ids for r in rect] == [model.generate(p[:3], max_new_tokens=4, temperature=0).token_ids
                                           for p in prompts[:2]]  # a 2-D array: one prompt per row
    sampled = model.generate(prompts, max_new_tokens=10, temperature=0.9, top_k=40, seed=4)
    for p, r in zip(prompts, sampled):  # with a seed: each prompt's own draws, as alone
        assert r.token_ids == model.generate(p, max_new_tokens=10, temperature=0.9, top_k=40, seed=4).token_ids
    # without a seed the prompts draw independently: the same prompt twice does not repeat itself (24 tokens
    # at temperature 1.5 over a 320-token vocabulary: 0 identical pairs in 30 tries when written)
    twice = model.generate([prompts[0]] * 2, max_new_tokens=24, temperature=1.5)
    assert len(twice) == 2 and twice[0].token_ids != twice[1].token_ids


def test_generate_batch_sequences_end_on_their_own(tmp_path):
    """Each sequence stops at its own eos, stop string, max_new_tokens or context end; the rest go on."""
    model = _build("llama", str(tmp_path))
    prompts = [prompt_ids(n, seed=30 + i) for i, n in enumerate([4, 50, 10])]
    alone = [model.generate(p, max_new_tokens=20, temperature=0, ignore_eos=True) for p in prompts]
    eos = alone[0].token_ids[3]  # sequence 0 meets it after 3 tokens (if not earlier)
    model.eos_token_ids = [eos]
    ref = [model.generate(p, max_new_tokens=20, temperature=0) for p in prompts]
    out = model.generate(prompts, max_new_tokens=20, temperature=0)
    for a, b in zip(ref, out):
        assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason
    assert out[0].finish_reason == "eos" and len(out[0].token_ids) <= 3
    # max_context=64: the prompt's 50 positions and 14 fed-back tokens, and the last token sampled from them
    assert out[1].finish_reason == "context" and len(out[1].token_ids) == 64 - 50 + 1
    text = alone[2].text
    if len(text) > 4:
        model.eos_token_ids = []
        stop = text[2:4]
        got = model.generate(prompts, max_new_tokens=20, temperature=0, stop=stop)
        want = model.generate(prompts[2], max_new_tokens=20, temperature=0, stop=stop)
        assert got[2].text == want.text and got[2].finish_reason == want.finish_reason == "stop"


def test_generate_batch_stream(tmp_path):
    """stream=True with a list: (prompt index, piece) pairs as the steps make them, each sequence's pieces adding
    up to its text, a sequence's last piece as soon as it ends; .result is the list of results."""
    model = _build("llama", str(tmp_path))
    prompts = [prompt_ids(n, seed=30 + i) for i, n in enumerate([4, 50, 10])]
    eos = model.generate(prompts[0], max_new_tokens=20, temperature=0, ignore_eos=True).token_ids[3]
    model.eos_token_ids = [eos]  # sequence 0 ends within 3 tokens, 1 at the context's end, 2 after 20
    want = model.generate(prompts, max_new_tokens=20, temperature=0)
    stream = model.generate(prompts, max_new_tokens=20, temperature=0, stream=True)
    events = list(stream)
    assert all(isinstance(i, int) and isinstance(p, str) and p for i, p in events)
    for i, w in enumerate(want):
        assert "".join(p for j, p in events if j == i) == w.text
    assert [(r.token_ids, r.text, r.finish_reason) for r in stream.result] == \
        [(r.token_ids, r.text, r.finish_reason) for r in want]
    last0 = max((k for k, (i, _) in enumerate(events) if i == 0), default=None)
    last2 = max(k for k, (i, _) in enumerate(events) if i == 2)
    assert last0 is None or last0 < last2  # sequence 0's text came out while sequence 2 still ran
    # a stream abandoned half way lets go of the model (the generator's close releases its lock)
    partial = model.generate(prompts, max_new_tokens=20, temperature=0, stream=True)
    next(partial)
    partial.close()
    assert model.generate(prompts[2], max_new_tokens=3, temperature=0).token_ids == want[2].token_ids[:3]


def test_batch_argument_errors(tmp_path):
    model = _build("llama", str(tmp_path))
    with pytest.raises(ValueError, match="prompt 1: empty"):
        model.generate([[1, 2], []], max_new_tokens=2)
    with pytest.raises(ValueError, match="prompt 0: token id 999"):
        model.generate([[999], [3]], max_new_tokens=2)
    core = model._core
    a, b = core.fork(), core.fork()
    with pytest.raises(ValueError, match="same model"):
        _core.decode_batch([a, a], np.asarray([1, 2], np.int32))
    with pytest.raises(ValueError, match="token id 320 of sequence 1 is outside the vocabulary"):
        _core.decode_batch([a, b], np.asarray([1, 320], np.int32))
    with pytest.raises(ValueError, match="one token per model"):
        _core.decode_batch([a, b], np.asarray([1], np.int32))
    other = edgeformer.load(str(tmp_path), threads=2, max_context=64)._core
    with pytest.raises(ValueError, match="sequence 1 is not a fork"):
        _core.decode_batch([a, other], np.asarray([1, 2], np.int32))
    s = _core.Sampler(_core.SamplerOptions())
    with pytest.raises(ValueError, match="share a sampler"):
        _core.decode_batch([a, b], np.asarray([1, 2], np.int32), [s, s], [np.zeros(0, np.int32)] * 2)
    a.prefill(np.asarray(prompt_ids(63), np.int32))
    _core.decode_batch([a, b], np.asarray([1, 2], np.int32))  # a's last position: a batch of 2 still fits
    with pytest.raises(ValueError, match="sequence 0 of the batch.*max_context=64"):
        _core.decode_batch([a, b], np.asarray([1, 2], np.int32))
    assert a.n_past == 64 and b.n_past == 1  # nothing ran


def test_forks_share_the_weights(tmp_path):
    model = _build("llama", str(tmp_path), dtype="q4_0")
    core = model._core
    f = core.fork()
    w = dict(core.weights())
    fw = dict(f.weights())
    for name in ("layers.0.attn_norm.weight", "norm.weight"):  # f32 vectors: numpy() views the memory itself
        assert fw[name].numpy().__array_interface__["data"][0] == w[name].numpy().__array_interface__["data"][0]
    assert np.array_equal(fw["layers.0.attn.q.weight"].numpy(), w["layers.0.attn.q.weight"].numpy())
    assert f.n_past == 0 and f.max_context == core.max_context and f.kv_dtype == core.kv_dtype


def test_batch_needs_a_causal_decoder(tmp_path):
    import transformers as tf

    cfg = tf.BertConfig(vocab_size=320, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64)
    make_model(str(tmp_path), tf.BertModel, cfg)
    core = edgeformer.load(str(tmp_path), threads=2)._core
    with pytest.raises(ValueError, match="causal decoders"):
        _core.decode_batch([core.fork(), core.fork()], np.asarray([1, 2], np.int32))
