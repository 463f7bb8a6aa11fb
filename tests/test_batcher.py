"""Continuous batching (edgeformer.Batcher): requests submitted from any thread join a running batch between
steps and leave it when they end. The reference is each prompt generated alone (itself checked against
transformers in test_families.py): a request gets the same tokens and text whatever ran beside it."""

from __future__ import annotations

import threading
import time

import pytest

import edgeformer

from conftest import make_model, prompt_ids
from test_batch import _build


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return _build("llama", str(tmp_path_factory.mktemp("batcher")))


def _alone(model, p, **kw):
    return model.generate(p, **kw)


def test_requests_match_alone(model):
    """More requests than max_batch (the last waits its turn); greedy and seeded sampling; each request's
    streamed pieces add up to its text."""
    prompts = [prompt_ids(n, seed=40 + i) for i, n in enumerate([5, 20, 9, 1])]
    kws = [dict(max_new_tokens=16, temperature=0, ignore_eos=True),
           dict(max_new_tokens=12, temperature=0.8, top_k=40, seed=3, ignore_eos=True),
           dict(max_new_tokens=7, temperature=0, ignore_eos=True),
           dict(max_new_tokens=0)]
    with edgeformer.Batcher(model, max_batch=2) as b:
        reqs = [b.submit(p, **kw) for p, kw in zip(prompts, kws)]
        pieces = [list(r) for r in reqs]
    for p, kw, r, got in zip(prompts, kws, reqs, pieces):
        want = _alone(model, p, **kw)
        assert r.result.token_ids == want.token_ids and r.result.text == want.text
        assert r.result.finish_reason == want.finish_reason and "".join(got) == want.text
        assert r.result.prompt_tokens == len(p)
    assert reqs[3].result.token_ids == [] and reqs[3].result.finish_reason == "length"


def test_a_request_joins_a_running_batch(model):
    """A request submitted from another thread while a long one runs joins it between two steps: both get
    their own tokens, as alone."""
    long_p, short_p = prompt_ids(4, seed=50), prompt_ids(11, seed=51)
    long_kw = dict(max_new_tokens=50, temperature=0, ignore_eos=True)
    short_kw = dict(max_new_tokens=5, temperature=0, ignore_eos=True)
    got = {}
    with edgeformer.Batcher(model) as b:
        r1 = b.submit(long_p, **long_kw)
        first = next(r1)  # the long request is running

        def later():
            got["short"] = b.submit(short_p, **short_kw).wait()

        t = threading.Thread(target=later)
        t.start()
        t.join(60)
        rest = list(r1)
    assert not t.is_alive()
    assert got["short"].token_ids == _alone(model, short_p, **short_kw).token_ids
    want = _alone(model, long_p, **long_kw)
    assert r1.result.token_ids == want.token_ids and first + "".join(rest) == want.text


def _slow_steps(monkeypatch, seconds: float = 0.02):
    """The tiny model's steps take well under a millisecond: slowed, a cancel lands mid-generation."""
    from edgeformer import batching

    real = batching.step
    monkeypatch.setattr(batching, "step", lambda seqs: (time.sleep(seconds), real(seqs))[1])


def test_cancel_and_close(model, monkeypatch):
    p = prompt_ids(6, seed=60)
    want = _alone(model, p, max_new_tokens=40, temperature=0, ignore_eos=True)
    _slow_steps(monkeypatch)
    b = edgeformer.Batcher(model)
    r = b.submit(p, max_new_tokens=40, temperature=0, ignore_eos=True)
    next(r)
    r.cancel()
    res = r.wait()
    assert res.finish_reason == "cancelled" and res.token_ids == want.token_ids[: len(res.token_ids)]
    assert len(res.token_ids) < 40
    pending = b.submit(p, max_new_tokens=40, temperature=0, ignore_eos=True)
    b.close()  # ends what has not finished
    assert pending.wait().finish_reason in ("cancelled", "length")
    with pytest.raises(edgeformer.batching.BatcherClosed, match="closed"):
        b.submit(p, max_new_tokens=2)
    # the model is free again
    assert model.generate(p, max_new_tokens=3, temperature=0, ignore_eos=True).token_ids == want.token_ids[:3]


def test_a_failing_request_fails_alone(model, monkeypatch):
    """A request whose prefill fails raises in its own iteration; the one that joined with it, and the
    Batcher, go on."""
    from edgeformer import batching

    prefill = batching._Seq.prefill

    def failing(self, budget=None):
        if self.ids == [7, 7, 7]:
            raise ValueError("KV cache: no memory (simulated)")
        return prefill(self, budget)

    monkeypatch.setattr(batching._Seq, "prefill", failing)
    good_p = prompt_ids(5, seed=90)
    with edgeformer.Batcher(model) as b:
        bad, good = b.submit([7, 7, 7], max_new_tokens=4), b.submit(good_p, max_new_tokens=6, temperature=0)
        with pytest.raises(ValueError, match="simulated"):
            bad.wait()
        assert good.wait().token_ids == _alone(model, good_p, max_new_tokens=6, temperature=0).token_ids
        assert b.submit(good_p, max_new_tokens=2, temperature=0).wait().token_ids == good.result.token_ids[:2]


def test_an_interrupted_step_runs_again(model, monkeypatch):
    """A Ctrl-C meant for the main thread can interrupt the worker's step (the interrupt flag is the
    process's): the step runs again and the requests get their tokens, as alone."""
    from edgeformer import batching

    real, calls = batching.step, []

    def flaky(seqs):
        calls.append(len(seqs))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(seqs)

    monkeypatch.setattr(batching, "step", flaky)
    p = prompt_ids(9, seed=91)
    with edgeformer.Batcher(model) as b:
        r = b.submit(p, max_new_tokens=10, temperature=0, ignore_eos=True)
        assert r.wait().token_ids == _alone(model, p, max_new_tokens=10, temperature=0, ignore_eos=True).token_ids
    assert len(calls) > 3


def test_cancel_a_waiting_request_and_keep_its_text(model, monkeypatch):
    """A request still waiting for room ends at once when cancelled; a cancelled request's stream carries all
    of its result's text (the decoder's held-back tail included)."""
    _slow_steps(monkeypatch)
    p = prompt_ids(6, seed=92)
    with edgeformer.Batcher(model, max_batch=1) as b:
        running = b.submit(p, max_new_tokens=60, temperature=0, ignore_eos=True)
        queued = b.submit(p, max_new_tokens=60, temperature=0, ignore_eos=True)
        first = next(running)
        queued.cancel()
        res = queued.wait(timeout=10)
        assert res is not None and res.finish_reason == "cancelled" and res.token_ids == []
        assert running.result is None  # still going
        running.cancel()
        rest = list(running)
    assert running.result.finish_reason == "cancelled" and first + "".join(rest) == running.result.text


def test_a_dropped_batcher_lets_go(model):
    """A Batcher dropped without close(): its worker ends and the Batcher (its forks) can be collected."""
    import gc
    import weakref

    b = edgeformer.Batcher(model)
    p = prompt_ids(5, seed=93)
    assert b.submit(p, max_new_tokens=3, temperature=0).wait().token_ids == \
        _alone(model, p, max_new_tokens=3, temperature=0).token_ids
    ref, thread = weakref.ref(b), b._thread
    del b
    gc.collect()
    thread.join(10)
    assert not thread.is_alive() and ref() is None


def test_the_model_stays_usable_beside_a_batcher(model):
    """Model calls from other threads wait for a step, and get their own results."""
    p = prompt_ids(8, seed=70)
    want = _alone(model, p, max_new_tokens=10, temperature=0, ignore_eos=True)
    with edgeformer.Batcher(model) as b:
        r = b.submit(p, max_new_tokens=30, temperature=0, ignore_eos=True)
        assert model.generate(p, max_new_tokens=10, temperature=0, ignore_eos=True).token_ids == want.token_ids
        assert r.wait().token_ids[:10] == want.token_ids


@pytest.mark.parametrize("prefill_chunk", [256, None])
def test_a_long_prompt_is_prefilled_between_steps(tmp_path, monkeypatch, prefill_chunk):
    """A long prompt arriving while a request decodes is prefilled a chunk per round (prefill_chunk=256: one of
    PREFILL_CHUNK), with the running request's steps in between; None prefills it whole. Both requests get
    their tokens as alone either way."""
    from edgeformer import batching

    from test_batch import make_llama

    make_llama(str(tmp_path))
    big = edgeformer.load(str(tmp_path), threads=2, max_context=1024)
    events = []
    real_chunks, real_step = batching._prefill_chunks, batching.step
    monkeypatch.setattr(batching, "_prefill_chunks",
                        lambda core, ids, *a: (events.append(("prefill", len(ids))), real_chunks(core, ids, *a))[1])
    # (slowed: the running request is still decoding when the long prompt arrives)
    monkeypatch.setattr(batching, "step",
                        lambda seqs: (events.append(("step", len(seqs))), time.sleep(0.02), real_step(seqs))[2])
    running_p, long_p = prompt_ids(6, seed=70), prompt_ids(700, seed=71)
    running_kw = dict(max_new_tokens=60, temperature=0, ignore_eos=True)
    long_kw = dict(max_new_tokens=5, temperature=0, ignore_eos=True)
    with edgeformer.Batcher(big, prefill_chunk=prefill_chunk) as b:
        r1 = b.submit(running_p, **running_kw)
        next(r1)  # running
        r2 = b.submit(long_p, **long_kw)
        assert r2.wait().token_ids == big.generate(long_p, **long_kw).token_ids
        rest = r1.wait()
    assert rest.token_ids == big.generate(running_p, **running_kw).token_ids
    chunks = [i for i, e in enumerate(events) if e == ("prefill", 512 if prefill_chunk is None else 256)]
    if prefill_chunk is None:
        assert len(chunks) == 1  # the 512 tokens before the last piece in one go
    else:
        assert len(chunks) == 2 and any(e[0] == "step" for e in events[chunks[0] + 1 : chunks[1]])


def test_short_prompts_pass_a_long_one_and_a_prefilling_request_cancels(tmp_path, monkeypatch):
    """A short prompt that joins with a long one starts at once, ahead of the long one's chunks; a request
    cancelled while its prompt is prefilled a chunk at a time ends "cancelled", and the Batcher goes on."""
    from edgeformer import batching

    from test_batch import make_llama

    make_llama(str(tmp_path))
    big = edgeformer.load(str(tmp_path), threads=2, max_context=1024)
    events = []
    real_chunks = batching._prefill_chunks
    monkeypatch.setattr(batching, "_prefill_chunks",
                        lambda core, ids, *a: (events.append(len(ids)), real_chunks(core, ids, *a))[1])
    _slow_steps(monkeypatch)
    long_p, short_p = prompt_ids(700, seed=72), prompt_ids(7, seed=73)
    kw = dict(max_new_tokens=4, temperature=0, ignore_eos=True)
    with edgeformer.Batcher(big, prefill_chunk=256) as b:
        with b._cond:  # both join in the same round, the long one first in line
            r_long, r_short = b.submit(long_p, **kw), b.submit(short_p, **kw)
        assert r_short.wait().token_ids == big.generate(short_p, **kw).token_ids
        assert r_long.wait().token_ids == big.generate(long_p, **kw).token_ids
        assert events[:2] == [0, 256]  # the short prompt (no whole chunk before its last piece), then a chunk
        running = b.submit(short_p, max_new_tokens=200, temperature=0, ignore_eos=True)
        next(running)  # decoding: each round has a (slowed) step
        n = len(events)
        r = b.submit(long_p, max_new_tokens=50, temperature=0, ignore_eos=True)
        deadline = time.monotonic() + 30
        while len(events) == n and time.monotonic() < deadline:  # its first chunk is in
            time.sleep(0.001)
        r.cancel()
        res = r.wait()
        assert res.finish_reason == "cancelled" and len(res.token_ids) < 50
        running.cancel()
        assert b.submit(short_p, **kw).wait().token_ids == r_short.result.token_ids


def test_prefix_cache(tmp_path, monkeypatch):
    """A finished request's KV cache is kept (prefix_cache); a prompt that begins with its tokens (a chat's next
    turn: the conversation so far and more) takes it over and prefills only the rest, with the tokens it gets
    alone. The oldest kept cache goes first; prefix_cache=0 keeps none."""
    from edgeformer import batching

    from test_batch import make_llama

    make_llama(str(tmp_path))
    model = edgeformer.load(str(tmp_path), threads=2, max_context=512)
    ran = []
    real_chunks = batching._prefill_chunks
    monkeypatch.setattr(batching, "_prefill_chunks", lambda core, ids, *a: (ran.append(len(ids)), real_chunks(core, ids, *a))[1])
    kw = dict(max_new_tokens=8, temperature=0, ignore_eos=True)
    first = prompt_ids(300, seed=80)
    with edgeformer.Batcher(model, prefix_cache=2) as b:
        r1 = b.submit(first, **kw).wait()
        assert r1.cached_tokens == 0 and sum(ran) == 256  # whole chunks before the last piece
        ran.clear()
        turn2 = first + r1.token_ids + prompt_ids(20, seed=81)[1:]
        r2 = b.submit(turn2, **kw).wait()
        # the cache held the prompt and every new token but the last (never fed back)
        assert r2.cached_tokens == len(first) + len(r1.token_ids) - 1 and sum(ran) == 0
        assert r2.token_ids == _alone(model, turn2, **kw).token_ids
        assert 0 < r2.prefill_tokens_per_s  # (the tokens it computed)
        # r1's cache went to r2 (now kept in its place). The first prompt again shares 299 tokens with it but
        # does not continue it: a copy of those, and r2's cache stays kept
        again = b.submit(first, **kw).wait()
        assert again.cached_tokens == len(first) - 1 and again.token_ids == r1.token_ids
        assert [len(t) for t, _, _ in b._kept] == [len(turn2) + 7, len(first) + 7]
        # the same prompt again (an answer regenerated) takes its cache over: no copy, no duplicate kept
        regen = b.submit(turn2, **kw).wait()
        assert regen.cached_tokens == len(turn2) - 1 and regen.token_ids == r2.token_ids
        assert [len(t) for t, _, _ in b._kept] == [len(first) + 7, len(turn2) + 7]
        # prompts sharing only their first token (as every prompt with a BOS does) copy nothing
        other = [b.submit(prompt_ids(12, seed=90 + i), **kw).wait() for i in range(2)]
        assert [r.cached_tokens for r in other] == [0, 0]
        assert b.submit(turn2, **kw).wait().cached_tokens == 0  # pushed out by the two others (prefix_cache=2)
        assert len(b._kept) == 2
    with edgeformer.Batcher(model, prefix_cache=0) as b:
        b.submit(first, **kw).wait()
        assert b.submit(first, **kw).wait().cached_tokens == 0 and b._kept == []


def test_requests_joining_together_share_their_prompt(tmp_path, monkeypatch):
    """Requests with one prompt joining in the same round (a server request's `n` choices): the first prefills it,
    the others wait until its prefill ends and copy its cache (each still draws its own tokens). A short prompt
    sharing 32+ tokens with the long one does not wait for all of its chunks: it starts at once."""
    from edgeformer import batching

    from test_batch import make_llama

    make_llama(str(tmp_path))
    model = edgeformer.load(str(tmp_path), threads=2, max_context=512)
    ran = []
    real_chunks = batching._prefill_chunks
    monkeypatch.setattr(batching, "_prefill_chunks", lambda core, ids, *a: (ran.append(len(ids)), real_chunks(core, ids, *a))[1])
    p = prompt_ids(300, seed=84)
    q = p[:100] + prompt_ids(20, seed=85)
    kws = [dict(max_new_tokens=6, temperature=0.9, top_k=20, seed=s, ignore_eos=True) for s in (1, 2, 3)]
    with edgeformer.Batcher(model, prefix_cache=0) as b:
        with b._cond:  # all join in one round
            reqs = [b.submit(p, **kw) for kw in kws] + [b.submit(q, **kws[0])]
        res = [r.wait() for r in reqs]
    assert [r.token_ids for r in res[:3]] == [_alone(model, p, **kw).token_ids for kw in kws]
    assert res[3].token_ids == _alone(model, q, **kws[0]).token_ids
    assert [r.cached_tokens for r in res] == [0, len(p) - 1, len(p) - 1, 0]
    assert sum(ran) == 256  # the shared prompt's whole chunks computed once


def test_prefix_cache_skips_dynamic_rope(tmp_path):
    """Dynamic NTK scaling computes a key's frequencies from its call's length: such keys are never reused."""
    model = _build("rope_dynamic", str(tmp_path))
    kw = dict(max_new_tokens=4, temperature=0, ignore_eos=True)
    p = prompt_ids(10, seed=5)
    with edgeformer.Batcher(model) as b:
        assert b.prefix_cache == 0
        b.submit(p, **kw).wait()
        assert b.submit(p + [7, 8], **kw).wait().cached_tokens == 0


def test_batcher_errors(model, tmp_path):
    with pytest.raises(ValueError, match="max_batch"):
        edgeformer.Batcher(model, max_batch=0)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="prefill_chunk"):
            edgeformer.Batcher(model, prefill_chunk=bad)
    for bad in (-1, 2.5, True, None):
        with pytest.raises(ValueError, match="prefix_cache"):
            edgeformer.Batcher(model, prefix_cache=bad)
    with edgeformer.Batcher(model) as b:
        with pytest.raises(ValueError, match="max_new_tokens"):
            b.submit([1, 2], max_new_tokens=-1)
        with pytest.raises(ValueError, match="empty"):
            b.submit([], max_new_tokens=2)
        with pytest.raises(ValueError, match="token id 999"):
            b.submit([999], max_new_tokens=2)
        with pytest.raises(ValueError, match="stop"):
            b.submit([1], stop=3)
    import transformers as tf

    make_model(str(tmp_path), tf.BertModel, tf.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                        intermediate_size=64, vocab_size=320))
    with pytest.raises(ValueError, match="Batcher"):
        edgeformer.Batcher(edgeformer.load(str(tmp_path), threads=2))
