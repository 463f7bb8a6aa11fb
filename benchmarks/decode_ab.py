"""Decode speed of edgeformer and llama.cpp on one GGUF file, measured alternately in fresh processes: on a machine
whose memory bandwidth moves between runs (bench_engines.py reports 33-84 GB/s before its decodes here), runs of
the two engines interleaved compare them at the same moments.

    python benchmarks/decode_ab.py FILE.gguf --runs 5 --llama-cpp /path/to/llama_cpp_dir [--threads 2]

Each run: load, a 64-token prompt, then 128 greedy tokens one at a time; tokens/s of those 128. Prints every run and
the medians, and with --out writes them as a markdown table."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

_EDGEFORMER = """
import time, edgeformer
m = edgeformer.load({path!r}, threads={threads}, max_context=512)
ids = list(range(3, 67))
m.generate(ids, max_new_tokens=2, temperature=0, ignore_eos=True)
t = time.perf_counter()
m.generate(ids, max_new_tokens={new}, temperature=0, ignore_eos=True)
print({new} / (time.perf_counter() - t))
"""
_LLAMA_CPP = """
import sys, time
sys.path.insert(0, {lc!r})
import llama_cpp, numpy as np
m = llama_cpp.Llama(model_path={path!r}, n_ctx=512, n_threads={threads}, n_threads_batch={threads}, verbose=False)
m.eval(list(range(3, 67)))
t = time.perf_counter()
for _ in range({new}):
    m.eval([int(np.argmax(m.scores[m.n_tokens - 1]))])
print({new} / (time.perf_counter() - t))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--llama-cpp", required=True, help="folder with an installed llama_cpp package")
    ap.add_argument("--out", help="append the result to this markdown file")
    a = ap.parse_args()
    fmt = dict(path=os.path.abspath(a.path), threads=a.threads, new=a.new, lc=a.llama_cpp)
    code = {"edgeformer": _EDGEFORMER.format(**fmt), "llama.cpp": _LLAMA_CPP.format(**fmt)}
    runs = {e: [] for e in code}
    for _ in range(a.runs):
        for e, c in code.items():
            out = subprocess.run([sys.executable, "-c", c], capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{e} failed:\n{out.stderr[-2000:]}")
            runs[e].append(float(out.stdout.split()[-1]))
    med = {e: statistics.median(v) for e, v in runs.items()}
    row = (f"| {os.path.basename(a.path)} | {a.threads} | "
           + " | ".join(f"{med[e]:.1f} ({', '.join(f'{v:.1f}' for v in runs[e])})" for e in code)
           + f" | {med['edgeformer'] / med['llama.cpp']:.2f}x |")
    print(row)
    if a.out:
        new = not os.path.exists(a.out)
        with open(a.out, "a") as f:
            if new:
                f.write("Decode tok/s (128 greedy tokens after a 64-token prompt), the engines alternating in fresh "
                        "processes; median (each run)\n\n| file | threads | edgeformer | llama.cpp | ratio |\n"
                        "|---|---|---|---|---|\n")
            f.write(row + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
