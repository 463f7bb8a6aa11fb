#!/usr/bin/env python3
"""Resident memory while generating from a GGUF file, against the budget: file size + KV cache + 10%.

    python benchmarks/bench_memory.py [--shape 1.1b] [--type q4_0] [--workdir /tmp/ef-mem]

Makes a random-weight Llama of the given shape (f16 safetensors, with tools/make_tiny_llama.py), writes it
as GGUF with `edgeformer quantize`, then in a fresh process loads the GGUF, generates, and reads the peak
resident set (getrusage) and the current one (/proc/self/statm). The interpreter's own baseline (Python,
NumPy, tokenizers before the model is loaded) is reported separately.
"""

import argparse
import json
import os
import subprocess
import sys

SHAPES = {
    "110m": dict(hidden=768, layers=12, heads=12, kv_heads=12, ffn=2048, vocab=32000),
    "1.1b": dict(hidden=2048, layers=22, heads=32, kv_heads=4, ffn=5632, vocab=32000),
}

CHILD = r"""
import json, os, resource, sys
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
import numpy, tokenizers, edgeformer
base = rss()
m = edgeformer.load(sys.argv[1], max_context=int(sys.argv[2]))
r = m.generate("The edge of the", max_new_tokens=int(sys.argv[3]), temperature=0, ignore_eos=True)
s = m.spec
kv = 2 * s.n_layers * s.n_kv_heads * s.head_dim * m.max_context * (2 if m._core.kv_dtype == "f16" else 4)
print(json.dumps({"baseline": base, "rss_now": rss(), "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "kv_cache": kv, "tokens": len(r.token_ids), "decode_tok_s": r.decode_tokens_per_s}))
"""


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="1.1b", choices=list(SHAPES))
    p.add_argument("--type", default="q4_0")
    p.add_argument("--workdir", default="/tmp/ef-mem")
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--new", type=int, default=32)
    a = p.parse_args()
    src = os.path.join(a.workdir, f"llama-{a.shape}")
    gguf = os.path.join(a.workdir, f"llama-{a.shape}-{a.type}.gguf")
    here = os.path.dirname(os.path.abspath(__file__))
    if not os.path.exists(os.path.join(src, "model.safetensors")):
        sh = SHAPES[a.shape]
        cmd = [sys.executable, os.path.join(here, "..", "tools", "make_tiny_llama.py"), src, "--dtype", "float16"]
        for k, v in sh.items():
            cmd += [f"--{k.replace('_', '-')}", str(v)]
        subprocess.run(cmd, check=True)
    if not os.path.exists(gguf):
        subprocess.run([sys.executable, "-m", "edgeformer", "quantize", src, gguf, "--type", a.type], check=True)
    out = subprocess.run([sys.executable, "-c", CHILD, gguf, str(a.context), str(a.new)], check=True,
                         capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    size = os.path.getsize(gguf)
    budget = (size + r["kv_cache"]) * 1.10
    mib = lambda x: f"{x / 2**20:8.1f} MiB"  # noqa: E731
    print(f"GGUF {a.type} {a.shape}: {mib(size)}; KV cache ({a.context} positions): {mib(r['kv_cache'])}")
    print(f"budget (file + KV + 10%):        {mib(budget)}")
    print(f"interpreter baseline (before load): {mib(r['baseline'])}")
    print(f"resident while generating:       {mib(r['rss_now'])}  (model alone: {mib(r['rss_now'] - r['baseline'])})")
    print(f"peak resident:                   {mib(r['peak'])}  (model alone: {mib(r['peak'] - r['baseline'])})")
    print(f"decode: {r['decode_tok_s']:.1f} tok/s")
    print(json.dumps({"file": size, "budget": budget, **r}))


if __name__ == "__main__":
    main()
