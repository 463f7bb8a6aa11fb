"""Generation API: sampling, seeds, streaming, stop strings, EOS, chat, the KV-cache prefix reuse, limits,
Ctrl-C, and the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import edgeformer
from edgeformer import _core
from edgeformer.tokenizer import StreamDecoder, TokenizerInfo

from conftest import make_llama, prompt_ids

PROMPT = prompt_ids(24)


@pytest.fixture(scope="module")
def hf_and_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    return make_llama(str(d)), str(d)


@pytest.fixture(scope="module")
def ckpt(hf_and_ckpt):
    return hf_and_ckpt[1]


@pytest.fixture(scope="module")
def model(ckpt):
    return edgeformer.load(ckpt, threads=2, max_context=128)


def sampler(**kw):
    o = _core.SamplerOptions()
    for k, v in kw.items():
        setattr(o, k, v)
    return _core.Sampler(o)


def test_sampler_greedy_and_repetition_penalty():
    logits = np.array([5.0, 4.0, -1.0], np.float32)
    assert sampler(temperature=0).sample(logits, np.array([], np.int32)) == 0
    # penalty 2 on token 0: 5 / 2 = 2.5 < 4
    assert sampler(temperature=0, repetition_penalty=2.0).sample(logits, np.array([0, 0], np.int32)) == 1
    # a negative logit is multiplied: -1 * 0.1 = -0.1 is still below 4
    assert sampler(temperature=0, repetition_penalty=0.1).sample(logits, np.array([2], np.int32)) == 0


def test_sampler_distribution_follows_softmax():
    logits = np.array([1.0, 2.0, 0.5, 1.5], np.float32)
    s = sampler(temperature=0.7, seed=123)
    n = 20000
    counts = np.bincount([s.sample(logits, np.array([], np.int32)) for _ in range(n)], minlength=4)
    p = np.exp(logits / 0.7)
    p /= p.sum()
    # 5 standard deviations of a binomial count
    assert np.all(np.abs(counts - n * p) < 5 * np.sqrt(n * p * (1 - p)) + 1), (counts, n * p)


def test_sampler_top_k_top_p_min_p_restrict_support():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], np.float32))
    none = np.array([], np.int32)
    draws = lambda s: {s.sample(logits, none) for _ in range(2000)}  # noqa: E731
    assert draws(sampler(temperature=1, top_k=2, seed=1)) == {0, 1}
    assert draws(sampler(temperature=1, top_k=1, seed=1)) == {0}
    # top_p 0.7: the ascending cumulative mass of {3, 2} is 0.2 <= 0.3, so both go; 0 and 1 stay
    assert draws(sampler(temperature=1, top_p=0.7, seed=1)) == {0, 1}
    # min_p 0.25: threshold 0.125 keeps 0.5, 0.3, 0.15
    assert draws(sampler(temperature=1, min_p=0.25, seed=1)) == {0, 1, 2}


def test_same_seed_same_text_and_top_k_1_is_greedy(model):
    kw = dict(max_new_tokens=12, temperature=1.0, top_p=0.95, seed=7, ignore_eos=True)
    a = model.generate(PROMPT, **kw)
    b = model.generate(PROMPT, **kw)
    assert a.token_ids == b.token_ids and a.text == b.text
    others = {tuple(model.generate(PROMPT, **{**kw, "seed": s}).token_ids) for s in range(8, 14)}
    assert len(others | {tuple(a.token_ids)}) > 1  # the seed matters
    greedy = model.generate(PROMPT, max_new_tokens=12, temperature=0, ignore_eos=True)
    topk1 = model.generate(PROMPT, max_new_tokens=12, temperature=1.5, top_k=1, seed=3, ignore_eos=True)
    assert topk1.token_ids == greedy.token_ids


def test_prefix_reuse_matches_fresh_model(ckpt, model):
    """A second prompt that extends the first reuses cached keys; results equal a fresh model's."""
    longer = PROMPT + [5, 6, 7]
    model.generate(PROMPT, max_new_tokens=4, temperature=0)
    reused = model.generate(longer, max_new_tokens=8, temperature=0, ignore_eos=True)
    fresh = edgeformer.load(ckpt, threads=1, max_context=128).generate(longer, max_new_tokens=8, temperature=0,
                                                                      ignore_eos=True)
    assert reused.token_ids == fresh.token_ids


def test_text_prompt_stream_and_result(model):
    stream = model.generate("Hello world", max_new_tokens=10, temperature=0, ignore_eos=True, stream=True)
    pieces = list(stream)
    r = stream.result
    assert r is not None and len(r.token_ids) == 10
    assert "".join(pieces) == r.text == model.tokenizer.decode(r.token_ids, skip_special_tokens=True)
    assert r.prompt_tokens == len(model.tokenizer.encode("Hello world").ids)
    assert r.prefill_tokens_per_s > 0 and r.decode_tokens_per_s > 0
    assert r.finish_reason == "length"


def test_stream_never_splits_utf8(ckpt):
    info = TokenizerInfo(ckpt)
    text = "café naïve 日本語 🙂 done"
    ids = info.encode(text, add_special_tokens=False)
    assert len(ids) > len(text.split())  # multi-byte characters span several tokens
    dec = StreamDecoder(info, [])
    pieces = [dec.update(ids[: i + 1]) for i in range(len(ids))] + [dec.update(ids, final=True)]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_stop_strings(model):
    full = model.generate(PROMPT, max_new_tokens=16, temperature=0, ignore_eos=True)
    assert len(full.text) > 6
    stop = full.text[3:6]
    cut = full.text[: full.text.find(stop)]
    r = model.generate(PROMPT, max_new_tokens=16, temperature=0, ignore_eos=True, stop=[stop, "\x00never"])
    assert r.finish_reason == "stop" and r.text == cut
    s = model.generate(PROMPT, max_new_tokens=16, temperature=0, ignore_eos=True, stop=stop, stream=True)
    assert "".join(s) == cut  # the held-back prefix of the stop string is never emitted


def test_eos_ends_generation(model):
    greedy = model.generate(PROMPT, max_new_tokens=8, temperature=0, ignore_eos=True).token_ids
    saved = model.eos_token_ids
    try:
        model.eos_token_ids = [greedy[3]]
        k = greedy.index(greedy[3])
        r = model.generate(PROMPT, max_new_tokens=8, temperature=0)
        assert r.finish_reason == "eos" and r.token_ids == greedy[:k]
        assert model.generate(PROMPT, max_new_tokens=8, temperature=0, ignore_eos=True).token_ids == greedy
    finally:
        model.eos_token_ids = saved


def test_long_prompt_first_step_takes_the_last_chunk(ckpt):
    """A prompt longer than a prefill chunk: whole chunks are prefilled, the rest is the first step's input
    (logits of its last position only); greedy tokens equal the argmax of full-sequence logits each step."""
    from edgeformer.model import PREFILL_CHUNK

    m = edgeformer.load(ckpt, threads=2, max_context=PREFILL_CHUNK + 80)
    for n in (PREFILL_CHUNK, PREFILL_CHUNK + 1, PREFILL_CHUNK + 45):
        ids = prompt_ids(n)
        got = m.generate(ids, max_new_tokens=4, temperature=0, ignore_eos=True).token_ids
        want, seq = [], list(ids)
        for _ in range(4):
            want.append(int(np.argmax(m.logits(seq)[-1])))
            seq.append(want[-1])
        assert got == want, n


def test_max_new_tokens_zero_and_context_limit(ckpt, model):
    r = model.generate(PROMPT, max_new_tokens=0)
    assert r.token_ids == [] and r.text == ""
    small = edgeformer.load(ckpt, threads=1, max_context=len(PROMPT) + 5)
    r = small.generate(PROMPT, max_new_tokens=50, temperature=0, ignore_eos=True)
    assert r.finish_reason == "context" and len(r.token_ids) == 6
    assert r.token_ids == model.generate(PROMPT, max_new_tokens=6, temperature=0, ignore_eos=True).token_ids


def test_chat_applies_template(model):
    msgs = [{"role": "user", "content": "Hello world"}]
    r = model.chat(msgs, max_new_tokens=6, temperature=0, ignore_eos=True)
    ids = model.tokenizer.encode("<s><|user|>Hello world</s><|assistant|>", add_special_tokens=False).ids
    assert r.token_ids == model.generate(ids, max_new_tokens=6, temperature=0, ignore_eos=True).token_ids
    with pytest.raises(ValueError, match="messages"):
        model.chat("not a list")


def test_defaults_and_info(model):
    info = edgeformer.cpu_info()
    assert info["isa"] in info["supported_isas"] and info["physical_cores"] >= 1
    f = info["features"]
    # the avx512bf16 copy executes VPDPBF16PS and VPERMI2B (i-quant codebooks): offered only with both
    if "avx512bf16" in info["supported_isas"]:
        assert f["avx512_bf16"] and f["avx512_vbmi"] and f["avx512_vnni"], f
    # the amx copy runs tile instructions: offered only on top of avx512bf16, with all three AMX features and the
    # tile state granted by the OS (Linux raises SIGILL at the first tile instruction otherwise)
    if "amx" in info["supported_isas"]:
        assert "avx512bf16" in info["supported_isas"], info
        assert f["amx_tile"] and f["amx_bf16"] and f["amx_int8"] and f["amx_permitted"], f
    default_threads = edgeformer.load(model.path, max_context=32).threads
    assert default_threads == info["physical_cores"]
    assert edgeformer.load(model.path).max_context == 128  # max_position_embeddings of the checkpoint
    assert "llama" in repr(model)


def test_ctrl_c_stops_generation_and_model_stays_usable(ckpt):
    code = f"""
import sys, time, edgeformer
m = edgeformer.load({ckpt!r}, threads=1, max_context=100000)
print("ready", flush=True)
t = None
try:
    for i, _ in enumerate(m.generate([0, 5, 6], max_new_tokens=99000, temperature=0, ignore_eos=True, stream=True)):
        pass
except KeyboardInterrupt:
    t = time.perf_counter()
    r = m.generate([0, 5, 6], max_new_tokens=3, temperature=0, ignore_eos=True)
    print("interrupted", len(r.token_ids), flush=True)
    print("handled_in", time.perf_counter() - t, flush=True)
"""
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    t0 = time.perf_counter()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    elapsed = time.perf_counter() - t0
    assert "interrupted 3" in out, (out, err)
    assert elapsed < 5, elapsed  # promptly (includes interpreter shutdown)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "edgeformer", *args], capture_output=True, text=True, timeout=120)


def test_cli_info_and_run(ckpt):
    r = run_cli("info")
    assert r.returncode == 0 and "kernels in use" in r.stdout and edgeformer.__version__ in r.stdout
    assert "q5_k" in r.stdout.split("weight types:")[1]
    assert "iq2_xxs" in r.stdout.split("weight types:")[1] and "(GGUF in)" in r.stdout
    r = run_cli("run", ckpt, "Hello world", "-n", "5", "--temperature", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Hello world")
    assert "prefill:" in r.stderr and "decode: 5 tokens" in r.stderr and "tok/s" in r.stderr
    r16 = run_cli("run", ckpt, "Hello world", "-n", "5", "--temperature", "0", "--kv-dtype", "f16")
    assert r16.returncode == 0 and r16.stdout.startswith("Hello world"), r16.stderr
    assert run_cli("run", ckpt, "x", "--kv-dtype", "q4_0").returncode == 2  # argparse names the choices
    r = run_cli("run", os.path.join(ckpt, "missing"), "x")
    assert r.returncode == 2 and "no such directory" in r.stderr
    env = dict(os.environ, EDGEFORMER_ISA="generic")
    r = subprocess.run([sys.executable, "-m", "edgeformer", "info"], capture_output=True, text=True, env=env)
    assert "kernels in use: generic" in r.stdout


def test_hub_id_goes_through_huggingface_hub(ckpt, monkeypatch):
    """A hub id is fetched with huggingface_hub.snapshot_download (faked here: no network in tests)."""
    import types

    calls = []
    fake = types.ModuleType("huggingface_hub")

    def snapshot_download(repo_id, allow_patterns=None):
        calls.append((repo_id, allow_patterns))
        return ckpt

    fake.snapshot_download = snapshot_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    m = edgeformer.load("someorg/tiny-llama", threads=1)
    assert calls and calls[0][0] == "someorg/tiny-llama" and "*.safetensors" in calls[0][1]
    assert m.spec.model_type == "llama"
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(ValueError, match="pip install huggingface_hub"):
        edgeformer.load("someorg/tiny-llama")


def test_stream_holds_a_stop_prefix_even_before_an_incomplete_character(ckpt):
    """Found by fuzzing: text ending in the start of a stop string, then a partial UTF-8 character, must not
    stream that start (it becomes part of the stop string a token later)."""
    info = TokenizerInfo(ckpt)
    ids = info.encode("X日本語のテキスト", add_special_tokens=False)
    dec = StreamDecoder(info, ["日本語の"])
    pieces = []
    for i in range(len(ids)):
        pieces.append(dec.update(ids[: i + 1]))
        if dec.stopped:
            break
    assert dec.stopped and dec.text == "X" and "".join(pieces) == "X"
    # a stop string that is itself a replacement character
    dec = StreamDecoder(info, ["\ufffd"])
    pieces = [dec.update(ids[: i + 1]) for i in range(len(ids))]
    assert "".join(pieces) == dec.text and "\ufffd" not in dec.text


def _reference_logprobs(hf, prompt, new):
    """log-softmax of transformers' logits at each generated token's position (teacher-forced)."""
    import torch

    ids = torch.tensor([list(prompt) + list(new)])
    with torch.no_grad():
        logits = hf(ids).logits[0, len(prompt) - 1 : len(prompt) - 1 + len(new)].double()
    return torch.log_softmax(logits, -1).numpy()


def test_logprobs_follow_transformers(hf_and_ckpt, model):
    """generate(logprobs=k): each new token's log-probability under the model (before temperature and
    truncation) and the k most likely tokens, against transformers' log-softmax; greedy and sampled; one
    prompt, a batch of prompts and a Batcher give the same."""
    hf, _ = hf_and_ckpt
    # (sampled with a repetition penalty: the sampler changes the logits row, the log-probabilities are the raw's)
    for kw in (dict(temperature=0), dict(temperature=1.3, top_k=5, repetition_penalty=1.5, seed=7)):
        r = model.generate(PROMPT, max_new_tokens=12, ignore_eos=True, logprobs=4, **kw)
        assert len(r.logprobs) == len(r.token_ids) == 12
        ref = _reference_logprobs(hf, PROMPT, r.token_ids)
        for i, t in enumerate(r.logprobs):
            assert t.token_id == r.token_ids[i]
            assert abs(t.logprob - ref[i, t.token_id]) < 2e-4
            assert len(t.top) == 4 and [lp for _, lp in t.top] == sorted([lp for _, lp in t.top], reverse=True)
            for tok, lp in t.top:
                assert abs(lp - ref[i, tok]) < 2e-4
            order = np.argsort(-ref[i])
            if ref[i, order[3]] - ref[i, order[4]] > 1e-3:  # the top 4 are the reference's (no near tie at the edge)
                assert {tok for tok, _ in t.top} == set(order[:4].tolist())
            if kw["temperature"] == 0:
                assert t.top[0][0] == t.token_id
        alone = r
        batch = model.generate([PROMPT, prompt_ids(9, seed=3)], max_new_tokens=12, ignore_eos=True, logprobs=2, **kw)
        assert batch[0].token_ids == alone.token_ids
        for a, b in zip(batch[0].logprobs, alone.logprobs):
            assert abs(a.logprob - b.logprob) < 1e-5 and [t for t, _ in a.top] == [t for t, _ in b.top[:2]]
        with edgeformer.Batcher(model) as bt:
            got = bt.submit(PROMPT, max_new_tokens=12, ignore_eos=True, logprobs=1, **kw).wait()
        assert got.token_ids == alone.token_ids and len(got.logprobs) == 12
        assert all(abs(a.logprob - b.logprob) < 1e-5 for a, b in zip(got.logprobs, alone.logprobs))
    assert model.generate(PROMPT, max_new_tokens=3, temperature=0).logprobs is None
    assert model.generate(PROMPT, max_new_tokens=3, temperature=0, logprobs=0).logprobs[0].top == []
    for bad in (-1, 21, 2.0, True):
        with pytest.raises(ValueError, match="logprobs"):
            model.generate(PROMPT, max_new_tokens=2, logprobs=bad)


def test_presence_and_frequency_penalties(model):
    """OpenAI's presence/frequency penalties on the generated tokens (not the prompt's): greedy tokens are the
    argmax of the logits less frequency * count and presence once a token occurred, step by step."""
    pres, freq = 1.5, 0.7
    r = model.generate(PROMPT, max_new_tokens=20, temperature=0, ignore_eos=True, presence_penalty=pres,
                       frequency_penalty=freq)
    plain = model.generate(PROMPT, max_new_tokens=20, temperature=0, ignore_eos=True)
    assert r.token_ids != plain.token_ids  # (the tiny model repeats itself without them)
    counts: dict = {}
    for i, tok in enumerate(r.token_ids):
        lg = model.logits(list(PROMPT) + r.token_ids[:i])[-1].astype(np.float64)
        for t, n in counts.items():
            lg[t] -= freq * n + pres
        top2 = np.sort(lg)[-2:]
        if top2[1] - top2[0] > 1e-4:
            assert int(np.argmax(lg)) == tok, f"step {i}"
        counts[tok] = counts.get(tok, 0) + 1
    with edgeformer.Batcher(model) as b:  # the same through a Batcher and in a batch
        got = b.submit(PROMPT, max_new_tokens=20, temperature=0, ignore_eos=True, presence_penalty=pres,
                       frequency_penalty=freq).wait()
    assert got.token_ids == r.token_ids
    assert model.generate([PROMPT], max_new_tokens=20, temperature=0, ignore_eos=True, presence_penalty=pres,
                          frequency_penalty=freq)[0].token_ids == r.token_ids
    for bad in (2.5, -3, float("nan")):
        with pytest.raises(ValueError, match="presence_penalty"):
            model.generate(PROMPT, max_new_tokens=2, presence_penalty=bad)
    with pytest.raises(ValueError, match="frequency_penalty"):
        model.generate(PROMPT, max_new_tokens=2, frequency_penalty="x")


def test_prompt_lookup_finds_the_latest_continuation():
    from edgeformer.model import _lookup

    assert _lookup([1, 2, 3, 4, 1, 2], 3) == [3, 4, 1]  # [4, 1, 2] never came before; [1, 2] did
    assert _lookup([7, 1, 2, 9, 1, 2, 8, 5, 1, 2], 2) == [8, 5]  # the latest occurrence
    assert _lookup([1, 2, 3, 1, 2, 3], 8) == [1, 2, 3]  # up to the end of the context
    assert _lookup([5, 6, 7], 4) == [] and _lookup([5], 4) == []


def test_prompt_lookup_gives_the_tokens_of_plain_steps(model, monkeypatch):
    """Proposals checked in one forward keep exactly the tokens that steps one at a time draw: greedy and
    seeded sampling with penalties, proposals right or wrong, an eos among the accepted ones, the context's
    end. With right proposals the forwards are fewer than the tokens."""
    from edgeformer import model as mmod

    kw = dict(max_new_tokens=24, ignore_eos=True)
    for opts in (dict(temperature=0), dict(temperature=0.9, top_k=30, seed=5, repetition_penalty=1.2,
                                            presence_penalty=0.5, frequency_penalty=0.3)):
        plain = model.generate(PROMPT, **kw, **opts).token_ids
        asked = []

        def oracle(ctx, k):  # the plain continuation, made wrong every third time
            n = len(ctx) - len(PROMPT)
            asked.append(n)
            want = plain[n : n + k]
            return want if len(asked) % 3 else [(t + 1) % model.spec.vocab_size for t in want]

        monkeypatch.setattr(mmod, "_lookup", oracle)
        got = model.generate(PROMPT, prompt_lookup=4, **kw, **opts)
        assert got.token_ids == plain, opts
        assert len(asked) < len(plain) // 2
        monkeypatch.undo()
    # an eos among the accepted proposals ends there
    plain = model.generate(PROMPT, max_new_tokens=24, temperature=0, ignore_eos=True).token_ids
    monkeypatch.setattr(mmod, "_lookup", lambda ctx, k: plain[len(ctx) - len(PROMPT):][:k])
    monkeypatch.setattr(model, "eos_token_ids", [plain[6]])
    got = model.generate(PROMPT, max_new_tokens=24, temperature=0, prompt_lookup=8)
    assert got.finish_reason == "eos" and got.token_ids == plain[: plain.index(plain[6])]
    monkeypatch.undo()
    # the real lookup, on a prompt that repeats itself, up to the context's end
    rep = PROMPT[:10] * 3
    want = model.generate(rep, max_new_tokens=200, temperature=0, ignore_eos=True)
    got = model.generate(rep, max_new_tokens=200, temperature=0, ignore_eos=True, prompt_lookup=6)
    assert got.finish_reason == want.finish_reason == "context" and got.token_ids == want.token_ids
    assert model.generate(rep, max_new_tokens=5, temperature=0).token_ids == want.token_ids[:5]  # cache consistent
    with pytest.raises(ValueError, match="prompt_lookup"):
        model.generate(rep, prompt_lookup=-1)
    with pytest.raises(ValueError, match="prompt_lookup"):
        model.generate(rep, prompt_lookup=2, logprobs=1)
    with pytest.raises(ValueError, match="prompt_lookup"):
        model.generate([rep, rep], prompt_lookup=2)


def test_logit_bias(model):
    """OpenAI's logit_bias: each step's logits plus the bias (with the presence / frequency penalties, after the
    repetition penalty); -100 bans a token, +100 forces it; checked by name."""
    p = PROMPT
    plain = model.generate(p, max_new_tokens=8, temperature=0, ignore_eos=True).token_ids
    banned = model.generate(p, max_new_tokens=8, temperature=0, ignore_eos=True, logit_bias={plain[0]: -100})
    assert plain[0] not in banned.token_ids
    forced = model.generate(p, max_new_tokens=5, temperature=0.9, seed=3, ignore_eos=True, logit_bias={"7": 100})
    assert forced.token_ids == [7] * 5  # (JSON's string keys too)
    # a small bias: the CPU's logits plus it, teacher-forced, pick every token
    bias = {plain[1]: 2.5, plain[2]: -1.5}
    got = model.generate(p, max_new_tokens=8, temperature=0, ignore_eos=True, logit_bias=bias,
                         presence_penalty=0.4).token_ids
    lg = model.logits(list(p) + got)[len(p) - 1 : -1].astype(np.float64)
    for i, tok in enumerate(got):
        row = lg[i].copy()
        for t in set(got[:i]):
            row[t] -= 0.4
        for t, b in bias.items():
            row[t] += b
        assert row[tok] >= row.max() - 1e-4, i
    for bad, match in (({-1: 1.0}, "token id"), ({5: 101}, r"\[-100, 100\]"), ({5: "x"}, "number"),
                       ([(5, 1.0)], "dict"), ({model.spec.vocab_size: 1.0}, "token id")):
        with pytest.raises(ValueError, match="logit_bias"):
            model.generate(p, max_new_tokens=1, logit_bias=bad)
        with pytest.raises(ValueError, match=match):
            model.generate(p, max_new_tokens=1, logit_bias=bad)
