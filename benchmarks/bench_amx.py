#!/usr/bin/env python3
"""Prompts on Intel AMX: edgeformer's `amx` kernels against its AVX-512 ones (`avx512bf16`) and PyTorch's bf16
(oneDNN, which runs bf16 products on AMX where the CPU has it), on one random Llama checkpoint, in one run.

    python benchmarks/bench_amx.py [--size 1.1b] [--dtypes bf16,int8,q8_0,q4_0,q4_k] [--prompts 16,128,512]
                                   [--threads 2] [--repeat 3] [--out benchmarks/results/amx-1.1b]

The checkpoint is benchmarks/make_checkpoints.py's (f16 values, converted at load by both engines). Each
edgeformer dtype is loaded once and run under each ISA in turn (the kernel table is process-wide: set_isa), the
rounds alternating between the ISAs and PyTorch so that the machine's drift hits all alike. A prompt is timed to its
last position's logits, as bench_engines.py times it. Reported: the median tokens/s and each row's ratio to
PyTorch bf16 and to edgeformer's AVX-512 kernels of the same dtype. Needs a CPU with AMX (its `amx` ISA).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1.1b")
    ap.add_argument("--dtypes", default="bf16,int8,q8_0,q4_0,q4_k")
    ap.add_argument("--prompts", default="16,128,512")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where the checkpoint is (made there if missing)")
    ap.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    a = ap.parse_args()

    import torch
    import transformers

    import edgeformer
    import make_checkpoints

    if "amx" not in edgeformer.cpu_info()["supported_isas"]:
        print("this CPU (or this build) has no AMX kernels", file=sys.stderr)
        return 1
    root = a.dir or os.path.join(tempfile.gettempdir(), f"bench_amx_{a.size}")
    if not os.path.exists(os.path.join(root, "config.json")):
        make_checkpoints.make_hf(root, make_checkpoints.SIZES[a.size])
    prompts = [int(p) for p in a.prompts.split(",")]
    rng = np.random.default_rng(0)
    ids = {T: rng.integers(2, 32000, T).tolist() for T in prompts}

    torch.set_num_threads(a.threads)
    tm = transformers.AutoModelForCausalLM.from_pretrained(root, dtype=torch.bfloat16).eval()

    def run_torch(T):
        with torch.inference_mode():
            tm(torch.tensor([ids[T]]), logits_to_keep=1)

    rates: dict = {}  # (engine, T) -> [tok/s]
    isas = ["avx512bf16", "amx"]
    for dt in a.dtypes.split(","):
        m = edgeformer.load(root, dtype=dt, threads=a.threads, max_context=max(prompts) + 8)

        def run_ef(T, m=m):
            m._core.reset()
            m._cached = []
            last = m._prefill_head(ids[T])
            m._core.forward(np.asarray(last, np.int32), False)

        runs = {f"edgeformer {dt} [{isa}]": (lambda T, isa=isa: (edgeformer._core.set_isa(isa), run_ef(T))) for isa in isas}
        runs[f"PyTorch {torch.__version__.split('+')[0]} bf16"] = run_torch  # (in every round: its samples pooled)
        for T in prompts:
            for f in runs.values():
                f(T)  # (warm up)
            for r in range(a.repeat):
                for name in list(runs)[r % len(runs):] + list(runs)[: r % len(runs)]:
                    t0 = time.perf_counter()
                    runs[name](T)
                    rates.setdefault((name, T), []).append(T / (time.perf_counter() - t0))
            print(" ".join(f"{n} @{T}: {statistics.median(rates[(n, T)]):.1f}" for n in runs), flush=True)
        del m
    edgeformer._core.set_isa("amx")

    torch_name = next(k[0] for k in rates if k[0].startswith("PyTorch"))
    lines = [f"Prompt tokens/s, {a.size} random Llama, {a.threads} threads, {platform.processor() or platform.machine()}"
             f" ({edgeformer.cpu_info()['brand']}); ratios to PyTorch bf16 and to edgeformer's avx512bf16 kernels"
             " of the same dtype", "",
             "| engine | " + " | ".join(f"{T} tokens" for T in prompts) + " |",
             "|---|" + "---|" * len(prompts)]
    names = sorted({k[0] for k in rates}, key=lambda n: (n.startswith("PyTorch"), n))
    for n in names:
        cells = []
        for T in prompts:
            v = statistics.median(rates[(n, T)])
            ref = statistics.median(rates[(torch_name, T)])
            cell = f"{v:.1f} ({v / ref:.2f}x torch"
            if "[amx]" in n:
                cell += f", {v / statistics.median(rates[(n.replace('[amx]', '[avx512bf16]'), T)]):.2f}x avx512bf16"
            cells.append(cell + ")")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if a.out:
        with open(a.out + ".md", "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(a.out + ".json", "w") as f:
            json.dump({"size": a.size, "threads": a.threads, "cpu": edgeformer.cpu_info()["brand"],
                       "runs": [{"engine": n, "prompt": T, "tok_per_s": v} for (n, T), v in rates.items()]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
