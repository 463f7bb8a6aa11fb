"""Every kernel of every ISA against NumPy: sizes around the vector widths (w-1, w, w+1, 3w+5 for w = 4, 8,
16) and row-strided (non-contiguous) views. Errors are normalized by the reference's scale."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeformer import _core

from conftest import ISAS

SIZES = sorted({n for w in (4, 8, 16) for n in (1, w - 1, w, w + 1, 3 * w + 5)} | {64, 100})
rng = np.random.default_rng(0)


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (round to nearest even)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def close(ours, ref, tol=1e-5):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape
    scale = max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(ours - ref).max()) / scale
    assert err <= tol, f"normalized error {err:.3g} > {tol}"


def strided(a: np.ndarray) -> np.ndarray:
    """The same values as a row-strided view into a wider buffer."""
    big = np.zeros((a.shape[0], a.shape[1] + 7), a.dtype)
    big[:, 3 : 3 + a.shape[1]] = a
    v = big[:, 3 : 3 + a.shape[1]]
    assert a.shape[0] == 1 or not v.flags.c_contiguous
    return v


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("wdtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("K", SIZES)
def test_matmul(isa, wdtype, K):
    for T, O in ((1, 13), (5, 19), (7, 4)):  # decode (GEMV) and prompt (GEMM) shapes, odd tiles
        x = rng.standard_normal((T, K)).astype(np.float32)
        w32 = rng.standard_normal((O, K)).astype(np.float32)
        if wdtype == "f32":
            w, wf = w32, w32
        elif wdtype == "f16":
            w = w32.astype(np.float16)
            wf = w.astype(np.float32)
        else:
            w = bf16_bits(w32)
            wf = bf16_to_f32(w)
        b = rng.standard_normal(O).astype(np.float32)
        # bf16 weights meet bf16-rounded activations (as in PyTorch and llama.cpp): exact products from there on
        xr = bf16_to_f32(bf16_bits(x)) if wdtype == "bf16" else x
        ref = xr.astype(np.float64) @ wf.astype(np.float64).T + b
        dt = getattr(_core.DType, wdtype)
        close(_core.ops.matmul(x, w, dt, b, isa=isa), ref)
        close(_core.ops.matmul(strided(x), strided(w), dt, b, isa=isa), ref)
        close(_core.ops.matmul(x, w[::1], dt, None, isa=isa), ref - b)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", SIZES)
def test_conversions(isa, n):
    x = (rng.standard_normal((3, n)) * 100).astype(np.float32)
    h = x.astype(np.float16)
    np.testing.assert_array_equal(_core.ops.to_f32(h, _core.DType.f16, isa=isa), h.astype(np.float32))
    bits = bf16_bits(x)
    np.testing.assert_array_equal(_core.ops.to_f32(strided(bits), _core.DType.bf16, isa=isa), bf16_to_f32(bits))
    np.testing.assert_array_equal(_core.ops.to_f32(x, _core.DType.f32, isa=isa), x)


def test_f16_special_values():
    vals = np.array([0.0, -0.0, 1.0, -2.5, 65504.0, np.inf, -np.inf, 6e-8, 1e-5, 3.0e-5], np.float32)
    h = vals.astype(np.float16)
    for isa in ISAS:
        np.testing.assert_array_equal(_core.ops.to_f32(h, _core.DType.f16, isa=isa)[0], h.astype(np.float32))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", SIZES)
def test_vector_ops(isa, n):
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    close(_core.ops.dot(a, b, isa=isa), np.dot(a.astype(np.float64), b))
    close(_core.ops.axpy(0.7, a, b, isa=isa), b + 0.7 * a.astype(np.float64))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", SIZES)
def test_norms(isa, n):
    x = (rng.standard_normal((4, n)) * 3 + 0.5).astype(np.float32)
    w = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    x64 = x.astype(np.float64)
    rms = x64 / np.sqrt((x64**2).mean(1, keepdims=True) + 1e-5)
    close(_core.ops.rmsnorm(strided(x), w, 1e-5, isa=isa), rms * w)
    close(_core.ops.rmsnorm(x, None, 1e-5, isa=isa), rms)
    mu = x64.mean(1, keepdims=True)
    ln = (x64 - mu) / np.sqrt(((x64 - mu) ** 2).mean(1, keepdims=True) + 1e-5)
    close(_core.ops.layernorm(strided(x), w, b, 1e-5, isa=isa), ln * w + b)
    close(_core.ops.layernorm(x, None, None, 1e-5, isa=isa), ln)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", SIZES)
def test_softmax(isa, n):
    x = (rng.standard_normal((3, n)) * 10).astype(np.float32)
    x[1, 0] = -1e30  # a near-masked score must not produce NaN
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(1, keepdims=True))
    ref = e / e.sum(1, keepdims=True)
    out = _core.ops.softmax(strided(x), isa=isa)
    assert np.isfinite(out).all()
    close(out, ref, tol=2e-6)


def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


ACTS = {
    "silu": lambda x: x / (1 + np.exp(-x)),
    "relu": lambda x: np.maximum(x, 0),
    "relu2": lambda x: np.maximum(x, 0) ** 2,
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("n", SIZES)
def test_activations(isa, act, n):
    x = (rng.standard_normal((2, n)) * 4).astype(np.float32)
    x[0, 0] = -100.0  # far tails: exp overflow / underflow must stay finite
    if n > 1:
        x[0, 1] = 100.0
    u = rng.standard_normal((2, n)).astype(np.float32)
    ref = ACTS[act](x.astype(np.float64))
    a = getattr(_core.Act, act)
    close(_core.ops.act(strided(x), a, isa=isa), ref, tol=2e-6)
    close(_core.ops.act_mul(x, strided(u), a, isa=isa), ref * u, tol=2e-6)


@pytest.mark.parametrize("isa", ISAS)
def test_gelu_tails_keep_relative_accuracy(isa):
    # exact (erf) GELU is computed in vectors from erfc: far into the negative tail, where x Phi(x) is tiny,
    # each value must still be right relative to itself, not only next to the largest one
    x = np.concatenate([-np.geomspace(1e-4, 13, 500), np.geomspace(1e-4, 13, 500)]).astype(np.float32)
    x64 = x.astype(np.float64)
    ref = 0.5 * x64 * np.vectorize(math.erfc)(-x64 / math.sqrt(2))  # (1 + erf cancels in float64 too)
    out = _core.ops.act(x, _core.Act.gelu, isa=isa).astype(np.float64)
    nz = ref != 0
    assert np.max(np.abs(out[nz] - ref[nz]) / np.abs(ref[nz])) < 2e-5


@pytest.mark.parametrize("isa", ISAS)
def test_f32_to_f16_bits(isa):
    """The KV cache's f16 rows: every ISA rounds to nearest even, bit for bit as NumPy's float16 (subnormals,
    ties, overflow to infinity, signed zeros; NaN stays NaN), at lengths with and without a vector tail."""
    x = np.concatenate([rng.standard_normal(997).astype(np.float32) * 10,
                        np.float32([0.0, -0.0, 65504, 65519.99, 65520, -1e9, np.inf, -np.inf, 6e-8, 3e-8, 2.98e-8,
                                    1e-40, -6.1e-5, 1 + 2**-11, 1 + 3 * 2**-11, 2049, 2051])])
    for n in (len(x), 16, 13, 1):
        got = _core.ops.f32_to_f16(x[:n], isa=isa)
        with np.errstate(over="ignore"):
            want = x[:n].astype(np.float16).view(np.uint16)
        np.testing.assert_array_equal(got, want)
    nan = _core.ops.f32_to_f16(np.full(20, np.nan, np.float32), isa=isa).view(np.float16)
    assert np.isnan(nan).all()


def q8_0_shared_rows(w: np.ndarray) -> np.ndarray:
    """q8_0 rows whose blocks share one scale per row (an "int8" matrix: the row-scaled panels) and their values."""
    O, K = w.shape
    d = (np.abs(w).max(1) / 127).astype(np.float16)
    q = np.clip(np.round(w / np.maximum(d.astype(np.float32), 1e-30)[:, None]), -127, 127).astype(np.int8)
    blocks = np.zeros((O, K // 32, 34), np.uint8)
    blocks[:, :, :2] = d.view(np.uint8).reshape(O, 1, 2)
    blocks[:, :, 2:] = q.reshape(O, K // 32, 32).view(np.uint8)
    return blocks.reshape(O, -1), q.astype(np.float64) * d.astype(np.float64)[:, None]


# tokens around the tile unit's 16 and 32 (amx: 16 or more) and past one chunk of tokens; K with a half step of 64
PANEL_SHAPES = [(1, 64, 40), (15, 96, 50), (16, 32, 16), (17, 160, 33), (33, 384, 64), (100, 64, 100), (600, 32, 48)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("T,K,O", PANEL_SHAPES)
def test_packed_bf16_and_int8_products(isa, T, K, O):
    """bf16 panels (activations rounded to bf16) and row-scaled int8 panels
    against float64 products, and amx's int8 equal to avx512vnni's bit for bit (exact integer sums, the same float
    steps)."""
    x = rng.standard_normal((T, K)).astype(np.float32)
    w = rng.standard_normal((O, K)).astype(np.float32)
    wb = bf16_bits(w)
    xr = bf16_to_f32(bf16_bits(x))  # (every ISA multiplies bf16 weights by activations rounded to bf16)
    want = xr.astype(np.float64) @ bf16_to_f32(wb).astype(np.float64).T
    for direct in (False, True):  # (activations rounded once per group by ops::linear, or by the kernel)
        y, layout = _core.ops.linear_packed(x, wb.view(np.uint8), _core.DType.bf16, 1.0, isa, direct)
        assert layout == "blocks"
        close(y, want, tol=1e-5)
    rows, wq = q8_0_shared_rows(w)
    y, layout = _core.ops.linear_packed(x, rows, _core.DType.q8_0, 1.0, isa)
    assert layout == "row_scaled"
    d = np.abs(x).max(1, keepdims=True) / np.float32(127)  # quantize_rows_q8's float steps
    v = x * (np.float32(1) / d)
    xq = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)) * d.astype(np.float64)
    close(y, xq @ wq.T, tol=1e-5)
    if isa == "amx" and "avx512vnni" in ISAS:
        np.testing.assert_array_equal(y, _core.ops.linear_packed(x, rows, _core.DType.q8_0, 1.0, "avx512vnni")[0])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k", "iq4_nl", "iq4_xs"])
@pytest.mark.parametrize("T,O", [(4, 40), (16, 16), (17, 40), (45, 33)])
def test_block_quantized_prompt_products(isa, dtype, T, O):
    """Block-quantized panels times 8-bit activation blocks, as prompts run them (q8_0: the first level only): within
    the error of 8-bit activations of the float product, and amx's (the tile unit from 16 tokens; q6_k stays on
    AVX-512) equal to avx512vnni's bit for bit (exact integer sums, the same float steps in the same order)."""
    K = 512 if dtype in ("q4_k", "q5_k", "q6_k", "iq4_xs") else 96  # (96: an odd number of blocks of 32)
    x = rng.standard_normal((T, K)).astype(np.float32)
    w = rng.standard_normal((O, K)).astype(np.float32)
    dt = getattr(_core.DType, dtype)
    blocks = _core.ops.quantize(w, dt)
    wq = np.asarray(_core.ops.to_f32(blocks.reshape(-1), dt), np.float64).reshape(O, K)
    y, _ = _core.ops.linear_packed(x, blocks, dt, 1.0, isa, prompt=True)
    close(y, x.astype(np.float64) @ wq.T, tol=0.02 * math.sqrt(K) / 16)
    if isa == "amx" and "avx512vnni" in ISAS:
        want, _ = _core.ops.linear_packed(x, blocks, dt, 1.0, "avx512vnni", prompt=True)
        np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("dtype", ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k", "q3_k", "q2_k",
                                   "iq4_nl", "iq4_xs"])
@pytest.mark.parametrize("T,O", [(64, 40), (100, 33), (300, 48)])
def test_block_quantized_long_prompts_in_bf16_on_amx(dtype, T, O):
    """amx, from 64 tokens: the block formats' panels decoded to bf16 (scale * q - min, rounded to nearest even)
    times activations rounded to bf16 - the product of those rounded operands, within float32 summation; past a
    chunk of tokens and odd output counts."""
    if "amx" not in ISAS:
        pytest.skip("no AMX on this CPU")
    K = 512 if dtype in ("q4_k", "q5_k", "q6_k", "q3_k", "q2_k", "iq4_xs") else 96
    x = rng.standard_normal((T, K)).astype(np.float32)
    w = rng.standard_normal((O, K)).astype(np.float32)
    dt = getattr(_core.DType, dtype)
    blocks = _core.ops.quantize(w, dt)
    wq = np.asarray(_core.ops.to_f32(blocks.reshape(-1), dt), np.float32).reshape(O, K)
    wb = bf16_to_f32(bf16_bits(wq)).astype(np.float64)
    xb = bf16_to_f32(bf16_bits(x)).astype(np.float64)
    y, _ = _core.ops.linear_packed(x, blocks, dt, 1.0, "amx", prompt=True)
    close(y, xb @ wb.T, tol=1e-5)
    assert np.abs(y - x.astype(np.float64) @ wq.T.astype(np.float64)).max() > 0  # (not the 8-bit product's path)
    int8, _ = _core.ops.linear_packed(x, blocks, dt, 1.0, "avx512vnni", prompt=True)
    assert not np.array_equal(y, int8)


def test_unsupported_isa_is_an_error():
    missing = [i for i in ("generic", "avx2", "avx512", "avx512vnni", "avx512bf16", "amx", "neon", "neondot")
               if i not in _core.cpu_info()["supported_isas"]]
    for i in missing:
        with pytest.raises(ValueError, match=i):
            _core.ops.dot(np.ones(3, np.float32), np.ones(3, np.float32), isa=i)
    with pytest.raises(ValueError, match="unknown ISA 'sse9'"):
        _core.set_isa("sse9")


@pytest.mark.parametrize("style", ["half", "interleaved"])
@pytest.mark.parametrize("rotary_dim", [8, 16])  # partial (8 of 16) and full
def test_rope_layouts(style, rotary_dim):
    T, H, hd = 3, 2, 16
    x = rng.standard_normal((T, H, hd)).astype(np.float32)
    half = rotary_dim // 2
    inv = 1.0 / 10000 ** (np.arange(0, rotary_dim, 2) / rotary_dim)
    ang = np.arange(5, 5 + T)[:, None] * inv[None, :]  # [T, half]
    c, s = np.cos(ang), np.sin(ang)
    ref = x.astype(np.float64).copy()
    r = ref[..., :rotary_dim]
    if style == "half":  # transformers: x * cos + rotate_half(x) * sin over cat(freqs, freqs)
        c2, s2 = np.concatenate([c, c], -1)[:, None], np.concatenate([s, s], -1)[:, None]
        rot = np.concatenate([-r[..., half:], r[..., :half]], -1)
        ref[..., :rotary_dim] = r * c2 + rot * s2
    else:  # GPT-J: pairs (2i, 2i+1) share angle i
        c2, s2 = np.repeat(c, 2, -1)[:, None], np.repeat(s, 2, -1)[:, None]
        rot = np.stack([-r[..., 1::2], r[..., 0::2]], -1).reshape(r.shape)
        ref[..., :rotary_dim] = r * c2 + rot * s2
    out = _core.ops.rope(x, c.astype(np.float32), s.astype(np.float32), getattr(_core.RopeStyle, style))
    close(out, ref, tol=1e-6)
    np.testing.assert_array_equal(out[..., rotary_dim:], x[..., rotary_dim:])  # the rest passes through


def test_rope_inv_freq_matches_transformers():
    """Every rope_scaling type's frequencies against transformers' own ROPE_INIT_FUNCTIONS."""
    import torch
    import transformers
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from edgeformer.archs import spec_from_config

    base = dict(model_type="llama", vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=4, max_position_embeddings=64)
    cases = [
        {"rope_type": "linear", "factor": 3.0},
        {"rope_type": "dynamic", "factor": 2.0},
        {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
         "original_max_position_embeddings": 32},
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "beta_fast": 16.0,
         "mscale": 1.0, "mscale_all_dim": 0.5},
    ]
    for rs in cases:
        cfg_dict = dict(base, rope_theta=50000.0, rope_scaling=dict(rs))
        hf_cfg = transformers.LlamaConfig(**{k: v for k, v in cfg_dict.items() if k != "model_type"})
        spec, _ = spec_from_config(cfg_dict, "config.json")
        for seq_len in (10, 200):
            ref, ref_scale = ROPE_INIT_FUNCTIONS[rs["rope_type"]](hf_cfg, torch.device("cpu"), seq_len=seq_len)
            ours, scale = _core.ops.rope_inv_freq(spec, seq_len)
            np.testing.assert_allclose(ours, ref.numpy(), rtol=2e-6, err_msg=str(rs))
            assert abs(scale - ref_scale) < 1e-6, rs
