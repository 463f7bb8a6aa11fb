#!/usr/bin/env python3
"""Prefill and decode tokens/s of edgeformer on a checkpoint, optionally side by side with PyTorch
(transformers) in the same run, engines interleaved, medians and ratios reported.

    python benchmarks/bench_generate.py MODEL_DIR [--prompt 128] [--new 64] [--threads 2] [--torch]

A Llama-shaped random checkpoint of realistic size: python tools/make_tiny_llama.py /tmp/llama-110m \
    --hidden 768 --layers 12 --heads 12 --kv-heads 12 --ffn 2048 --vocab 32000
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np


def bench_edgeformer(path, args):
    import edgeformer

    m = edgeformer.load(path, threads=args.threads, dtype=args.dtype, max_context=args.prompt + args.new + 8)
    rng = np.random.default_rng(0)
    ids = [int(x) for x in rng.integers(2, min(m.spec.vocab_size, 30000), size=args.prompt)]

    def run():
        m._core.reset()
        m._cached = []
        t0 = time.perf_counter()
        m._prefill(np.asarray(ids, np.int32), logits=False)
        t1 = time.perf_counter()
        r = m.generate(ids + [5], max_new_tokens=args.new, temperature=0, ignore_eos=True)  # reuses the prefix
        t2 = time.perf_counter()
        return args.prompt / (t1 - t0), len(r.token_ids) / (t2 - t1)

    return run, f"edgeformer ({edgeformer._core.active_isa()}, {m.threads} threads)"


def bench_torch(path, args):
    import torch
    import transformers

    torch.set_num_threads(args.threads or os.cpu_count())
    dt = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16, None: torch.float32}[args.dtype]
    m = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dt).eval()
    rng = np.random.default_rng(0)
    x = torch.tensor([rng.integers(2, min(m.config.vocab_size, 30000), size=args.prompt).tolist()])

    def run():
        with torch.no_grad():
            t0 = time.perf_counter()
            m(x)
            t1 = time.perf_counter()
            out = m.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=args.new, min_new_tokens=args.new,
                             do_sample=False, pad_token_id=0)
            t2 = time.perf_counter()
        n = out.shape[1] - x.shape[1]
        # generate() includes one prefill: subtract it to get decode time
        return args.prompt / (t1 - t0), (n - 1) / max(1e-9, (t2 - t1) - (t1 - t0))

    return run, f"pytorch {torch.__version__} ({str(dt).replace('torch.', '')})"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--torch", action="store_true", help="also run transformers + torch, interleaved")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args()
    engines = [bench_edgeformer(args.model, args)]
    if args.torch:
        engines.append(bench_torch(args.model, args))
    results = {name: {"prefill": [], "decode": []} for _, name in engines}
    for run, _ in engines:  # warm-up
        run()
    for _ in range(args.repeat):
        for run, name in engines:  # interleaved: the machine's drift hits every engine alike
            pf, dc = run()
            results[name]["prefill"].append(pf)
            results[name]["decode"].append(dc)
    base = engines[0][1]
    print(f"model {args.model}: prompt {args.prompt}, {args.new} new tokens, median of {args.repeat}")
    print(f"{'engine':48s} {'prefill tok/s':>14s} {'decode tok/s':>13s} {'prefill vs us':>14s} {'decode vs us':>13s}")
    summary = {}
    for name, r in results.items():
        pf, dc = statistics.median(r["prefill"]), statistics.median(r["decode"])
        summary[name] = {"prefill_tok_s": pf, "decode_tok_s": dc}
        bpf, bdc = statistics.median(results[base]["prefill"]), statistics.median(results[base]["decode"])
        print(f"{name:48s} {pf:14.1f} {dc:13.1f} {pf / bpf:14.2f} {dc / bdc:13.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": summary}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
