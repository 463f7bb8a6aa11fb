"""A corrupt or hostile GGUF file gets a ValueError naming the file and the problem: never a crash, an
out-of-bounds read or a huge allocation."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from edgeformer import _core


def s(text: str) -> bytes:
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def kv_u32(key, v):
    return s(key) + struct.pack("<II", 4, v)


def build(version=3, kvs=(), tensors=(), data=b"", n_tensors=None, n_kv=None, align=32, magic=b"GGUF"):
    """tensors: (name, dims innermost-first, ggml type, offset)."""
    out = magic + struct.pack("<I", version)
    out += struct.pack("<QQ", len(tensors) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv)
    for kv in kvs:
        out += kv
    for name, dims, typ, off in tensors:
        out += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", typ, off)
    out += b"\0" * (-len(out) % align)
    return out + data


GOOD = build(kvs=[kv_u32("llama.block_count", 1)], tensors=[("w", [4, 2], 0, 0)], data=np.ones(8, np.float32).tobytes())


def open_bytes(tmp_path, raw: bytes):
    p = tmp_path / "m.gguf"
    p.write_bytes(raw)
    return _core.TensorMap.open_gguf(str(p)), str(p)


def test_good_file_reads(tmp_path):
    (tm, meta, order, version), _ = open_bytes(tmp_path, GOOD)
    assert meta["llama.block_count"] == 1 and order == ["w"] and version == 3
    np.testing.assert_array_equal(tm.get("w").numpy(), np.ones((2, 4), np.float32))


CASES = {
    "empty file": (b"", "wrong magic"),
    "wrong magic": (b"GGML" + GOOD[4:], "wrong magic"),
    "version 1": (build(version=1), "version 1 is not supported"),
    "version 4": (build(version=4), "version 4 is not supported"),
    "big-endian": (b"GGUF" + struct.pack(">I", 3) + GOOD[8:], "big-endian"),
    "truncated header": (GOOD[:30], "does not fit the file"),
    "truncated key": (GOOD[:37], "runs past the end"),
    "truncated data": (GOOD[:-4], "runs past the end"),
    "huge tensor count": (build(n_tensors=2**60), "tensor count"),
    "huge metadata count": (build(n_kv=2**62), "metadata count"),
    "string length past end": (GOOD[:24] + struct.pack("<Q", 2**40) + GOOD[32:], "string length"),
    "huge array": (build(kvs=[s("a") + struct.pack("<IIQ", 9, 4, 2**61)]), "does not fit"),
    "unknown value type": (build(kvs=[s("a") + struct.pack("<I", 99) + b"\0" * 8]), "unknown value type 99"),
    "unknown array type": (build(kvs=[s("a") + struct.pack("<IIQ", 9, 77, 1)]), "unknown array element type"),
    "bad bool": (build(kvs=[s("a") + struct.pack("<IB", 7, 5)]), "bool value"),
    "deep arrays": (build(kvs=[s("a") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 6 + struct.pack("<IQI", 4, 1, 0)]),
                    "nested too deep"),
    "unknown tensor type": (build(tensors=[("w", [32], 99, 0)], data=b"\0" * 64), "GGML type 99 is not supported"),
    "mxfp4 truncated": (build(tensors=[("w", [256], 39, 0)], data=b"\0" * 64), "runs past the end"),
    "mxfp4 partial block": (build(tensors=[("w", [20], 39, 0)], data=b"\0" * 64), "not whole mxfp4 blocks"),
    "offset past end": (build(tensors=[("w", [4], 0, 2**40)], data=b"\0" * 16), "runs past the end"),
    "misaligned data": (build(tensors=[("w", [4], 0, 4)], data=b"\0" * 64), "not aligned"),
    "zero dims": (build(tensors=[("w", [], 0, 0)]), "0 dimensions"),
    "five dims": (build(tensors=[("w", [1, 1, 1, 1, 1], 0, 0)], data=b"\0" * 4), "5 dimensions"),
    "huge dimension": (build(tensors=[("w", [2**62], 0, 0)]), "dimension too large"),
    "partial block": (build(tensors=[("w", [20], 8, 0)], data=b"\0" * 64), "not whole q8_0 blocks"),
    "bad alignment": (build(kvs=[kv_u32("general.alignment", 3)]), "power of two"),
    "duplicate tensor": (build(tensors=[("w", [4], 0, 0), ("w", [4], 0, 32)], data=b"\0" * 64), "twice"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_gguf_is_a_clear_error(tmp_path, case):
    raw, message = CASES[case]
    p = tmp_path / "bad.gguf"
    p.write_bytes(raw)
    with pytest.raises(ValueError) as e:
        _core.TensorMap.open_gguf(str(p))
    assert str(p) in str(e.value) and message in str(e.value), str(e.value)


def test_every_truncation_of_a_valid_file_is_an_error(tmp_path):
    """Cut a valid file at every length: each is rejected cleanly (or, past the header, reads a prefix)."""
    p = tmp_path / "cut.gguf"
    for n in range(len(GOOD)):
        p.write_bytes(GOOD[:n])
        with pytest.raises(ValueError):
            _core.TensorMap.open_gguf(str(p))
