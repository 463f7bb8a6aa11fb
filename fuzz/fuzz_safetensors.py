#!/usr/bin/env python3
"""Fuzz the safetensors reader: bytes -> a file -> _core.TensorMap.open_safetensors([path]), then every
tensor is read through its NumPy view.

Allowed: a ValueError. Findings: any other exception; a crash; a tensor whose view disagrees with its
shape, dtype or the bytes the header points at (checked against the reference `safetensors` reader when it
is installed and accepts the file too); the file left mapped or its descriptor open once the map is gone.

    python fuzz/fuzz_safetensors.py --make-seeds          # writes fuzz/corpus/safetensors/
    python fuzz/fuzz_safetensors.py fuzz/corpus/safetensors -max_total_time=60
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from edgeformer import _core
from edgeformer.io import save_safetensors

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

NAME = "safetensors"
PLAIN = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I32": np.int32, "I64": np.int64,
         "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_, "BF16": np.uint16}

try:
    from safetensors import safe_open  # the reference reader, for a differential check
except ImportError:  # pragma: no cover
    safe_open = None


def _reference(path: str):
    """{name: (dtype code, shape, bytes)} from the safetensors library, or None where it rejects the file."""
    if safe_open is None:
        return None
    try:
        out = {}
        with safe_open(path, framework="numpy") as f:
            for n in f.keys():
                sl = f.get_slice(n)
                code = sl.get_dtype()
                shape = list(sl.get_shape())
                if code == "BF16":  # NumPy has no bfloat16: compare shape and dtype only
                    out[n] = (code, shape, None)
                else:
                    out[n] = (code, shape, np.ascontiguousarray(f.get_tensor(n)).tobytes())
        return out
    except Exception:
        return None


def _touch(path: str) -> None:
    tm = _core.TensorMap.open_safetensors([path])
    names = tm.names()
    if len(names) != len(tm) or len(set(names)) != len(names):
        raise common.Finding(f"names() {len(names)} entries, len() {len(tm)}")
    ours = {}
    for n in names:
        if n not in tm:
            raise common.Finding(f"'{n}' in names() but not `in` the map")
        t = tm.get(n)
        repr(t)
        a = t.numpy()
        raw = a.tobytes()  # reads every byte of the view
        code = str(t.dtype).split(".")[-1].upper()
        if list(a.shape) != list(t.shape) or a.nbytes != len(raw) or a.flags.writeable:
            raise common.Finding(f"tensor '{n}': view {a.dtype} {a.shape} writeable={a.flags.writeable} "
                                 f"for {t.dtype} {t.shape}")
        if t.source != path:
            raise common.Finding(f"tensor '{n}': source {t.source!r}, expected {path!r}")
        if a.size and a.dtype != np.dtype(PLAIN.get(code, a.dtype)):
            raise common.Finding(f"tensor '{n}': NumPy dtype {a.dtype} for {code}")
        ours[n] = (code, list(t.shape), raw)
        common.feature("tensor", code, a.ndim, common.bucket(a.size))
        if a.size:  # the first and the last element, as a model would read them
            flat = a.reshape(-1)
            flat[0], flat[-1]
    common.feature("accepted", common.bucket(len(names)))
    ref = _reference(path)
    common.feature("reference accepts", ref is not None)
    if ref is not None:
        if set(ref) != set(ours):
            raise common.Finding(f"tensor names differ from the safetensors library's: {sorted(set(ref) ^ set(ours))[:5]}")
        for n, (code, shape, raw) in ref.items():
            oc, oshape, oraw = ours[n]
            if code != oc or shape != oshape or (raw is not None and raw != oraw):
                raise common.Finding(f"tensor '{n}': {oc} {oshape} here, {code} {shape} in the safetensors library"
                                     + ("" if raw is None or raw == oraw else ", and the bytes differ"))


def check(data: bytes) -> None:
    path = common.scratch("fuzz.safetensors")
    common.write_file(path, data)
    fds = common.open_fds()
    try:
        _touch(path)
    except ValueError as e:
        common.feature(common.error_class(e, path), _reference(path) is not None)
    common.assert_released(path, fds)


def make_seeds(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(0)

    def save(name, tensors, **kw):
        save_safetensors(tensors, os.path.join(out_dir, name), **kw)

    save("one_f32", {"w": rng.standard_normal((2, 3)).astype(np.float32)})
    save("every_dtype", {
        "f32": np.arange(4, dtype=np.float32), "f16": np.arange(3, dtype=np.float16),
        "f64": np.arange(2, dtype=np.float64), "i32": np.arange(3, dtype=np.int32),
        "i64": np.arange(2, dtype=np.int64), "i16": np.arange(3, dtype=np.int16),
        "i8": np.arange(5, dtype=np.int8), "u8": np.arange(7, dtype=np.uint8),
        "bool": np.array([True, False, True]), "bf16": np.array([0x3F80, 0x4000], dtype=np.uint16),
    }, bf16=("bf16",), metadata={"format": "pt"})
    save("shapes", {"scalar": np.array(1.5, np.float32), "empty": np.zeros((0, 4), np.float32),
                    "cube": np.ones((2, 2, 2), np.float16), "vec": np.ones(1, np.int8)})
    save("tiny_llama_layer", {
        "model.embed_tokens.weight": rng.standard_normal((8, 4)).astype(np.float16),
        "model.norm.weight": np.ones(4, np.float32),
        "model.layers.0.self_attn.q_proj.weight": rng.standard_normal((4, 4)).astype(np.float32),
    })
    save("empty_map", {})
    # hand-made headers: unpadded (data at an odd offset), __metadata__ of other types, escapes in names
    hdr = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
           "b\u00e9\\\"": {"dtype": "U8", "shape": [3], "data_offsets": [8, 11]},
           "__metadata__": {"k": "v"}}
    raw = json.dumps(hdr).encode()
    with open(os.path.join(out_dir, "unpadded_header"), "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw + np.arange(2, dtype=np.float32).tobytes() + b"xyz")
    raw = b'{"x": {"dtype": "I8", "shape": [2, 1], "data_offsets": [2, 4]}, "y": {"dtype": "I8", "shape": [], ' \
          b'"data_offsets": [0, 1]}}'
    with open(os.path.join(out_dir, "gaps_and_scalar"), "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw + b"\x01\x02\x03\x04")


if __name__ == "__main__":
    if sys.argv[1:] == ["--make-seeds"]:
        make_seeds(os.path.join(common.CORPUS_DIR, NAME))
    else:
        common.fuzz_main(NAME, check)
