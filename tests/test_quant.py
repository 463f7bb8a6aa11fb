"""Quantized weights: dequantization bit-identical to gguf-py, q8_0 / q4_0 quantization bit-identical to
gguf-py's, and the quantized kernels (8-bit activations) of every ISA against their reference."""

from __future__ import annotations

import numpy as np
import pytest

from edgeformer import _core

from conftest import GRID_BYTES, ISAS, random_grid_blocks

import gguf  # noqa: E402,F401  (a test dependency: tests/requirements.txt)
from gguf import GGMLQuantizationType as GQ  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402

TYPES = {"q8_0": GQ.Q8_0, "q4_0": GQ.Q4_0, "q4_1": GQ.Q4_1, "q5_0": GQ.Q5_0, "q5_1": GQ.Q5_1, "q2_k": GQ.Q2_K,
         "q3_k": GQ.Q3_K, "q4_k": GQ.Q4_K, "q5_k": GQ.Q5_K, "q6_k": GQ.Q6_K, "iq4_nl": GQ.IQ4_NL, "iq4_xs": GQ.IQ4_XS}
BLOCK = {"q8_0": (32, 34), "q4_0": (32, 18), "q4_1": (32, 20), "q5_0": (32, 22), "q5_1": (32, 24), "q2_k": (256, 84),
         "q3_k": (256, 110), "q4_k": (256, 144), "q5_k": (256, 176), "q6_k": (256, 210), "iq4_nl": (32, 18),
         "iq4_xs": (256, 136)}
# byte offsets of the f16 scales in a block
F16_AT = {"q8_0": [0], "q4_0": [0], "q4_1": [0, 2], "q5_0": [0], "q5_1": [0, 2], "q2_k": [80, 82], "q3_k": [108],
          "q4_k": [0, 2], "q5_k": [0, 2], "q6_k": [208], "iq4_nl": [0], "iq4_xs": [0]}
# the quantizers gguf-py has (the K-quants' it lacks; ours search scales more simply than llama.cpp's)
GGUF_QUANTIZERS = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1"]
rng = np.random.default_rng(0)

# llama.cpp's 1- to 3-bit i-quants: read, never made here (no quantizer: llama.cpp's needs an importance matrix)
GRID = {name: getattr(GQ, name.upper()) for name in GRID_BYTES}


@pytest.mark.parametrize("name", list(GRID))
def test_grid_dequantize_bit_identical_to_gguf(name):
    raw = random_grid_blocks(name, 5, 3)
    ref = dequantize(raw, GRID[name]).astype(np.float32)
    assert np.isfinite(ref).all() and np.abs(ref).max() > 0
    for isa in ISAS:
        ours = _core.ops.to_f32(raw, getattr(_core.DType, name), isa=isa)
        assert ours.shape == (5, 3 * 256)
        np.testing.assert_array_equal(ours.view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("name", list(GRID))
def test_grid_types_have_no_quantizer(name, tmp_path):
    import edgeformer

    with pytest.raises(ValueError, match=f"no quantizer for {name}"):
        _core.ops.quantize(np.zeros((1, 256), np.float32), getattr(_core.DType, name))
    with pytest.raises(ValueError, match=f"argument 'dtype': {name} is read from GGUF"):
        edgeformer.load(str(tmp_path), dtype=name)


def random_blocks(name: str, rows: int, blocks: int) -> np.ndarray:
    """Random bytes with finite f16 scales: every bit pattern of the quantized values is exercised."""
    n, nbytes = BLOCK[name]
    raw = rng.integers(0, 256, size=(rows, blocks, nbytes), dtype=np.uint8)
    for off in F16_AT[name]:
        d = (rng.standard_normal((rows, blocks)) * 0.01).astype(np.float16)
        raw[:, :, off : off + 2] = d.view(np.uint8).reshape(rows, blocks, 2)
    return raw.reshape(rows, blocks * nbytes)


@pytest.mark.parametrize("name", list(TYPES))
def test_dequantize_bit_identical_to_gguf(name):
    n, _ = BLOCK[name]
    raw = random_blocks(name, 7, 3)
    ref = dequantize(raw, TYPES[name]).astype(np.float32)
    for isa in ISAS:
        ours = _core.ops.to_f32(raw, getattr(_core.DType, name), isa=isa)
        assert ours.shape == (7, 3 * n)
        np.testing.assert_array_equal(ours.view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("name", GGUF_QUANTIZERS)
def test_quantize_bit_identical_to_gguf(name):
    x = (rng.standard_normal((5, 256)) * rng.uniform(0.01, 3, (5, 1))).astype(np.float32)
    x[0, :32] = 0  # an all-zero block
    ours = _core.ops.quantize(x, getattr(_core.DType, name))
    np.testing.assert_array_equal(ours, quantize(x, TYPES[name]))


@pytest.mark.parametrize("name", list(TYPES))
def test_quantize_roundtrip_error(name):
    x = rng.standard_normal((16, 512)).astype(np.float32)
    back = dequantize(_core.ops.quantize(x, getattr(_core.DType, name)), TYPES[name])
    nmse = float(((back - x) ** 2).sum() / (x**2).sum())
    # about 4x less per bit: 8-bit ~1e-4, 6-bit ~1e-3, 4-bit ~1e-2, 2-bit ~1e-1 (gguf-py reads our blocks: the
    # layout is llama.cpp's)
    assert nmse < {"q8_0": 1e-4, "q6_k": 2e-3, "q5_k": 4e-3, "q5_1": 4e-3, "q5_0": 4e-3, "q4_k": 1.5e-2,
                   "q4_1": 1.5e-2, "q4_0": 1.5e-2, "iq4_nl": 1.5e-2, "iq4_xs": 1.5e-2, "q3_k": 6e-2,
                   "q2_k": 0.2}[name], nmse


# q4_1 / q5_1 follow gguf-py's reference quantizers bit for bit, whose minimum survives a scale of 0 (the
# block decodes to its minimum: llama.cpp's behaviour, kept)
@pytest.mark.parametrize("name", [n for n in TYPES if n not in ("q4_1", "q5_1")])
def test_tiny_weights_never_worse_than_zeros(name):
    """Scales that underflow f16: a block may come out as zeros, never as something farther from the weights
    (the K-quants' minimums once survived a scale of 0 and decoded every value to -dmin * m: error 2.3x)."""
    for std in (1e-7, 3e-6, 1e-5, 3e-5):
        x = (rng.standard_normal((4, 512)) * std).astype(np.float32)
        back = _core.ops.to_f32(_core.ops.quantize(x, getattr(_core.DType, name)), getattr(_core.DType, name))
        assert float(((back - x) ** 2).sum() / (x**2).sum()) <= 1.0 + 1e-6, (name, std)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", list(TYPES))
def test_quantized_matmul(isa, name):
    n, _ = BLOCK[name]
    for T, O, K in ((1, 13, n), (5, 19, 2 * n), (3, 4, 3 * n)):
        w = rng.standard_normal((O, K)).astype(np.float32)
        wq = _core.ops.quantize(w, getattr(_core.DType, name))
        wf = dequantize(wq, TYPES[name]).astype(np.float64)
        x = rng.standard_normal((T, K)).astype(np.float32)
        levels = 2 if name == "q8_0" else 1  # 8-bit weights also multiply the activations' rounding residual
        xq = np.stack([_core.ops.quantize_q8(r, levels) for r in x]).astype(np.float64)  # what the kernel sees
        b = rng.standard_normal(O).astype(np.float32)
        ref = xq @ wf.T + b
        ours = _core.ops.qmatmul(x, wq, getattr(_core.DType, name), b, isa=isa)
        scale = float(np.abs(ref).max())
        assert float(np.abs(ours - ref).max()) <= 1e-5 * scale
        # the SIMD copies agree with the scalar reference: integer sums are exact, and the block-by-block types
        # take the same float steps (bit-identical); q8_0 / q4_0 keep a vector accumulator (float rounding only)
        generic = _core.ops.qmatmul(x, wq, getattr(_core.DType, name), b, isa="generic")
        if name not in ("q8_0", "q4_0"):
            np.testing.assert_array_equal(ours, generic)
        else:
            np.testing.assert_allclose(ours, generic, rtol=0, atol=2e-6 * scale)
        # and 8-bit activations stay close to the float product
        full = x.astype(np.float64) @ wf.T + b
        assert float(np.abs(ours - full).max()) <= 0.03 * float(np.abs(full).max())
