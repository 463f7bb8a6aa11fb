"""GGUF files of the benchmark Llama in llama.cpp's 1- to 3-bit i-quants, made by llama.cpp's own quantizer.

llama_model_quantize refuses IQ1_* and IQ2_* without an importance matrix, and takes one only as a C++ object;
so this script calls ggml's quantizer (ggml_quantize_chunk, from the llama-cpp-python build) on every matrix
itself, with a uniform importance matrix (every column equally important: what the quantizer's search does with
no calibration data). Layer matrices take the type; the token embedding q4_k and the head q6_k (llama.cpp's
low-bit mixes keep them wider too). Metadata and tokenizer as `edgeformer quantize` writes them.

    python benchmarks/make_iquant_files.py /work/bench/1.1b/hf /work/bench/1.1b --types iq2_xxs,iq3_xxs \
        --llama-cpp /work/engines/llama_avx512

Writes lc-<type>.gguf beside the checkpoint. Not a test: llama.cpp is not a test dependency."""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

GGML = {"q4_k": 12, "q6_k": 14, "iq2_xxs": 16, "iq2_xs": 17, "iq3_xxs": 18, "iq1_s": 19, "iq3_s": 21,
        "iq2_s": 22, "iq1_m": 29}


def ggml_lib(llama_cpp_dir):
    lib = ctypes.CDLL(os.path.join(llama_cpp_dir, "llama_cpp", "lib", "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    return lib


def quantize(lib, kind, a, threads):
    """[rows, K] f32 -> llama.cpp's blocks of `kind`, [rows, row bytes] uint8, rows split over threads."""
    import gguf

    a = np.ascontiguousarray(a, dtype=np.float32)
    rows, K = a.shape
    blk, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kind.upper()]]
    out = np.empty((rows, K // blk * nbytes), np.uint8)
    imatrix = np.ones(K, np.float32)
    t = GGML[kind]
    lib.ggml_quantize_init(t)
    step = (rows + threads - 1) // threads

    def part(r0):
        n = min(step, rows - r0)
        lib.ggml_quantize_chunk(t, a.ctypes.data, out.ctypes.data, r0 * K, n, K, imatrix.ctypes.data)

    with ThreadPoolExecutor(threads) as ex:  # the calls release the GIL (ctypes)
        list(ex.map(part, range(0, rows, step)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("hf")
    ap.add_argument("out_dir")
    ap.add_argument("--types", default="iq2_xxs,iq2_xs,iq2_s,iq3_xxs,iq3_s,iq1_s,iq1_m")
    ap.add_argument("--llama-cpp", required=True, help="folder with an installed llama_cpp package")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    import edgeformer
    from edgeformer import _core, gguf_io

    lib = ggml_lib(a.llama_cpp)
    write = gguf_io._write_file
    for kind in a.types.split(","):
        if kind not in GGML or kind in ("q4_k", "q6_k"):
            ap.error(f"--types: {kind!r} is not an i-quant ({', '.join(k for k in GGML if k.startswith('iq'))})")
        dst = os.path.join(a.out_dir, f"lc-{kind}.gguf")
        if os.path.exists(dst):
            print(f"{kind}: exists ({dst})")
            continue
        t0 = time.time()

        def with_iquants(out_path, arch, meta, tensors, kind=kind):
            for g, (w, dt) in list(tensors.items()):
                if w.ndim != 2 or w.shape[1] % 256:
                    continue
                k = "q4_k" if g == "token_embd.weight" else "q6_k" if g == "output.weight" else kind
                tensors[g] = (quantize(lib, k, w, a.threads), getattr(_core.DType, k))
            meta.pop("general.file_type", None)
            return write(out_path, arch, meta, tensors)

        gguf_io._write_file = with_iquants
        try:
            edgeformer.quantize(a.hf, dst, "f32")
        finally:
            gguf_io._write_file = write
        print(f"{kind}: {time.time() - t0:.0f} s -> {dst} ({os.path.getsize(dst) / 2**20:.0f} MiB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
