"""Writing safetensors files from NumPy arrays (reading is the C++ reader's job)."""

from __future__ import annotations

import json
import os
from typing import Dict, Optional

import numpy as np

_DTYPES = {
    np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.float64): "F64",
    np.dtype(np.int32): "I32", np.dtype(np.int64): "I64", np.dtype(np.int16): "I16",
    np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL",
}


def save_safetensors(tensors: Dict[str, np.ndarray], path: str, metadata: Optional[Dict[str, str]] = None,
                     bf16: tuple = ()) -> None:
    """Writes tensors to path (atomically: a temporary file renamed into place).

    Names listed in bf16 hold uint16 arrays of bfloat16 bits and are stored as BF16.
    """
    header: Dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    blobs = []
    for name, arr in tensors.items():
        a = np.ascontiguousarray(arr)
        if name in bf16:
            if a.dtype != np.uint16:
                raise ValueError(f"tensor '{name}': bf16 tensors are passed as uint16 bits")
            code = "BF16"
        elif a.dtype in _DTYPES:
            code = _DTYPES[a.dtype]
        else:
            raise ValueError(f"tensor '{name}': unsupported dtype {a.dtype}")
        data = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": code, "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
