"""FP8 checkpoints (e4m3 weights with scales: DeepSeek-V3 / R1, Kimi, Qwen3-*-FP8, GLM-4.5-FP8, and
compressed-tensors' FP8 models): each matrix dequantized at load to bf16, the type its scale-free values and most
checkpoints' own weights have, from which load(dtype=...) converts or quantizes as from any bf16 checkpoint.

Scales, by the tensor beside the weight:
  ``<name>_scale_inv`` [ceil(rows / b0), ceil(columns / b1)]: one per block of the config's
  quantization_config.weight_block_size (default 128 x 128), the weight = fp8 * scale_inv (DeepSeek's layout);
  ``<name minus "weight">weight_scale`` [rows, 1], [rows] or a scalar: one per row or per tensor
  (compressed-tensors)."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np


def e4m3_table() -> np.ndarray:
    """float32 value of each e4m3 byte (sign, 4 exponent bits biased by 7, 3 mantissa bits; no infinities,
    0x7f / 0xff are NaN)."""
    b = np.arange(256, dtype=np.uint32)
    sign = np.where(b & 0x80, -1.0, 1.0)
    e, m = (b >> 3) & 0xF, (b & 7).astype(np.float64)
    v = np.where(e == 0, m / 8 * 2.0**-6, (1 + m / 8) * np.exp2(e.astype(np.float64) - 7))
    v = sign * v
    v[(b & 0x7F) == 0x7F] = np.nan
    return v.astype(np.float32)


_TABLE = e4m3_table()


def scale_name(weight: str, names) -> Optional[str]:
    """The scale tensor of an FP8 weight, by the checkpoint's convention (see the module's doc), or None."""
    for cand in (weight + "_scale_inv", weight[: -len("weight")] + "weight_scale" if weight.endswith("weight") else None):
        if cand and cand in names:
            return cand
    return None


def dequantize(raw: np.ndarray, scale: np.ndarray, block: Sequence[int], what: str) -> np.ndarray:
    """FP8 bytes [rows, columns] times their scales -> float32."""
    if raw.ndim != 2:
        raise ValueError(f"{what}: expected an FP8 matrix, got shape {list(raw.shape)}")
    w = _TABLE[raw]
    rows, cols = raw.shape
    s = np.asarray(scale, dtype=np.float32)
    b0, b1 = int(block[0]), int(block[1])
    blocks = (-(-rows // b0), -(-cols // b1))
    if s.shape == blocks and (rows > b0 or cols > b1 or s.ndim == 2):  # one per block (a block may span it all)
        return w * np.repeat(np.repeat(s, b0, axis=0)[:rows], b1, axis=1)[:, :cols]
    if s.size == 1:
        return w * s.reshape(())
    if s.shape in ((rows, 1), (rows,)):  # one per row
        return w * s.reshape(rows, 1)
    raise ValueError(f"{what}: expected block scales of shape {list(blocks)} ({b0} x {b1} blocks), one per row "
                     f"([{rows}, 1]) or one, got {list(s.shape)}")


def bf16_bits(f: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), rounded to nearest even."""
    u = np.ascontiguousarray(f, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


_LAST: dict = {}  # the last tensor dequantized (DeepSeek's kv_b_proj is cut into 2 x heads matrices in a row)


def as_bf16(checkpoint, tensor, name: str, block: Sequence[int]) -> Tuple[np.ndarray, "object"]:
    """An FP8 checkpoint tensor as bf16 bits and its dtype; ValueError naming it where its scale is missing."""
    from . import _core

    key = (id(checkpoint), name, tuple(block))
    if key in _LAST:
        return _LAST[key], _core.DType.bf16
    scale = scale_name(name, checkpoint)
    if scale is None:
        raise ValueError(f"tensor '{name}' is FP8 without a scale ('{name}_scale_inv' or 'weight_scale')")
    s = checkpoint.get(scale)
    sv = s.numpy()
    if s.dtype == _core.DType.bf16:
        sv = (sv.astype(np.uint32) << 16).view(np.float32)
    out = bf16_bits(dequantize(tensor.numpy(), sv, block, f"tensor '{name}'"))
    _LAST.clear()
    _LAST[key] = out
    return out, _core.DType.bf16


def forget() -> None:
    """Drops the last dequantized tensor (after a load)."""
    _LAST.clear()
