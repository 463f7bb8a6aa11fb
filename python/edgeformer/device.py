"""The CUDA device: whether this build and machine have one, the device argument of load() and the CLI, and moving a
loaded model's stacks onto it (the weights uploaded once; host copies dropped)."""

from __future__ import annotations

import os
import sys
from typing import Any, List, Optional

from . import _core


def _cublas_candidates() -> str:
    """The libcublas files of the nvidia-cublas wheels on sys.path (PyTorch's CUDA builds install them), newest
    first and ':'-separated, for prompt GEMMs on the GPU; EDGEFORMER_CUBLAS=<path> names one instead."""
    env = os.environ.get("EDGEFORMER_CUBLAS", "")
    if env and env != "0":
        return env
    found: List[str] = []
    for base in sys.path:
        for rel in ("nvidia/cu13/lib/libcublas.so.13", "nvidia/cublas/lib/libcublas.so.12",
                    "nvidia/cu12/lib/libcublas.so.12"):
            path = os.path.join(base, rel)
            if base and os.path.isfile(path) and path not in found:
                found.append(path)
    return ":".join(found)


if _core.cuda_built():  # only stored: the library is opened at the first prompt on a GPU
    _core.cuda_set_blas_path(_cublas_candidates())


def cuda_available() -> bool:
    """True when this build has the CUDA path (EF_CUDA=ON) and at least one CUDA device is usable."""
    return bool(_core.cuda_built()) and _core.cuda_device_count() > 0


def parse_device(device: Any) -> Optional[int]:
    """The CUDA device index of a device argument ("cuda" / "cuda:N"), or None for "cpu"."""
    if not isinstance(device, str):
        raise ValueError(f"argument 'device' must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    d = device.strip().lower()
    if d == "cpu":
        return None
    head, sep, num = d.partition(":")
    if head != "cuda" or (sep and not (num.isdigit() and num.isascii())):
        raise ValueError(f"argument 'device' must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    index = int(num) if sep else 0
    if not _core.cuda_built():
        raise RuntimeError(f"device={device!r}: this edgeformer was built without CUDA; build it with "
                           "pip install . -C cmake.define.EF_CUDA=ON (needs the CUDA toolkit 12 or newer)")
    n = _core.cuda_device_count()
    if n == 0:
        raise RuntimeError(f"device={device!r}: no CUDA device is usable here (no NVIDIA driver, or no GPU visible "
                           "to this process)")
    if index >= n:
        raise ValueError(f"argument 'device': cuda:{index} does not exist ({n} CUDA device{'s' if n > 1 else ''})")
    return index


def to_device(model, index: int, kv_dtype: Optional[str] = None):
    """Moves a loaded model's stacks to CUDA device `index` (the host copies are dropped)."""
    from .seq2seq import Seq2SeqModel

    model._core = _core.CudaModel(model._core, index, kv_dtype or "f16")
    if isinstance(model, Seq2SeqModel):
        model._encoder = _core.CudaModel(model._encoder, index, kv_dtype or "f16")
        model._make_decoder = model._core.fork  # beams share the uploaded weights
        model._beams = []
    model.device = f"cuda:{index}"
    return model
