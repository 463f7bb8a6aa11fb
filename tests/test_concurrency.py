"""Threads, interrupts and leaks: calls on one model are serialized (each result as if alone), two models
run in parallel with the GIL released, Ctrl-C stops even one long C++ call within 200 ms and leaves the
model usable, and memory stays flat over a thousand load/generate/free cycles."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import edgeformer

from conftest import make_llama, prompt_ids


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("conc")
    make_llama(str(d), hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2,
               max_position_embeddings=4096)
    return str(d)


def _jobs(n):
    return [(prompt_ids(12, seed=s), s) for s in range(n)]


def test_threads_on_one_model_equal_sequential(ckpt):
    model = edgeformer.load(ckpt, threads=1, max_context=256)
    jobs = _jobs(8)
    expected = [model.generate(p, max_new_tokens=10, temperature=0.9, seed=s, ignore_eos=True).token_ids for p, s in jobs]
    results = [None] * len(jobs)

    def run(i):
        p, s = jobs[i]
        results[i] = model.generate(p, max_new_tokens=10, temperature=0.9, seed=s, ignore_eos=True).token_ids

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected
    # and logits from several threads at once
    ref = model.logits(jobs[0][0])
    outs = [None] * 4
    ts = [threading.Thread(target=lambda i=i: outs.__setitem__(i, model.logits(jobs[0][0]))) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for o in outs:
        np.testing.assert_array_equal(o, ref)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_pool_split_leaves_logits_unchanged(ckpt, dtype):
    """A prompt long enough that the norms, residual adds and activations run split over the pool (rows x width
    past ops::each_rows' threshold) gives, bit for bit, the logits of one thread: each row computed alike."""
    ids = prompt_ids(200, seed=3)  # (200 rows x 128 wide, 256 in the MLP)
    one = edgeformer.load(ckpt, threads=1, dtype=dtype, max_context=256).logits(ids)
    two = edgeformer.load(ckpt, threads=2, dtype=dtype, max_context=256).logits(ids)
    assert np.isfinite(one).all()
    np.testing.assert_array_equal(two, one)


def test_two_models_two_threads_equal_sequential(ckpt):
    a = edgeformer.load(ckpt, threads=1, max_context=256)
    b = edgeformer.load(ckpt, dtype="q8_0", threads=1, max_context=256)
    p = prompt_ids(16)
    ea = a.generate(p, max_new_tokens=12, temperature=0, ignore_eos=True).token_ids
    eb = b.generate(p, max_new_tokens=12, temperature=0, ignore_eos=True).token_ids
    out = {}
    ta = threading.Thread(target=lambda: out.__setitem__("a", a.generate(p, max_new_tokens=12, temperature=0,
                                                                        ignore_eos=True).token_ids))
    tb = threading.Thread(target=lambda: out.__setitem__("b", b.generate(p, max_new_tokens=12, temperature=0,
                                                                        ignore_eos=True).token_ids))
    ta.start()
    tb.start()
    ta.join()
    tb.join()
    assert out == {"a": ea, "b": eb}


def test_gil_is_released_during_compute(ckpt):
    """While one thread runs a long forward pass in C++, a pure-Python thread keeps running."""
    model = edgeformer.load(ckpt, threads=1, max_context=4096)
    ids = np.array(prompt_ids(4000, vocab=300), np.int32)  # (long enough on a fast core: attention is quadratic)
    ticks = []
    done = threading.Event()

    def counter():
        while not done.is_set():
            ticks.append(time.perf_counter())

    t = threading.Thread(target=counter)
    t.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    model._core.reset()
    model._core.forward(ids, False)
    t1 = time.perf_counter()
    done.set()
    t.join()
    during = [x for x in ticks if t0 < x < t1]
    assert t1 - t0 > 0.05
    # the counter thread ran throughout the call (with the GIL held it could not have run at all)
    assert len(during) > 1000 and max(np.diff([t0] + during + [t1])) < 0.5 * (t1 - t0)


def test_sigint_stops_a_long_call_within_200ms(ckpt):
    code = f"""
import sys, time, numpy as np, edgeformer
m = edgeformer.load({ckpt!r}, threads=1, max_context=4096)
ids = np.arange(2, 4002, dtype=np.int32) % 300
m._core.forward(ids[:8], False)           # warm
m._core.reset()
print("ready", flush=True)
try:
    while True:                           # one long C++ call after another
        m._core.reset()
        m._core.forward(ids, False)
except KeyboardInterrupt:
    print("caught", time.time(), flush=True)
assert m._core.n_past in (0, 4000)        # an interrupted call leaves nothing half-done
out = m.generate([0, 5, 6], max_new_tokens=3, temperature=0, ignore_eos=True)
print("usable", len(out.token_ids), flush=True)
"""
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:  # the child loops until interrupted: never leave it running when an assertion fails
        first = ""
        while first != "ready":  # lines before "ready" (a build tool's chatter) are skipped
            first = p.stdout.readline()
            assert first, ("the child exited before it was ready", p.stderr.read())
            first = first.strip()
        time.sleep(0.5)
        sent = time.time()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    lines = dict(ln.split(" ", 1) for ln in out.strip().splitlines() if " " in ln)
    assert "caught" in lines and lines.get("usable") == "3", (out, err)
    latency = float(lines["caught"]) - sent
    assert latency < 0.2, latency


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads resident memory from /proc (Linux)")
def test_memory_flat_over_1000_cycles(tmp_path):
    make_llama(str(tmp_path), hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1,
               num_hidden_layers=1, max_position_embeddings=64)
    path = str(tmp_path)

    def cycle():
        m = edgeformer.load(path, threads=1, max_context=32)
        m.generate([0, 3, 4], max_new_tokens=4, temperature=0.8, seed=1, ignore_eos=True)
        del m

    for _ in range(50):  # warm-up: allocator pools, caches
        cycle()
    before = _rss()
    for _ in range(1000):
        cycle()
    grown = _rss() - before
    assert grown < 8 << 20, f"resident memory grew {grown / 2**20:.1f} MiB over 1000 load/generate/free cycles"
    m = edgeformer.load(path, threads=1, max_context=32)
    for _ in range(50):
        m.generate([0, 3, 4], max_new_tokens=4, temperature=0.8, seed=1, ignore_eos=True)
    before = _rss()
    for i in range(1000):
        m.generate([0, 3, 4], max_new_tokens=4, temperature=0.8, seed=i, ignore_eos=True)
    grown = _rss() - before
    assert grown < 4 << 20, f"resident memory grew {grown / 2**20:.1f} MiB over 1000 generations"


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads resident memory from /proc (Linux)")
def test_huge_context_costs_address_space_not_memory(tmp_path):
    """max_context defaults to max_position_embeddings: a huge one reserves the KV cache and touches none of
    it (no per-thread buffers sized by it either) until positions are used."""
    make_llama(str(tmp_path), hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1,
               num_hidden_layers=1, max_position_embeddings=2**24)
    before = _rss()
    m = edgeformer.load(str(tmp_path), threads=2)
    assert m.max_context == 2**24
    m.generate([0, 3, 4], max_new_tokens=4, temperature=0, ignore_eos=True)
    assert _rss() - before < 64 << 20, f"{(_rss() - before) / 2**20:.0f} MiB"
