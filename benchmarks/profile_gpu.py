"""Where a decode step's and a prompt's time goes on the GPU: every kernel's total time, from torch.profiler
(CUPTI sees every kernel of the process, ours too), for random-weight Llama shapes (bench_gpu.py's).

    python benchmarks/profile_gpu.py [--models 1.1b,7b] [--dtypes f16,q4_0] [--steps 16] [--out profile.txt]

Each model: wall time of `--steps` decode steps (CUDA graphs off, so each kernel is named) against the sum of
their kernels' times (the gap is host time and launch gaps), and the kernels by total time; then one prompt.
Needs torch with CUDA (only for its profiler).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_gpu  # noqa: E402

from edgeformer import _core  # noqa: E402


def kernel_table(prof, top: int) -> tuple[float, str]:
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None)
        if t is None:
            t = getattr(e, "cuda_time_total", 0.0)
        if t and e.device_type.name == "CUDA":
            rows.append((t, e.count, e.key))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    lines = [f"{'us total':>10} {'calls':>6} {'us/call':>8}  kernel"]
    for t, n, k in rows[:top]:
        lines.append(f"{t:10.0f} {n:6d} {t / max(n, 1):8.1f}  {k[:110]}")
    return total, "\n".join(lines)


def main(argv=None) -> int:
    import torch
    from torch.profiler import ProfilerActivity, profile

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="1.1b,7b")
    ap.add_argument("--dtypes", default="f16,q4_0")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--top", type=int, default=18)
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    if torch.cuda.is_available():
        torch.cuda.init()
    acts = [ProfilerActivity.CUDA] if torch.cuda.is_available() else [ProfilerActivity.CPU]  # CPU: a dry run
    out = []

    def say(s: str) -> None:
        print(s, flush=True)
        out.append(s)

    for shape in a.models.split(","):
        for dtype in a.dtypes.split(","):
            dev, c, _ = bench_gpu.build(shape, dtype, a.prompt + a.steps + 32, os.cpu_count() or 1)
            ids = np.random.default_rng(1).integers(2, c["vocab_size"], size=a.prompt).astype(np.int32)
            opts = _core.SamplerOptions()
            opts.temperature = 0.0
            sampler = _core.Sampler(opts)
            hist = np.zeros(0, np.int32)
            dev.set_graphs(False)
            dev.reset()
            dev.prefill(ids)
            tok = dev.step(ids[-1:], sampler, hist)
            for _ in range(3):
                tok = dev.step(np.array([tok], np.int32), sampler, hist)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            with profile(activities=acts) as prof:
                t0 = time.perf_counter()
                for _ in range(a.steps):
                    tok = dev.step(np.array([tok], np.int32), sampler, hist)
                wall = time.perf_counter() - t0
            total, table = kernel_table(prof, a.top)
            say(f"== {shape} {dtype}: decode {1e3 * wall / a.steps:.3f} ms/step wall (under the profiler), "
                f"kernels {total / 1e3 / a.steps:.3f} ms/step")
            say(table)
            dev.reset()
            dev.prefill(ids)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            with profile(activities=acts) as prof:
                dev.reset()
                t0 = time.perf_counter()
                dev.prefill(ids)
                wall = time.perf_counter() - t0
            total, table = kernel_table(prof, 10)
            say(f"== {shape} {dtype}: prompt of {a.prompt}: {1e3 * wall:.2f} ms wall, kernels {total / 1e3:.2f} ms")
            say(table)
            del dev
    if a.out:
        with open(a.out, "w") as f:
            f.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
