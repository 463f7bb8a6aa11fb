"""How long a running request pauses while a long prompt joins a Batcher: for each prefill_chunk, a request
decodes, a long prompt is submitted, and until the long prompt's first token this measures the running
request's longest pause between two tokens, its tokens meanwhile, and the long prompt's time to first token.

    python benchmarks/bench_prefill_stall.py MODEL [--prompt 1500] [--chunks none,512,256] [--threads 2]

Random token ids (the speed does not depend on them)."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import edgeformer
from edgeformer import batching


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--prompt", type=int, default=1500)
    ap.add_argument("--chunks", default="none,512,256")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    m = edgeformer.load(a.model, threads=a.threads, max_context=a.prompt + 1100)
    vocab = m.spec.vocab_size
    long_p = np.random.default_rng(0).integers(100, vocab, size=a.prompt).tolist()
    stamps = []
    real = batching.step
    batching.step = lambda seqs: (real(seqs), stamps.append(time.perf_counter()))[0]
    print("| prefill_chunk | long prompt: time to first token | running request: tokens meanwhile | its longest pause |")
    print("|---|---|---|---|")
    for c in a.chunks.split(","):
        chunk = None if c == "none" else int(c)
        with edgeformer.Batcher(m, prefill_chunk=chunk) as b:
            r = b.submit(long_p[:4], max_new_tokens=1000, temperature=0, ignore_eos=True)
            time.sleep(1.0)  # decoding
            stamps.clear()
            t0 = time.perf_counter()
            b.submit(long_p, max_new_tokens=1, temperature=0, ignore_eos=True).wait()
            t1 = time.perf_counter()
            r.cancel()
        s = [t0] + [t for t in stamps if t <= t1] + [t1]
        print(f"| {c} | {t1 - t0:.2f} s | {len(s) - 2} | {np.diff(s).max():.2f} s |", flush=True)
    batching.step = real
    return 0


if __name__ == "__main__":
    sys.exit(main())
