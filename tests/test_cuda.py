"""The CUDA path (load(..., device="cuda")).

Everywhere: cuda_available() is a bool, and bad device arguments name themselves. With a CUDA device (a build
with EF_CUDA=ON, see docs/install.md): every CUDA kernel against the CPU reference by normalized squared error
(NMSE), at odd sizes and at both sides of the GEMV / tensor-core switch; then every decoder family, BERT and T5
against transformers on tiny random checkpoints: prompt logits (tensor-core and tiled-attention path), each
decode step teacher-forced on transformers' greedy continuation (GEMV and split-K path), quantized loads against
the CPU's, and generation with sampling on the device. Without a device these skip, saying why.

tools/cuda_mock/run_tests.sh runs this file without a GPU, against a build whose CUDA runtime and kernels are host
stand-ins (CI does): that checks everything but the device kernels, which only benchmarks/gpu_check.sh can.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import edgeformer
from edgeformer import _core

from conftest import assert_logits_close, hf_greedy, make_llama, make_model, prompt_ids
from test_batch import _batch_vs_single, _build
from test_families import T5_CASES, _decoders, untie_t5_head
from test_ops import bf16_bits, bf16_to_f32

HAVE_CUDA = edgeformer.cuda_available()
WHY = ("edgeformer was built without CUDA (EF_CUDA=ON)" if not _core.cuda_built() else
       "no CUDA device is usable here")
gpu = pytest.mark.skipif(not HAVE_CUDA, reason=WHY)

rng = np.random.default_rng(7)


def nmse(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    den = float(np.sum(ref * ref))
    return float(np.sum((ours - ref) ** 2)) / (den if den > 0 else 1.0)


# ---- everywhere ---------------------------------------------------------------------------------------------------

def test_cuda_available_is_a_bool():
    assert isinstance(edgeformer.cuda_available(), bool)
    assert isinstance(_core.cuda_built(), bool)
    n = _core.cuda_device_count()
    assert isinstance(n, int) and n >= 0
    assert edgeformer.cuda_available() == (_core.cuda_built() and n > 0)


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x", "cuda:", "cuda:-1", "cuda:0:1", "", 0, None, "cuda 0"])
def test_bad_device_arguments_name_themselves(device):
    with pytest.raises(ValueError, match="argument 'device'"):
        edgeformer.load(edgeformer.demo_model_path(), device=device)


def test_device_that_does_not_exist():
    with pytest.raises((ValueError, RuntimeError), match="cuda:99|CUDA"):
        edgeformer.load(edgeformer.demo_model_path(), device="cuda:99")


@pytest.mark.skipif(HAVE_CUDA, reason="a CUDA device is present")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "CUDA:0"])
def test_cuda_without_a_device_is_a_clear_error(device):
    with pytest.raises(RuntimeError, match="without CUDA|no CUDA device"):
        edgeformer.load(edgeformer.demo_model_path(), device=device)
    with pytest.raises(RuntimeError, match="without CUDA|no CUDA device"):
        _core.cuda.softmax(np.ones((1, 4), np.float32))


def test_command_line_device(capsys):
    from edgeformer.cli import main

    assert main(["info"]) == 0
    assert "cuda: " in capsys.readouterr().out
    assert main(["run", "--device", "tpu", "x"]) == 2
    assert "argument 'device'" in capsys.readouterr().err
    if not HAVE_CUDA:
        assert main(["run", "--device", "cuda", "x"]) == 2
        assert "CUDA" in capsys.readouterr().err


def test_cpu_device_is_the_default():
    m = edgeformer.load(edgeformer.demo_model_path(), device="cpu")
    assert m.device == "cpu" and "device" not in repr(m)


# ---- kernels against the CPU reference ------------------------------------------------------------------------------

FLOAT_K = [1, 7, 8, 9, 33, 100, 257]
QUANT_K = {"q8_0": [32, 96, 256], "q4_0": [32, 96, 256], "q4_k": [256, 512], "q6_k": [256, 512]}
TS = [1, 2, 5, 8, 9, 33, 67, 130]  # 1..8: GEMV; 9, 33: 64 x 64 tensor-core tiles; 67, 130: 128 x 128 (partial tiles)
OS = [1, 13, 130]


def _weights(wdtype: str, O: int, K: int):
    """(array handed to the kernel, its dtype, the exact f32 values the device computes with)."""
    w32 = rng.standard_normal((O, K)).astype(np.float32)
    if wdtype == "f32":  # uploaded as f16
        return w32, _core.DType.f32, w32.astype(np.float16).astype(np.float32)
    if wdtype == "f16":
        w = w32.astype(np.float16)
        return w, _core.DType.f16, w.astype(np.float32)
    if wdtype == "bf16":
        w = bf16_bits(w32)
        return w, _core.DType.bf16, bf16_to_f32(w)
    dt = getattr(_core.DType, wdtype)
    q = _core.ops.quantize(w32, dt)
    return q, dt, _core.ops.to_f32(q, dt, isa="generic")


def _linear_bound(wdtype: str, T: int) -> float:
    if T > 8:  # activations (and bf16 weights) rounded to f16 for the tensor cores
        return 1e-5
    return 1e-8 if wdtype in ("f32", "f16", "bf16") else 1e-6  # f32 sums (of _gemv_activations for quantized weights)


def _q8_blocks(v):
    """Per block of 32 (last axis): (q * d, v - q * d) with d = max|v| / 127 in f32 and q = round(v / d), half away
    from zero (the device's quantize_x_kernel; the residual as its fused multiply-add gives it, to within 1 ulp)."""
    d = (np.abs(v).max(-1, keepdims=True) / np.float32(127)).astype(np.float32)
    inv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, np.float32(1)), np.float32(0)).astype(np.float32)
    t = (v * inv).astype(np.float64)
    q = np.sign(t) * np.floor(np.abs(t) + 0.5)
    qd = q * d.astype(np.float64)  # exact: 8-bit q times an f32
    return qd.astype(np.float32), (v.astype(np.float64) - qd).astype(np.float32)


def _gemv_activations(x, wdtype: str):
    """x as the GEMV (T <= 8) multiplies it: quantized weights take activations quantized to 8 bits per block of
    32, and q8_0 also the rounding residual quantized the same way; float weights take x as it is."""
    if wdtype in ("f32", "f16", "bf16"):
        return x
    blocks = x.reshape(x.shape[0], -1, 32)
    xq, res = _q8_blocks(blocks)
    if wdtype == "q8_0":
        xq = xq + _q8_blocks(res)[0]
    return xq.reshape(x.shape)


@gpu
@pytest.mark.parametrize("wdtype", ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k"])
def test_linear(wdtype):
    ks = FLOAT_K if wdtype in ("f32", "f16", "bf16") else QUANT_K[wdtype]
    for K in ks:
        for O in OS:
            w, dt, wf = _weights(wdtype, O, K)
            b = rng.standard_normal(O).astype(np.float32)
            for T in TS:
                x = rng.standard_normal((T, K)).astype(np.float32)
                xs = _gemv_activations(x, wdtype) if T <= 8 else x
                ref = xs.astype(np.float64) @ wf.astype(np.float64).T + b
                y = _core.cuda.linear(x, w, dt, b)
                err = nmse(y, ref)
                assert err <= _linear_bound(wdtype, T), f"{wdtype} T={T} O={O} K={K}: NMSE {err:.3g}"
                # the CPU kernel multiplies the same values (bf16 aside: the CPU rounds the activations to
                # bf16, as PyTorch does, where the device's GEMV keeps them f32), its activations quantized alike
                if dt not in (_core.DType.f32, _core.DType.bf16) and T <= 8:
                    cpu = (_core.ops.qmatmul(x, w, dt, b, isa="generic") if wdtype.startswith("q")
                           else _core.ops.matmul(x, w, dt, b, isa="generic"))
                    assert nmse(y, cpu) <= 4 * _linear_bound(wdtype, T), f"{wdtype} T={T} O={O} K={K}: against the CPU"
            assert nmse(_core.cuda.linear(x, w, dt, None), ref - b) <= _linear_bound(wdtype, T)


@gpu
def test_prompt_gemm_with_and_without_cublas(monkeypatch):
    """Prompts (64 tokens or more) go through cuBLAS where a libcublas is found (PyTorch's CUDA wheels bring one),
    else (or with EDGEFORMER_CUBLAS=0) through the tensor-core tiles: the same values either way, also for a
    quantized matrix dequantized in more than one chunk of rows (64 MiB of f16 each)."""
    from edgeformer.device import _cublas_candidates

    info = edgeformer.cuda_info()
    emulated = "emulation" in info["name"]
    if emulated:
        assert info["cublas"] is None  # the host stand-ins never load it
    elif _cublas_candidates():
        assert info["cublas"] is not None, "a libcublas is installed but was not loaded"
    cases = [("f16", 300, 96), ("bf16", 130, 100), ("q4_0", 300, 96), ("q6_k", 70, 256)]
    if not emulated:
        cases.append(("q4_0", 8300, 4096))  # 8192 rows per chunk at K = 4096: two chunks
    for wdtype, O, K in cases:
        w, dt, wf = _weights(wdtype, O, K)
        b = rng.standard_normal(O).astype(np.float32)
        x = rng.standard_normal((130, K)).astype(np.float32)
        ref = x.astype(np.float64) @ wf.astype(np.float64).T + b
        calls = _core.cuda_blas_calls()
        y = _core.cuda.linear(x, w, dt, b)
        assert _core.cuda_blas_calls() > calls if info["cublas"] else _core.cuda_blas_calls() == calls
        monkeypatch.setenv("EDGEFORMER_CUBLAS", "0")
        calls = _core.cuda_blas_calls()
        tiles = _core.cuda.linear(x, w, dt, b)
        assert _core.cuda_blas_calls() == calls and edgeformer.cuda_info()["cublas"] is None
        monkeypatch.delenv("EDGEFORMER_CUBLAS")
        assert nmse(y, ref) <= 1e-5 and nmse(tiles, ref) <= 1e-5, (wdtype, O, K)
        assert nmse(y, tiles) <= 1e-5, (wdtype, O, K)


@gpu
@pytest.mark.parametrize("wdtype", ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k"])
def test_embedding(wdtype):
    K = 7 if wdtype in ("f32", "f16", "bf16") else (256 if wdtype in ("q4_k", "q6_k") else 96)
    w, dt, wf = _weights(wdtype, 11, K)
    ids = np.array([3, 0, 10, 3, 7], np.int32)
    out = _core.cuda.embedding(w, dt, ids)
    np.testing.assert_allclose(out, wf[ids], rtol=1e-6, atol=1e-6)


NORM_N = [1, 7, 64, 100, 257, 4099]


@gpu
@pytest.mark.parametrize("n", NORM_N)
def test_norms(n):
    x = (rng.standard_normal((3, n)) * 3 + 0.5).astype(np.float32)
    w = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    x64 = x.astype(np.float64)
    rms = x64 / np.sqrt(np.mean(x64 * x64, axis=1, keepdims=True) + 1e-5)
    assert nmse(_core.cuda.rmsnorm(x, w, 1e-5), rms * w) < 1e-11
    assert nmse(_core.cuda.rmsnorm(x, None, 1e-5), rms) < 1e-11
    mu = x64.mean(axis=1, keepdims=True)
    ln = (x64 - mu) / np.sqrt(((x64 - mu) ** 2).mean(axis=1, keepdims=True) + 1e-5)
    assert nmse(_core.cuda.layernorm(x, w, b, 1e-5), ln * w + b) < 1e-11
    assert nmse(_core.cuda.layernorm(x, None, None, 1e-5), ln) < 1e-11


@gpu
@pytest.mark.parametrize("n", [1, 5, 1000, 4097])
def test_softmax(n):
    x = (rng.standard_normal((3, n)) * 4).astype(np.float32)
    e = np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True))
    assert nmse(_core.cuda.softmax(x), e / e.sum(axis=1, keepdims=True)) < 1e-11


ACTS = {
    "relu": lambda x: np.maximum(x, 0),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "gelu": lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2))),
    "gelu_tanh": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
}


@gpu
@pytest.mark.parametrize("name", list(ACTS))
def test_activations(name):
    for n in (1, 31, 1000):
        g = (rng.standard_normal(n) * 3).astype(np.float32)
        u = rng.standard_normal(n).astype(np.float32)
        a = getattr(_core.Act, name)
        ref = ACTS[name](g.astype(np.float64))
        assert nmse(_core.cuda.act(a, g), ref) < 1e-11
        assert nmse(_core.cuda.act_mul(a, g, u), ref * u) < 1e-11


@gpu
@pytest.mark.parametrize("style", ["half", "interleaved"])
@pytest.mark.parametrize("head_dim,half", [(8, 4), (16, 8), (24, 4), (64, 16)])  # full and partial rotary
def test_rope(style, head_dim, half):
    x = rng.standard_normal((5, 3, head_dim)).astype(np.float32)
    ang = rng.uniform(0, 6, (5, half)).astype(np.float32)
    cos, sin = np.cos(ang), np.sin(ang)
    st = getattr(_core.RopeStyle, style)
    assert nmse(_core.cuda.rope(x, cos, sin, st), _core.ops.rope(x, cos, sin, st)) < 1e-12


def _round_bf16(x):
    return bf16_to_f32(bf16_bits(np.asarray(x, np.float32)))


def ref_attention(q, k, v, pos0, causal=True, window=0, scale=0.0, slopes=None, alibi_bf16=False,
                  alibi_scaled=False, rel=None, rel_lo=0, mask=None):
    """The CPU model's attention (Model::attention) in float64."""
    T, nh, hd = q.shape
    n, nkv, _ = k.shape
    g = nh // nkv
    scale = scale or 1 / math.sqrt(hd)
    out = np.zeros((T, nh, hd))
    for t in range(T):
        pos = pos0 + t
        hi = min(pos, n - 1) if causal else n - 1
        lo = max(0, pos - window + 1) if window > 0 else 0
        js = [j for j in range(lo, hi + 1) if mask is None or mask[j]]
        if not js:
            continue
        for h in range(nh):
            s = np.array([q[t, h].astype(np.float64) @ k[j, h // g] * scale for j in js])
            if slopes is not None:
                sl = _round_bf16(slopes[h]) if alibi_bf16 else slopes[h]
                bias = np.float32(sl) * np.array(js, np.float32)
                if alibi_bf16:
                    bias = _round_bf16(bias)
                s = s + (bias * scale if alibi_scaled else bias)
            if rel is not None:
                s = s + np.array([rel[h, j - pos - rel_lo] for j in js])
            p = np.exp(s - s.max())
            out[t, h] = (p / p.sum()) @ v[js, h // g].astype(np.float64)
    return out


ATTN_CASES = {
    # name: (T, n_keys, heads, kv_heads, head_dim, options)
    "prefill_gqa": (37, 37, 4, 2, 64, {}),
    "prefill_continued": (17, 40, 4, 4, 32, {}),  # a prompt chunk after 23 cached positions
    "prefill_hd80_mqa": (20, 20, 6, 1, 80, {}),
    "prefill_hd256": (9, 9, 2, 2, 256, {}),
    "prefill_window": (40, 40, 4, 2, 16, {"window": 8}),
    "decode_short": (1, 5, 4, 2, 64, {}),
    "decode_split_k": (1, 3000, 8, 2, 128, {}),
    "decode_window": (1, 700, 4, 4, 64, {"window": 100}),
    "decode_hd16_f32": (1, 129, 4, 1, 16, {"kv_f16": False}),
    "decode_hd20_scalar": (1, 300, 4, 2, 20, {}),  # 20 f16 values are not whole 16-byte vectors: the scalar kernel
    "decode_hd256": (1, 500, 2, 2, 256, {}),
    "decode_mask_relative": (1, 260, 4, 4, 32, {"causal": False, "mask": True, "rel": True}),
    "alibi": (12, 12, 6, 6, 16, {"alibi": True}),
    "alibi_bf16_scaled": (12, 12, 6, 6, 16, {"alibi": True, "alibi_bf16": True, "alibi_scaled": True}),
    "alibi_decode": (1, 300, 6, 6, 16, {"alibi": True}),
    "encoder_mask_relative": (11, 11, 4, 4, 16, {"causal": False, "mask": True, "rel": True}),
    "decoder_relative": (9, 9, 4, 4, 16, {"rel": True}),
    "all_masked": (3, 3, 2, 2, 16, {"causal": False, "mask": "none"}),
}


@gpu
@pytest.mark.parametrize("case", list(ATTN_CASES))
def test_attention(case):
    T, n, nh, nkv, hd, o = ATTN_CASES[case]
    q = rng.standard_normal((T, nh, hd)).astype(np.float32)
    k = rng.standard_normal((n, nkv, hd)).astype(np.float32)
    v = rng.standard_normal((n, nkv, hd)).astype(np.float32)
    kv_f16 = o.get("kv_f16", True)
    kr, vr = (k.astype(np.float16).astype(np.float32), v.astype(np.float16).astype(np.float32)) if kv_f16 else (k, v)
    pos0 = n - T if o.get("causal", True) else 0
    kw = dict(causal=o.get("causal", True), window=o.get("window", 0))
    slopes = rel = mask = None
    if o.get("alibi"):
        slopes = (2.0 ** -np.arange(1, nh + 1)).astype(np.float32).tolist()
        kw.update(alibi_bf16=o.get("alibi_bf16", False), alibi_scaled=o.get("alibi_scaled", False))
    rel_lo = 0
    if o.get("rel"):
        rel_lo = -(pos0 + T - 1)
        rel = rng.standard_normal((nh, (n - 1 - pos0) - rel_lo + 1)).astype(np.float32)
    if o.get("mask") is True:
        mask = (rng.random(n) > 0.3).astype(np.uint8)
        mask[0] = 1
    elif o.get("mask") == "none":
        mask = np.zeros(n, np.uint8)
    ours = _core.cuda.attention(q, k, v, pos0, alibi_slopes=slopes, rel=rel, rel_lo=rel_lo, key_mask=mask,
                                kv_f16=kv_f16, **kw)
    ref = ref_attention(q, kr, vr, pos0, slopes=slopes, rel=rel, rel_lo=rel_lo, mask=mask, **kw)
    if o.get("mask") == "none":
        assert np.all(ours == 0)  # no visible key: zeros, as the CPU
    else:
        assert nmse(ours, ref) < 1e-10, case


def _kept(logits, t, top_k, top_p, min_p):
    """The CPU sampler's candidates (Sampler::sample) and their probabilities."""
    V = len(logits)
    idx = sorted(range(V), key=lambda i: (-logits[i], i))
    n = V
    if 0 < top_k < V:
        kth = logits[idx[top_k - 1]]
        n = int(np.sum(logits >= kth))

    def probs(m):
        z = logits[idx[:m]].astype(np.float64) / t
        e = np.exp(z - z.max())
        return e / e.sum()

    if top_p < 1:
        p, cum, keep = probs(n), 0.0, n
        for i in range(n - 1, 0, -1):
            cum += p[i]
            if cum <= 1 - top_p:
                keep = i
            else:
                break
        n = keep
    if min_p > 0:
        p = probs(n)
        keep = 1
        while keep < n and p[keep] >= min_p * p[0]:
            keep += 1
        n = keep
    return idx[:n], probs(n)


@gpu
@pytest.mark.parametrize("opts", [dict(temperature=0.7), dict(temperature=1.0, top_k=20),
                                  dict(temperature=0.9, top_p=0.8), dict(temperature=1.3, top_k=50, top_p=0.9),
                                  dict(temperature=1.0, min_p=0.05), dict(temperature=0.5, top_k=1)])
def test_sampling_follows_the_cpu_sampler(opts):
    V = 1000
    logits = (rng.standard_normal(V) * 2).astype(np.float32)
    o = _core.SamplerOptions()
    for key, val in opts.items():
        setattr(o, key, val)
    kept, p = _kept(logits, opts["temperature"], opts.get("top_k", 0), opts.get("top_p", 1.0), opts.get("min_p", 0.0))
    N = 2000
    counts = {}
    for i in range(N):  # u on a grid: each token takes a share of u equal to its probability
        tok = _core.cuda.sample(logits, o, np.zeros(0, np.int32), (i + 0.5) / N)
        counts[tok] = counts.get(tok, 0) + 1
    assert set(counts) <= set(kept)
    for tok, prob in zip(kept, p):
        assert abs(counts.get(tok, 0) / N - prob) <= 2.0 / N + 1e-3, (tok, counts.get(tok, 0) / N, prob)


@gpu
def test_greedy_sampling_and_repetition_penalty():
    o = _core.SamplerOptions()
    o.temperature = 0.0
    logits = np.array([1.0, 3.0, 3.0, -2.0, 2.9], np.float32)
    assert _core.cuda.sample(logits, o, np.zeros(0, np.int32), 0.5) == 1  # the lowest index among equal maxima
    o.repetition_penalty = 2.0
    cpu = _core.Sampler(o).sample(logits, np.array([1, 2, 1], np.int32))
    assert _core.cuda.sample(logits, o, np.array([1, 2, 1], np.int32), 0.5) == cpu == 4
    V = 70000  # more tokens than threads times the per-thread chunk of one pass
    big = rng.standard_normal(V).astype(np.float32)
    o2 = _core.SamplerOptions()
    o2.temperature = 0.0
    assert _core.cuda.sample(big, o2, np.zeros(0, np.int32), 0.1) == int(np.argmax(big))


# ---- models against transformers ------------------------------------------------------------------------------------

PROMPT = prompt_ids(32)
N_DECODE = 12
REL, ABS = 1e-2, 1e-3  # f16 weights (as the device stores f32 ones), f16 activations in the tensor cores, f16 KV


def _teacher_forced(model, prompt, cont):
    """Decode-path logits: the prompt prefilled, then one token per step, on the device."""
    core = model._core
    core.reset()
    core.prefill(np.asarray(prompt[:-1], np.int32))
    rows = []
    for tok in [prompt[-1]] + list(cont[:-1]):
        rows.append(core.forward(np.asarray([tok], np.int32), False)[0])
    core.reset()
    model._cached = []  # the Python side's record of the cache
    return np.stack(rows)


def _check_model(path, ref_model, max_context=64, dynamic_rope=False):
    import torch

    with torch.no_grad():  # first: transformers' dynamic NTK keeps the frequencies of the longest call
        prompt_ref = ref_model(torch.tensor([PROMPT])).logits[0].float().numpy()
    greedy = hf_greedy(ref_model, PROMPT, N_DECODE)
    with torch.no_grad():
        full = ref_model(torch.tensor([PROMPT + greedy])).logits[0].float().numpy()
    model = edgeformer.load(path, threads=2, max_context=max_context, device="cuda")
    assert model.device == "cuda:0" and "cuda:0" in repr(model)
    assert_logits_close(model.logits(PROMPT), prompt_ref, rel=REL, abs_=ABS)  # prompt: tensor cores, tiled attention
    if not dynamic_rope:  # (dynamic NTK: a whole-sequence forward rotates every key with the final length's base)
        steps = _teacher_forced(model, PROMPT, greedy)  # decode: GEMV + split-K attention
        ref = full[len(PROMPT) - 1: len(PROMPT) - 1 + N_DECODE]
        assert_logits_close(steps, ref, rel=REL, abs_=ABS)
        for i, row in enumerate(ref):  # greedy tokens, wherever transformers' choice is clear
            top2 = np.sort(row)[-2:]
            if top2[1] - top2[0] > 1e-2 * np.abs(row).max():
                assert int(np.argmax(steps[i])) == greedy[i], f"step {i}"
    out = model.generate(PROMPT, max_new_tokens=6, temperature=0.8, top_k=20, top_p=0.9, seed=3)
    again = model.generate(PROMPT, max_new_tokens=6, temperature=0.8, top_k=20, top_p=0.9, seed=3)
    assert out.token_ids == again.token_ids and all(0 <= t < model.spec.vocab_size for t in out.token_ids)
    return model


def _check_case(cases, case, tmp_path):
    """cases[case] = (transformers class, config): its tiny random model saved, then _check_model on the device."""
    cls, cfg = cases[case]
    _check_model(str(tmp_path), make_model(str(tmp_path), cls, cfg), max_context=64)


LLAMA_CASES = {
    "gqa": ("float32", {}),
    "mqa": ("float32", {"num_key_value_heads": 1}),
    "tied_bias": ("float32", {"tie_word_embeddings": True, "attention_bias": True, "mlp_bias": True}),
    "head_dim_24": ("float32", {"head_dim": 24}),
    "rope_dynamic": ("float32", {"max_position_embeddings": 20, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}),
    "rope_llama3": ("float32", {"rope_theta": 500000.0, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}}),
    "mistral_window": ("float32", {"model_type": "mistral", "sliding_window": 8}),
    "f16": ("float16", {}),
    "bf16": ("bfloat16", {}),
}


@gpu
@pytest.mark.parametrize("case", list(LLAMA_CASES))
def test_llama_on_cuda(case, tmp_path):
    dtype, overrides = LLAMA_CASES[case]
    ref = make_llama(str(tmp_path), dtype=dtype, **dict(overrides))
    _check_model(str(tmp_path), ref, max_context=64, dynamic_rope=case == "rope_dynamic")


@gpu
@pytest.mark.parametrize("case", ["gpt2", "opt_pre", "opt_post_proj", "bloom", "mpt", "mpt_clip", "granite", "olmo2",
                                  "falcon_rw", "falcon_new",
                                  "falcon_seq_bias", "falcon_alibi", "codegen", "qwen2", "qwen2_window",
                                  "qwen2_window_layer1", "qwen3", "phi3", "phi3_window_partial", "phi3_longrope",
                                  "gemma3", "gemma2", "gemma", "gpt_neox", "gpt_neox_seq", "phi", "starcoder2",
                                  "stablelm", "stablelm_parallel", "cohere", "gptj", "gpt_neo", "gpt_bigcode",
                                  "gpt_bigcode_mha", "smollm3", "smollm3_window"])
def test_family_on_cuda(case, tmp_path):
    _check_case(_decoders(), case, tmp_path)


@gpu
@pytest.mark.parametrize("case", ["ministral", "helium", "seed_oss", "arcee", "exaone", "vaultgemma", "nemotron",
                                  "olmo", "olmo_plain", "olmo3", "cohere2", "ministral3", "ministral_all"])
def test_variant_on_cuda(case, tmp_path):
    from test_families_variants import _cases

    _check_case(_cases(), case, tmp_path)


@gpu
@pytest.mark.parametrize("case", ["ernie4_5", "exaone4", "exaone4_global", "glm", "glm4", "internlm3", "stablelm_qk",
                                  "cohere_qk"])
def test_recent_family_on_cuda(case, tmp_path):
    from test_families_recent import _cases

    _check_case(_cases(), case, tmp_path)


@gpu
@pytest.mark.parametrize("case", ["mixtral", "qwen2_moe", "olmoe", "granitemoe", "qwen3_moe", "ernie4_5_moe",
                                  "glm4_moe"])
def test_moe_on_cuda(case, tmp_path):
    """Mixtures of experts: the router in f32 on the device, the choice on the host (the CPU's code), each expert
    over the rows that chose it; shared experts with and without their gate, selection biases, groups, dense
    first layers."""
    from test_moe import _cases

    _check_case(_cases(), case, tmp_path)


RECURRENT = r"recurrent layers \(Gated DeltaNet, short convolution, Mamba, Mamba2\) and gated attention outputs"


@gpu
@pytest.mark.parametrize("case,what", [("gpt_oss", "attention sinks"),
                                       ("deepseek_v2", "latent attention and values of another head size"),
                                       ("hunyuan", "after-rotary or whole-width LayerNorm q/k norms"),
                                       ("qwen3_5_text", RECURRENT), ("lfm2", RECURRENT)])
def test_cpu_only_families_on_cuda_are_refused_clearly(case, what, tmp_path):
    """The families with no CUDA path yet (mixtures of experts, sinks, recurrent layers ...): loading one there says
    so, naming what it lacks."""
    from test_families_recent import _cases as recent
    from test_families_variants import _cases as variants
    from test_hybrid import _cases as hybrid
    from test_moe import _cases

    cls, cfg = {**_cases(), **_decoders(), **variants(), **hybrid(), **recent()}[case]
    make_model(str(tmp_path), cls, cfg)
    with pytest.raises(ValueError, match=rf"{what} \({cfg.model_type}\) run on the CPU only"):
        edgeformer.load(str(tmp_path), device="cuda", max_context=64)


@gpu
@pytest.mark.parametrize("family", ["gemma4_text", "gemma3n_text"])
def test_gemma4_and_3n_on_cuda_are_refused_clearly(family, tmp_path):
    import test_gemma3n
    import test_gemma4

    if family == "gemma4_text":
        test_gemma4._make(str(tmp_path), "e2b")
    else:
        test_gemma3n._make(str(tmp_path), "small")
    with pytest.raises(ValueError, match=rf"per-layer head sizes, shared keys and values.* \({family}\) run on the "
                                         r"CPU only"):
        edgeformer.load(str(tmp_path), device="cuda", max_context=64)


@gpu
def test_bitnet_on_cuda_is_refused_clearly(tmp_path):
    import test_bitnet

    test_bitnet.make_bitnet(str(tmp_path), "bitlinear")
    with pytest.raises(ValueError, match=r"BitNet's sub-norms and ternary matrices \(bitnet\) run on the CPU only"):
        edgeformer.load(str(tmp_path), device="cuda", max_context=64)


@gpu
def test_bf16_kv_cache_on_cuda_is_refused_clearly(tmp_path):
    make_llama(str(tmp_path))
    with pytest.raises(ValueError, match="argument 'kv_dtype' must be 'f16' or 'f32', got 'bf16'"):
        edgeformer.load(str(tmp_path), device="cuda", max_context=64, kv_dtype="bf16")


# ---- decode steps replayed as CUDA graphs ---------------------------------------------------------------------------

GRAPH_CASES = ["llama", "mistral_window", "llama_q4_0", "gpt2", "opt_post_proj", "bloom", "falcon_new", "codegen"]


def _graph_model(case, path):
    """A tiny decoder of 320 positions (prompts cross the first graph's 256 keys) and its load options."""
    import copy

    if case.startswith("llama") or case == "mistral_window":
        over = {"model_type": "mistral", "sliding_window": 8} if case == "mistral_window" else {}
        make_llama(path, max_position_embeddings=320, **over)
        return {"dtype": "q4_0"} if case == "llama_q4_0" else {}
    cls, cfg = _decoders()[case]
    cfg = copy.deepcopy(cfg)
    for key in ("n_positions", "max_position_embeddings"):  # (BLOOM's ALiBi has no table)
        if key in cfg.to_dict():
            setattr(cfg, key, 320)
    make_model(path, cls, cfg)
    return {}


def _graph_steps_agree(model, prompt, n):
    """Greedy tokens from graph steps against the argmax of the plain path's logits, step by step."""
    toks = model.generate(prompt, max_new_tokens=n, temperature=0, ignore_eos=True).token_ids
    assert len(toks) == n
    steps = _teacher_forced(model, prompt, toks)  # forward(): one token per call, no graph
    for i, row in enumerate(steps):
        top2 = np.sort(row)[-2:]
        if top2[1] - top2[0] > 1e-3 * np.abs(row).max():
            assert int(np.argmax(row)) == toks[i], f"step {i}"
    return toks


@gpu
@pytest.mark.parametrize("case", GRAPH_CASES)
def test_decode_graphs_match_plain_steps(case, tmp_path, monkeypatch):
    opts = _graph_model(case, str(tmp_path))
    model = edgeformer.load(str(tmp_path), threads=2, max_context=320, device="cuda", **opts)
    core = model._core
    assert core.graph_stats["enabled"]
    prompt = prompt_ids(250)
    toks = _graph_steps_agree(model, prompt, 12)  # positions 250 .. 261: graphs for 256 and 512 keys
    g = core.graph_stats
    # (first token: the prompt's step.) The 512-key graph's warm-up grows the attention scratch: the 256-key
    # graph, which holds the old buffer, is dropped, not replayed into freed memory. The host stand-ins never
    # hand back a freed address, so there it is always dropped; a GPU's cudaMalloc may return the same
    # address for the larger buffer, and then the graph stays valid and is kept.
    emulated = "emulation" in edgeformer.cuda_info()["name"]
    assert g["graphs"] in ((1,) if emulated else (1, 2)) and g["captures"] == 2 and g["launches"] == 12 - 1 - 2, g
    # a longer call reallocates the activations: the graphs hold stale addresses, are dropped and captured again
    model.logits(prompt_ids(300))
    assert _graph_steps_agree(model, prompt, 12) == toks
    g2 = core.graph_stats
    assert g2["captures"] == 4 and g2["graphs"] == 2, g2
    # the same tokens with graphs off (sampling too: the device RNG's draws do not depend on the path)
    sampled = model.generate(prompt_ids(40), max_new_tokens=20, temperature=0.9, top_k=30, seed=5).token_ids
    monkeypatch.setenv("EDGEFORMER_CUDA_GRAPHS", "0")
    plain = edgeformer.load(str(tmp_path), threads=2, max_context=320, device="cuda", **opts)
    assert not plain._core.graph_stats["enabled"]
    assert plain.generate(prompt, max_new_tokens=12, temperature=0, ignore_eos=True).token_ids == toks
    # from an empty cache, as `sampled` (_teacher_forced emptied it): with 39 tokens kept from the call before, the
    # 40th would run as a one-token step (8-bit activations for q4_0) rather than in the prompt's tiles
    plain._core.reset()
    plain._cached = []
    assert plain.generate(prompt_ids(40), max_new_tokens=20, temperature=0.9, top_k=30, seed=5).token_ids == sampled
    assert plain._core.graph_stats["launches"] == 0


@gpu
def test_graphs_can_be_turned_off_and_on(tmp_path):
    make_llama(str(tmp_path), max_position_embeddings=64)
    model = edgeformer.load(str(tmp_path), threads=2, max_context=64, device="cuda")
    core = model._core
    first = model.generate(prompt_ids(8), max_new_tokens=6, temperature=0, ignore_eos=True).token_ids
    assert core.graph_stats["graphs"] == 1 and core.graph_stats["launches"] == 6 - 2
    core.set_graphs(False)
    assert core.graph_stats["graphs"] == 0 and not core.graph_stats["enabled"]
    assert model.generate(prompt_ids(8), max_new_tokens=6, temperature=0, ignore_eos=True).token_ids == first
    assert core.graph_stats["launches"] == 4
    core.set_graphs(True)
    assert model.generate(prompt_ids(8), max_new_tokens=6, temperature=0, ignore_eos=True).token_ids == first
    # (a captured graph again; the prompt's last token may itself be a graph step: the prompt is cached)
    assert core.graph_stats["captures"] == 2 and core.graph_stats["launches"] >= 8


@gpu
def test_gpu_benchmark_runs(tmp_path):
    """benchmarks/bench_gpu.py (the GPU proof's benchmark) end to end on a tiny shape."""
    import importlib.util
    import json
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "benchmarks" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "gpu.json"
    assert bench.main(["--models", "tiny", "--dtypes", "f16,q4_0", "--prompt", "20", "--decode", "6", "--reps", "1",
                       "--no-torch", "--out", str(out)]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert [(r["model"], r["dtype"]) for r in runs] == [("tiny", "f16"), ("tiny", "q4_0")]
    for r in runs:
        e = r["edgeformer"]
        assert e["decode_tok_s"] > 0 and e["decode_tok_s_without_graphs"] > 0 and e["prefill_tok_s"] > 0
        assert e["graphs"]["launches"] >= 6 and 0 < e["decode_bytes_per_token"] < e["weight_bytes"] * 2
        assert [b["batch"] for b in e["batched"]] == [8] and e["batched"][0]["decode_tok_s"] > 0


@gpu
def test_gpu_profile_runs(tmp_path):
    """benchmarks/profile_gpu.py (kernel times of a decode step and a prompt) on a tiny shape; the kernel table is
    empty on the host stand-ins (torch's profiler sees no device there)."""
    import importlib.util
    import pathlib

    pytest.importorskip("torch")
    path = pathlib.Path(__file__).parent.parent / "benchmarks" / "profile_gpu.py"
    spec = importlib.util.spec_from_file_location("profile_gpu", path)
    prof = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prof)
    out = tmp_path / "profile.txt"
    assert prof.main(["--models", "tiny", "--dtypes", "f16,q4_0", "--steps", "3", "--prompt", "16",
                      "--out", str(out)]) == 0
    text = out.read_text()
    for dt in ("f16", "q4_0"):
        assert f"== tiny {dt}: decode" in text and f"== tiny {dt}: prompt of 16" in text
    if "emulation" not in edgeformer.cuda_info()["name"]:
        assert "attn_decode" in text and "gemv_" in text


@gpu
def test_generate_list_of_prompts_on_cuda(tmp_path, monkeypatch):
    """A list of prompts on a device model decodes together (one forward of a row per prompt), with each
    prompt's results alone; a device that holds fewer KV caches than prompts takes them group after group."""
    make_llama(str(tmp_path), max_position_embeddings=64)
    model = edgeformer.load(str(tmp_path), threads=2, max_context=64, device="cuda")
    prompts = [prompt_ids(6, seed=1), prompt_ids(11, seed=2), prompt_ids(3, seed=3)]
    alone = [model.generate(p, max_new_tokens=5, temperature=0, ignore_eos=True) for p in prompts]
    out = model.generate(prompts, max_new_tokens=5, temperature=0, ignore_eos=True)
    assert [r.token_ids for r in out] == [r.token_ids for r in alone]
    stream = model.generate(prompts, max_new_tokens=5, temperature=0, ignore_eos=True, stream=True)
    events = list(stream)  # (prompt index, piece), interleaved as the steps make them
    assert [r.token_ids for r in stream.result] == [r.token_ids for r in out]
    for i, r in enumerate(out):
        assert "".join(p for j, p in events if j == i) == r.text
    # sampling: each prompt's seed gives the tokens it gives alone
    kw = dict(max_new_tokens=6, temperature=0.9, top_k=20, repetition_penalty=1.3, seed=4, ignore_eos=True)
    assert [r.token_ids for r in model.generate(prompts, **kw)] == [model.generate(p, **kw).token_ids for p in prompts]
    # room for one KV cache at a time: one prompt after another, the same results
    from edgeformer import batching
    assert batching.device_batch_cap(model) >= 3
    monkeypatch.setattr(batching, "device_batch_cap", lambda m: 1)
    events = list(model.generate(prompts, max_new_tokens=5, temperature=0, ignore_eos=True, stream=True))
    assert [i for i, _ in events] == sorted(i for i, _ in events)
    assert [r.token_ids for r in model.generate(prompts, max_new_tokens=5, temperature=0, ignore_eos=True)] == \
        [r.token_ids for r in alone]
    # logprobs: the logits row comes back before the device's sampler changes it; the CPU's values
    cpu = edgeformer.load(str(tmp_path), threads=2, max_context=64)
    for kw in (dict(temperature=0), dict(temperature=0.9, top_k=20, repetition_penalty=1.3, seed=4)):
        got = model.generate(prompts[0], max_new_tokens=6, ignore_eos=True, logprobs=3, **kw)
        plain = model.generate(prompts[0], max_new_tokens=6, ignore_eos=True, **kw)
        assert got.token_ids == plain.token_ids and len(got.logprobs) == 6
        # in a batch (the rows of one forward), the same tokens and log-probabilities
        monkeypatch.setattr(batching, "device_batch_cap", lambda m: 8)
        both = model.generate([prompts[0], prompts[1]], max_new_tokens=6, ignore_eos=True, logprobs=3, **kw)[0]
        assert both.token_ids == got.token_ids
        assert all(abs(a.logprob - b.logprob) < 1e-3 for a, b in zip(both.logprobs, got.logprobs))
        # the CPU's log-softmax at the device's tokens (teacher-forced): the raw row, whatever the sampler did
        seq = list(prompts[0]) + got.token_ids
        lg = cpu.logits(seq)[len(prompts[0]) - 1 : -1].astype(np.float64)
        ref = lg - (lg.max(-1, keepdims=True) + np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1, keepdims=True)))
        for i, t in enumerate(got.logprobs):
            assert abs(t.logprob - ref[i, t.token_id]) < 1e-2 and len(t.top) == 3
            assert all(abs(lp - ref[i, tok]) < 1e-2 for tok, lp in t.top)
            if kw["temperature"] == 0:
                assert t.top[0][0] == t.token_id


@gpu
@pytest.mark.parametrize("case", ["llama", "llama_rows", "mistral_window", "rope_dynamic", "gpt2", "opt_post_proj",
                                  "bloom", "falcon_new", "codegen"])
def test_decode_batch_on_cuda_matches_single_steps(case, tmp_path):
    """_core.decode_batch on device forks at different positions (rotary tables per position or per length,
    learned positions with OPT's offset, ALiBi, a sliding window shorter than the prompts): each row's logits
    are those of its sequence's own step (test_batch.py's check, on the device)."""
    model = _build(case, str(tmp_path), device="cuda")
    _batch_vs_single(model, tol=1e-4)
    forks = [model._core.fork(), model._core.fork()]
    toks = np.asarray([5, 17], np.int32)
    with pytest.raises(ValueError, match="same model"):
        _core.decode_batch([forks[0], forks[0]], toks)
    other = edgeformer.load(str(tmp_path), threads=2, max_context=64, device="cuda")
    with pytest.raises(ValueError, match="not a fork"):
        _core.decode_batch([forks[0], other._core], toks)
    with pytest.raises(ValueError, match="vocabulary"):
        _core.decode_batch(forks, np.asarray([5, model.spec.vocab_size], np.int32))
    assert [f.n_past for f in forks] == [0, 0]  # a refused step changes nothing
    s = _core.Sampler(_core.SamplerOptions())
    with pytest.raises(ValueError, match="share a sampler"):
        _core.decode_batch(forks, toks, [s, s], [np.zeros(0, np.int32)] * 2)
    # the first sequence at its last position: the batch's other rows do not count against its context
    forks[0].prefill(np.asarray(prompt_ids(63, vocab=model.spec.vocab_size), np.int32))
    _core.decode_batch(forks, toks)
    with pytest.raises(ValueError, match="sequence 0 of the batch.*max_context=64"):
        _core.decode_batch(forks, toks)
    assert [f.n_past for f in forks] == [64, 1]


@gpu
def test_presence_and_frequency_penalties_on_cuda(tmp_path):
    """OpenAI's penalties on the device sampler: every greedy token is the argmax of the CPU's logits less the
    penalties of the tokens generated before it; alone and in a batch, the same tokens."""
    make_llama(str(tmp_path), max_position_embeddings=64)
    model = edgeformer.load(str(tmp_path), threads=2, max_context=64, device="cuda")
    cpu = edgeformer.load(str(tmp_path), threads=2, max_context=64)
    p = prompt_ids(5, seed=9)
    kw = dict(max_new_tokens=12, temperature=0, ignore_eos=True, presence_penalty=1.5, frequency_penalty=0.7)
    got = model.generate(p, **kw)
    assert got.token_ids != model.generate(p, max_new_tokens=12, temperature=0, ignore_eos=True).token_ids
    lg = cpu.logits(list(p) + got.token_ids)[len(p) - 1 : -1].astype(np.float64)
    for i, tok in enumerate(got.token_ids):
        row = lg[i].copy()
        for t in set(got.token_ids[:i]):
            row[t] -= 0.7 * got.token_ids[:i].count(t) + 1.5
        assert row[tok] >= row.max() - 1e-3 * (1 + abs(row.max())), i
    assert model.generate([p, prompt_ids(8, seed=2)], **kw)[0].token_ids == got.token_ids
    # logit_bias rides with them: a banned token never comes, a forced one always does
    bias = dict(max_new_tokens=6, temperature=0, ignore_eos=True)
    assert got.token_ids[0] not in model.generate(p, logit_bias={got.token_ids[0]: -100}, **bias).token_ids
    assert model.generate([p, p], logit_bias={5: 100}, **bias)[1].token_ids == [5] * 6


@gpu
def test_grammar_on_cuda(tmp_path):
    """A grammar's rows are sampled on the host from the device's logits: the CPU model's greedy tokens under
    the same grammar (alone, in a batch beside an unconstrained row, and sampled: within the grammar)."""
    import re

    make_llama(str(tmp_path), max_position_embeddings=64)
    model = edgeformer.load(str(tmp_path), threads=2, max_context=64, device="cuda")
    cpu = edgeformer.load(str(tmp_path), threads=2, max_context=64)
    g = 'root ::= "the " [a-z]+ (" " [a-z]+){1,4} "."'
    p = cpu._tok.encode("the quick")
    want = cpu.generate(p, grammar=g, max_new_tokens=20, temperature=0)
    got = model.generate(p, grammar=g, max_new_tokens=20, temperature=0)
    assert got.token_ids == want.token_ids and got.finish_reason == want.finish_reason
    free = model.generate(p, max_new_tokens=6, temperature=0, ignore_eos=True)
    both = model.generate([p, p], grammar=g, max_new_tokens=20, temperature=0)
    assert both[0].token_ids == want.token_ids
    assert model.generate(p, max_new_tokens=6, temperature=0, ignore_eos=True).token_ids == free.token_ids
    r = model.generate(p, grammar=g, max_new_tokens=30, temperature=1.2, seed=4)
    assert re.fullmatch(r"the [a-z]+( [a-z]+){1,4}\." if r.finish_reason == "stop" else r"the [a-z]*( [a-z]*)*", r.text)


@gpu
def test_batcher_on_cuda(tmp_path):
    """Continuous batching serves a device model: concurrent requests give each one's own tokens."""
    make_llama(str(tmp_path), max_position_embeddings=64)
    model = edgeformer.load(str(tmp_path), threads=2, max_context=64, device="cuda")
    prompts = [prompt_ids(n, seed=n) for n in (4, 9, 6)]
    want = [model.generate(q, max_new_tokens=6, temperature=0, ignore_eos=True).token_ids for q in prompts]
    with edgeformer.Batcher(model, max_batch=2) as b:
        assert b.max_batch == 2
        reqs = [b.submit(q, max_new_tokens=6, temperature=0, ignore_eos=True) for q in prompts]
        assert [r.wait(timeout=60).token_ids for r in reqs] == want
        # a next turn takes over its first turn's device cache (prefix_cache)
        turn2 = prompts[1] + want[1] + [9, 10]
        r = b.submit(turn2, max_new_tokens=6, temperature=0, ignore_eos=True).wait(timeout=60)
        assert r.cached_tokens == len(prompts[1]) + 5
        assert r.token_ids == model.generate(turn2, max_new_tokens=6, temperature=0, ignore_eos=True).token_ids


@gpu
def test_server_on_cuda(tmp_path):
    """edgeformer serve --device cuda: concurrent completions share the device's decode steps, each with its own
    tokens (presence / frequency penalties included)."""
    import json
    import threading

    from edgeformer.server import Server
    from test_server import _post

    model = _build("llama", str(tmp_path), device="cuda")
    bodies = [{"prompt": "Hello world", "max_tokens": 8, "temperature": 0},
              {"prompt": prompt_ids(7, seed=2), "max_tokens": 10, "temperature": 0, "presence_penalty": 1.2,
               "frequency_penalty": 0.5},
              {"prompt": "abc", "max_tokens": 6, "temperature": 0.8, "seed": 3}]
    want = [model.generate(b["prompt"], max_new_tokens=b["max_tokens"], temperature=b["temperature"],
                           presence_penalty=b.get("presence_penalty"), frequency_penalty=b.get("frequency_penalty"),
                           seed=b.get("seed")).text for b in bodies]
    with Server(model, "tiny", port=0).start() as srv:
        url = f"http://127.0.0.1:{srv.port}/v1/completions"
        got = [None] * len(bodies)

        def ask(i):
            got[i] = _post(url, bodies[i])

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert [code for code, _ in got] == [200] * len(bodies)
    assert [json.loads(text)["choices"][0]["text"] for _, text in got] == want


@gpu
def test_decode_graphs_skip_what_changes_per_call(tmp_path):
    """T5's relative bias table and dynamic rotary tables are rebuilt per call: those steps run without graphs."""
    make_llama(str(tmp_path), max_position_embeddings=20, rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    model = edgeformer.load(str(tmp_path), threads=2, max_context=64, device="cuda")
    model.generate(prompt_ids(10), max_new_tokens=5, temperature=0, ignore_eos=True)
    assert model._core.graph_stats["launches"] == 0 and model._core.graph_stats["captures"] == 0


@gpu
@pytest.mark.parametrize("dtype", ["q8_0", "q4_0", "q4_k", "q6_k", "int8"])  # int8: q8_0 rows on the device
def test_quantized_load_matches_the_cpu(dtype, tmp_path):
    make_llama(str(tmp_path), hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2)
    cpu = edgeformer.load(str(tmp_path), dtype=dtype, threads=2, max_context=64)
    dev = edgeformer.load(str(tmp_path), dtype=dtype, threads=2, max_context=64, device="cuda")
    ids = prompt_ids(20)
    assert nmse(dev.logits(ids), cpu.logits(ids)) < 2e-3  # prompt: dequantized tiles
    a = _teacher_forced(dev, ids[:12], ids[12:])
    b = np.stack([cpu.logits(ids)[11 + i] for i in range(len(ids) - 12)])
    assert nmse(a, b) < 2e-3  # decode: dp4a GEMV
    assert dev._core.weight_bytes > 0


@gpu
# q5_k, q3_k, q5_1, iq4_xs (and q4_1, q5_0, q2_k, iq4_nl): no device kernels of their own yet, dequantized to f16
# at upload
@pytest.mark.parametrize("family,qtype", [("llama", "q4_k"), ("llama", "q6_k"), ("gpt2", "q8_0"), ("falcon", "q4_0"),
                                          ("llama", "q5_k"), ("llama", "q3_k"), ("llama", "q5_1"), ("llama", "iq4_xs")])
def test_gguf_on_cuda(family, qtype, tmp_path):
    """GGUF files: quantized tensors uploaded as stored (or dequantized), fused QKV rows as strided views."""
    import transformers as tf

    src = tmp_path / "src"
    if family == "llama":
        make_llama(str(src), hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2)
    else:
        cls, cfg = {
            "gpt2": (tf.GPT2LMHeadModel, tf.GPT2Config(n_embd=128, n_layer=2, n_head=4, n_positions=64, vocab_size=320)),
            "falcon": (tf.FalconForCausalLM, tf.FalconConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                                           new_decoder_architecture=True, num_kv_heads=2,
                                                           max_position_embeddings=64, vocab_size=320)),
        }[family]
        make_model(str(src), cls, cfg)
    out = str(tmp_path / "m.gguf")
    edgeformer.quantize(str(src), out, qtype)
    ids = prompt_ids(20)
    cpu = edgeformer.load(out, threads=2, max_context=64).logits(ids)
    dev = edgeformer.load(out, threads=2, max_context=64, device="cuda")
    assert nmse(dev.logits(ids), cpu) < 2e-3
    assert nmse(_teacher_forced(dev, ids[:12], ids[12:]), cpu[11:19]) < 2e-3


@gpu
def test_bare_decoder_embedder_on_cuda(tmp_path):
    """A decoder saved as its base model alone (Qwen3-Embedding's form: no head) runs on the device for its
    hidden states: embed() as the CPU's and sentence-transformers'; logits refused by name."""
    from sentence_transformers import SentenceTransformer
    from test_embedders import TEXTS, bare_decoder, st_modules

    m = st_modules()
    src = str(tmp_path / "base")
    bare_decoder(src, "qwen3")
    st = SentenceTransformer(modules=[m.Transformer(src), m.Pooling(64, "lasttoken"), m.Normalize()], device="cpu")
    path = str(tmp_path / "st")
    st.save(path)
    model = edgeformer.load(path, device="cuda", max_context=128)
    assert model.spec.no_head
    np.testing.assert_allclose(model.embed(TEXTS), st.encode(TEXTS), rtol=0, atol=5e-3)
    with pytest.raises(ValueError, match="no language-model head"):
        model.logits(prompt_ids(5))


@gpu
def test_bert_on_cuda(tmp_path):
    import torch
    import transformers as tf

    cfg = tf.BertConfig(vocab_size=320, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64, type_vocab_size=2)
    ref = make_model(str(tmp_path), tf.BertModel, cfg)
    ids = np.array([prompt_ids(10, seed=5), prompt_ids(10, seed=6)])
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    types = np.zeros_like(ids)
    types[:, 5:] = 1
    with torch.no_grad():
        hf = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                 token_type_ids=torch.tensor(types)).last_hidden_state.numpy()
    model = edgeformer.load(str(tmp_path), device="cuda")
    ours = model.hidden_states(ids, attention_mask=mask, token_type_ids=types)
    for b in range(2):
        n = int(mask[b].sum())
        assert_logits_close(ours[b, :n], hf[b, :n], rel=REL, abs_=ABS)


@gpu
def test_roberta_on_cuda_counts_positions_past_padding(tmp_path):
    """XLM-RoBERTa on the device: a left-padded batch, whose positions come from the ids (position_ids)."""
    import torch
    import transformers as tf

    from test_encoders import encoder_config

    ref = make_model(str(tmp_path), tf.XLMRobertaModel, encoder_config("xlm-roberta"))
    ids = np.array([prompt_ids(10, seed=5), prompt_ids(10, seed=6)]) + 3
    mask = np.ones_like(ids)
    ids[1, :4], mask[1, :4] = 1, 0
    with torch.no_grad():
        hf = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    model = edgeformer.load(str(tmp_path), device="cuda")
    assert_logits_close(model.hidden_states(ids, attention_mask=mask), hf, rel=REL, abs_=ABS)


@gpu
@pytest.mark.parametrize("case", list(T5_CASES))
def test_t5_on_cuda(case, tmp_path):
    import torch
    import transformers as tf

    cfg = tf.T5Config(vocab_size=320, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=3, num_heads=4,
                      relative_attention_num_buckets=16, relative_attention_max_distance=20, decoder_start_token_id=0,
                      pad_token_id=0, eos_token_id=1, **T5_CASES[case])
    ref = make_model(str(tmp_path), tf.T5ForConditionalGeneration, cfg)
    if not T5_CASES[case]["tie_word_embeddings"]:
        untie_t5_head(ref, str(tmp_path))
    src = prompt_ids(30, seed=3)[1:]
    dec = [0] + prompt_ids(12, seed=4)[1:]
    with torch.no_grad():
        hf = ref(input_ids=torch.tensor([src]), decoder_input_ids=torch.tensor([dec])).logits[0].numpy()
        hf_enc = ref.encoder(input_ids=torch.tensor([src])).last_hidden_state[0].numpy()
    model = edgeformer.load(str(tmp_path), device="cuda")
    assert_logits_close(model.hidden_states(src), hf_enc, rel=REL, abs_=ABS)
    assert_logits_close(model.logits(src, decoder_input_ids=dec), hf, rel=REL, abs_=ABS)
    out = model.generate(src, max_new_tokens=8, num_beams=3)  # beams: decoders forked over one upload
    assert 0 < len(out.token_ids) <= 8 and all(0 <= t < cfg.vocab_size for t in out.token_ids)
    greedy = model.generate(src, max_new_tokens=8, temperature=0)
    assert 0 < len(greedy.token_ids) <= 8
