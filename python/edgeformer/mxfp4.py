"""MXFP4 (OCP microscaling: blocks of 32 e2m1 values sharing one power-of-two scale), as the released gpt-oss
checkpoints store their experts, read exactly as q5_0.

An e2m1 value doubled is an integer in [-12, 12], and the block's scale 2^(e - 127) halved is a power of two that
an f16 holds exactly (for the scales real weights have: 2^-24 .. 2^15): so q5_0's d * (q - 16), with d = 2^(e - 128)
and q = 2 * value + 16, is every weight bit for bit, at 5.5 bits a weight (MXFP4: 4.25) and with the q5_0 kernels.

Hugging Face's layout (``*_blocks`` [experts, rows, K / 32, 16], ``*_scales`` [experts, rows, K / 32]): byte j of a
block holds elements 2j (low nibble) and 2j + 1 (high). ggml's (GGUF type MXFP4): the low nibbles are elements
0..15, the high ones 16..31.
"""

from __future__ import annotations

from typing import Tuple, Union

import numpy as np

from . import _core
from .archs import Derived

# e2m1 values doubled, by nibble (sign in bit 3)
KVALUES2 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.int8)


def mxfp4_to_q5_0(nibbles: np.ndarray, scales: np.ndarray, interleaved: bool, what: str = "MXFP4 tensor") -> np.ndarray:
    """nibbles: uint8 [..., 16] (one block's 32 values), scales: uint8 [...] (E8M0 exponents) -> q5_0 blocks,
    uint8 [..., 22]. interleaved: Hugging Face's element order (else ggml's)."""
    if nibbles.dtype != np.uint8 or scales.dtype != np.uint8 or nibbles.shape[-1:] != (16,) or \
            nibbles.shape[:-1] != scales.shape:
        raise ValueError(f"{what}: expected uint8 blocks [..., 16] and uint8 scales [...] of the same blocks, got "
                         f"{nibbles.dtype} {list(nibbles.shape)} and {scales.dtype} {list(scales.shape)}")
    exp = scales.astype(np.int32) - 128
    if exp.size and int(exp.max()) > 15:
        raise ValueError(f"{what}: a block scale of 2^{int(exp.max()) + 1} exceeds what q5_0's f16 scale holds")
    lo, hi = KVALUES2[nibbles & 15], KVALUES2[nibbles >> 4]
    v = np.empty(nibbles.shape[:-1] + (32,), np.int8)
    if interleaved:
        v[..., 0::2], v[..., 1::2] = lo, hi
    else:
        v[..., :16], v[..., 16:] = lo, hi
    q = (v + 16).astype(np.uint8)  # 4 .. 28: five bits
    out = np.empty(nibbles.shape[:-1] + (22,), np.uint8)
    # (scales below 2^-24 round to f16's zero: such weights are zero to f16 anyway)
    out[..., 0:2] = np.ldexp(np.float32(1), exp).astype(np.float16)[..., None].view(np.uint8)
    bits = ((q >> 4) & 1).astype(np.uint32) << np.arange(32, dtype=np.uint32)
    out[..., 2:6] = np.bitwise_or.reduce(bits, axis=-1)[..., None].astype("<u4").view(np.uint8)
    out[..., 6:22] = (q[..., :16] & 15) | ((q[..., 16:] & 15) << 4)
    return out


class Mxfp4Rows(Derived):
    """One expert's matrix from a Hugging Face MXFP4 checkpoint (``{name}_blocks`` and ``{name}_scales``, experts
    stacked), optionally some of its rows (gpt-oss's gate and up rows interleave), as q5_0 blocks."""

    def __init__(self, name: str, index: int, rows: Union[slice, None] = None):
        super().__init__(name + "_blocks", rows, index=index)
        self.scales = name + "_scales"

    def build(self, checkpoint) -> Tuple[np.ndarray, "_core.DType", str]:
        b, s = checkpoint.get(self.src), checkpoint.get(self.scales)
        blocks, scales = b.numpy(), s.numpy()
        if blocks.ndim != 4 or scales.ndim != 3 or not 0 <= self.index < blocks.shape[0]:
            raise ValueError(f"tensors '{self.src}' / '{self.scales}': expected [experts, rows, blocks, 16] and "
                             f"[experts, rows, blocks] with an expert {self.index}, got {list(b.shape)} and "
                             f"{list(s.shape)}")
        blocks, scales = blocks[self.index], scales[self.index]
        if self.rows is not None:
            blocks, scales = blocks[self.rows], scales[self.rows]
        q = mxfp4_to_q5_0(blocks, scales, interleaved=True, what=f"tensor '{self.src}'")
        return np.ascontiguousarray(q.reshape(q.shape[0], -1)), _core.DType.q5_0, b.source


def hf_blocks_from_matrix(w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """A float matrix [rows, K] rounded to MXFP4 in Hugging Face's layout: (blocks uint8 [rows, K / 32, 16],
    scales uint8 [rows, K / 32]), with gguf-py's quantizer (the scale: the block's largest magnitude / 4, rounded
    down to a power of two). For tests and tools that make MXFP4 checkpoints."""
    import gguf.quants

    rows, k = w.shape
    g = gguf.quants.quantize(np.ascontiguousarray(w, np.float32), gguf.GGMLQuantizationType.MXFP4)
    g = g.reshape(rows, k // 32, 17)
    e, qs = g[..., 0], g[..., 1:]
    n = np.concatenate([qs & 15, qs >> 4], axis=-1)  # ggml's element order: nibble of element i
    return (n[..., 0::2] | (n[..., 1::2] << 4)).astype(np.uint8), e.astype(np.uint8)
