"""Checkpoint files: finding a directory's safetensors (or fetching a hub id), and writing safetensors files from
NumPy arrays (reading them is the C++ reader's job)."""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

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


def find_weight_files(model_dir: str) -> List[str]:
    """The safetensors files of a checkpoint directory: its index's shards, model.safetensors, or every *.safetensors."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        from .tokenizer import _read_json  # (bad JSON as a ValueError naming the file)

        data = _read_json(index)
        wm = data.get("weight_map")
        if not isinstance(wm, dict) or not wm:
            raise ValueError(f"{index}: missing or empty 'weight_map'")
        files = sorted(set(wm.values()))
        for f in files:
            if not isinstance(f, str) or os.path.basename(f) != f:
                raise ValueError(f"{index}: bad shard file name {f!r}")
            if not os.path.exists(os.path.join(model_dir, f)):
                raise ValueError(f"{index}: shard '{f}' is missing from {model_dir}")
        return [os.path.join(model_dir, f) for f in files]
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.exists(single):
        return [single]
    found = sorted(f for f in os.listdir(model_dir) if f.endswith(".safetensors"))
    if found:
        return [os.path.join(model_dir, f) for f in found]
    if any(f.endswith(".bin") or f.endswith(".pt") for f in os.listdir(model_dir)):
        raise ValueError(f"{model_dir}: only PyTorch pickle weights found; edgeformer reads safetensors "
                         "(convert with transformers: model.save_pretrained(dir, safe_serialization=True))")
    raise ValueError(f"{model_dir}: no *.safetensors weights found")


def resolve_checkpoint(path_or_hub_id: str) -> str:
    """A checkpoint directory, or a hub id fetched with huggingface_hub (its json, safetensors and tokenizer files)."""
    if os.path.isdir(path_or_hub_id):
        return path_or_hub_id
    if os.path.exists(path_or_hub_id):
        raise ValueError(f"{path_or_hub_id}: expected a checkpoint directory (config.json + *.safetensors)")
    looks_like_hub = path_or_hub_id.count("/") == 1 and not path_or_hub_id.startswith((".", "/"))
    if not looks_like_hub:
        raise ValueError(f"{path_or_hub_id}: no such directory")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ValueError(f"{path_or_hub_id}: not a local directory; to fetch it from the Hugging Face Hub, "
                         "pip install huggingface_hub (or pip install 'edgeformer[hub]')") from None
    return snapshot_download(path_or_hub_id, allow_patterns=["*.json", "*.safetensors", "*.jinja", "tokenizer*"])
