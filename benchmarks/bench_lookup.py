"""Prompt lookup (generate(prompt_lookup=k)) against plain decode steps, on one model, greedy.

Each step also proposes up to k tokens (what followed the latest earlier occurrence of the text's last 1-3
tokens) and checks them in the same forward. The gain depends on how much the output repeats its context:
the prompt here asks for a copy (a passage, then its first words again), the case of summaries with quotes,
code edits and extraction. Reports decode tokens per second both ways, the forwards per token, and whether the
tokens are the same.

    python benchmarks/bench_lookup.py /work/bench/1.1b/hf --dtype q4_0 --threads 2

A checkpoint with random weights (benchmarks/make_checkpoints.py) copies nothing; its greedy output still
falls into loops, which the lookup then predicts. The bundled demo model (no argument) copies its prompt."""

from __future__ import annotations

import argparse
import os
import sys

import edgeformer
from edgeformer import model as model_mod

PASSAGE = ("The garbage collector frees objects that are no longer referenced. A reference cycle is a group of "
           "objects that refer to each other, so that their counts never drop to zero; the collector finds such "
           "groups and frees them. ")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default=None, help="checkpoint directory or GGUF (default: the demo model)")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--lookup", default="4,8", help="prompt_lookup values to time, comma-separated")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args(argv)
    path = a.model or edgeformer.demo_model_path()
    m = edgeformer.load(path, dtype=a.dtype, threads=a.threads, max_context=1024)
    prompt = PASSAGE * 2 + PASSAGE[:40]
    kw = dict(max_new_tokens=a.tokens, temperature=0, ignore_eos=True)
    forwards = [0]
    real = model_mod._lookup

    def counted(ctx, k):
        forwards[0] += 1
        return real(ctx, k)

    model_mod._lookup = counted

    def run(k):
        best, out = 1e9, None
        for _ in range(a.reps):
            m._core.reset()
            m._cached = []  # no reuse between runs: each one prefills and decodes the same
            forwards[0] = 0
            r = m.generate(prompt, prompt_lookup=k, **kw)
            if r.decode_seconds < best:
                best, out = r.decode_seconds, r
        return out, forwards[0]

    base, _ = run(0)
    rate0 = (len(base.token_ids) - 1) / base.decode_seconds
    print(f"{os.path.basename(os.path.normpath(path))} ({a.dtype or 'as stored'}, {m.threads} threads): plain decode "
          f"{rate0:.1f} tok/s")
    for k in (int(x) for x in a.lookup.split(",")):
        r, n = run(k)
        rate = (len(r.token_ids) - 1) / r.decode_seconds
        same = r.token_ids == base.token_ids
        print(f"  prompt_lookup={k}: {rate:.1f} tok/s ({rate / rate0:.2f}x), {len(r.token_ids) / max(n, 1):.2f} "
              f"tokens per forward, tokens {'the same' if same else 'DIFFERENT'}")
    model_mod._lookup = real
    return 0


if __name__ == "__main__":
    sys.exit(main())
