#!/usr/bin/env python3
"""Batched generation: aggregate decode tokens/s of B prompts generated together, edgeformer against
llama.cpp (its batched llama_decode, one sequence per prompt, as llama-server runs), CTranslate2
(generate_batch) and PyTorch (transformers' generate on a [B, T] batch), same checkpoints
(benchmarks/make_checkpoints.py), same threads, in one run.

    python benchmarks/bench_batch.py /data/bench --size 1.1b [--batches 1,4,8] [--new 32] [--prompt 64]
        [--groups int8,f32,q4_0,q8_0] [--rounds 3] [--threads 2] [--name NAME] [--llama-cpp DIR]

Every prompt has the same length (no padding for any engine). Each configuration is timed generating 1 and
`--new` greedy tokens per prompt; decode tokens/s = B * (new - 1) / (t_new - t_1), which leaves the prompts'
prefill out for every engine alike. The engines of a group are loaded together and measured round robin
(median of the rounds). Writes benchmarks/results/<name>.json and prints a Markdown table with each
engine's ratio to edgeformer at the same B, and each engine's gain over its own B = 1.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


class Edgeformer:
    def __init__(self, path, dtype, threads, ctx):
        import edgeformer

        self.m = edgeformer.load(path, threads=threads, dtype=dtype, max_context=ctx)
        self.name = f"edgeformer {edgeformer.__version__} ({edgeformer._core.active_isa()})"

    def run(self, prompts, n):
        out = self.m.generate([list(p) for p in prompts], max_new_tokens=n, temperature=0, ignore_eos=True)
        assert all(len(r.token_ids) == n for r in out)


class CT2:
    def __init__(self, path, compute, threads, ctx):
        import ctranslate2

        self.m = ctranslate2.Generator(path, device="cpu", compute_type=compute, intra_threads=threads)
        with open(os.path.join(path, "vocabulary.json")) as f:
            self.vocab = json.load(f)
        self.name = f"CTranslate2 {ctranslate2.__version__} ({compute})"

    def run(self, prompts, n):
        toks = [[self.vocab[i] for i in p] for p in prompts]
        out = self.m.generate_batch(toks, max_length=n, min_length=n, sampling_topk=1, include_prompt_in_result=False,
                                    max_batch_size=len(prompts))
        assert all(len(r.sequences_ids[0]) == n for r in out)


class Torch:
    def __init__(self, path, dtype, threads, ctx):
        import torch
        import transformers

        torch.set_num_threads(threads)
        self.torch = torch
        dt = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype]
        self.m = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dt).eval()
        self.name = f"PyTorch {torch.__version__.split('+')[0]} ({dtype})"

    def run(self, prompts, n):
        with self.torch.inference_mode():
            x = self.torch.tensor(np.asarray(prompts))
            out = self.m.generate(x, attention_mask=self.torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                                  do_sample=False, pad_token_id=0)
        assert out.shape[1] == x.shape[1] + n


class LlamaCpp:
    """llama.cpp's own batched decoding (as llama-server runs it): one llama_decode per step over a batch of
    B tokens, each in its own sequence of the KV cache."""

    def __init__(self, path, _, threads, ctx):
        import llama_cpp as L

        self.L = L
        mp = L.llama_model_default_params()
        self.model = L.llama_model_load_from_file(path.encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp cannot load {path}")
        self.ctx_len, self.threads = ctx, threads
        self.ctx, self.cap = None, 0
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.name = f"llama.cpp (llama-cpp-python {L.__version__})"

    def _context(self, B, n_prompt):
        L = self.L
        if self.ctx is not None and B <= self.cap:
            return
        if self.ctx is not None:
            L.llama_free(self.ctx)
        cp = L.llama_context_default_params()
        cp.n_ctx = B * self.ctx_len
        cp.n_batch = cp.n_ubatch = max(512, n_prompt)
        cp.n_seq_max = B
        cp.n_threads = cp.n_threads_batch = self.threads
        self.ctx = L.llama_init_from_model(self.model, cp)
        self.cap = B
        self.batch = L.llama_batch_init(max(512, n_prompt, B), 0, B)

    def _decode(self, items):
        """items: (token, position, sequence, wants logits)"""
        L, b = self.L, self.batch
        for i, (tok, pos, seq, out) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, out
            b.seq_id[i][0] = seq
        b.n_tokens = len(items)
        if L.llama_decode(self.ctx, b) != 0:
            raise RuntimeError("llama_decode failed")

    def run(self, prompts, n):
        L = self.L
        B = len(prompts)
        self._context(B, len(prompts[0]))
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)
        last = []
        for s, p in enumerate(prompts):  # each prompt in its own sequence; the last position's logits
            self._decode([(int(t), i, s, i == len(p) - 1) for i, t in enumerate(p)])
            last.append(int(np.argmax(np.ctypeslib.as_array(L.llama_get_logits_ith(self.ctx, -1),
                                                            shape=(self.n_vocab,)))))
        pos = [len(p) for p in prompts]
        for _ in range(n - 1):
            self._decode([(last[s], pos[s], s, True) for s in range(B)])
            for s in range(B):
                last[s] = int(np.argmax(np.ctypeslib.as_array(L.llama_get_logits_ith(self.ctx, s),
                                                              shape=(self.n_vocab,))))
                pos[s] += 1


# group -> [(engine class, path relative to the size's folder, argument)]
GROUPS = {
    "int8": [(Edgeformer, "ef-int8.gguf", None), (CT2, "ct2-int8", "int8"), (LlamaCpp, "lc-q8_0.gguf", None)],
    "f32": [(Edgeformer, "hf", "f32"), (CT2, "ct2-float32", "float32"), (Torch, "hf", "f32")],
    "q4_0": [(Edgeformer, "lc-q4_0.gguf", None), (LlamaCpp, "lc-q4_0.gguf", None)],
    "q8_0": [(Edgeformer, "lc-q8_0.gguf", None), (LlamaCpp, "lc-q8_0.gguf", None)],
    "bf16": [(Edgeformer, "hf", "bf16"), (Torch, "hf", "bf16")],
}


def timed(engine, prompts, n):
    t0 = time.perf_counter()
    engine.run(prompts, n)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root")
    ap.add_argument("--size", default="1.1b")
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--groups", default="int8,f32,q4_0")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default=None)
    ap.add_argument("--llama-cpp", default=None, help="a folder holding llama-cpp-python (put first on sys.path)")
    a = ap.parse_args(argv)
    if a.llama_cpp:
        sys.path.insert(0, a.llama_cpp)
    batches = [int(b) for b in a.batches.split(",")]
    rng = np.random.default_rng(0)
    pool = rng.integers(2, 30000, size=(max(batches), a.prompt)).tolist()
    ctx = a.prompt + a.new + 16
    rows = []
    for group in a.groups.split(","):
        engines = []
        for cls, rel, arg in GROUPS[group]:
            path = os.path.join(a.root, a.size, rel)
            if not os.path.exists(path):
                print(f"skip {cls.__name__} ({path} missing)", file=sys.stderr)
                continue
            try:
                engines.append(cls(path, arg, a.threads, ctx))
            except (ImportError, AttributeError) as e:
                print(f"skip {cls.__name__}: {e}", file=sys.stderr)
        for e in engines:  # warm-up: kernels, buffers, caches
            e.run(pool[:1], 2)
        samples = {(e.name, b): [] for e in engines for b in batches}
        for r in range(a.rounds):
            for b in batches:
                order = engines[r % len(engines):] + engines[: r % len(engines)]
                for e in order:
                    prompts = pool[:b]
                    t1 = timed(e, prompts, 1)
                    tn = timed(e, prompts, a.new)
                    samples[(e.name, b)].append(b * (a.new - 1) / max(tn - t1, 1e-9))
            print(f"{group}: round {r + 1}/{a.rounds} done", file=sys.stderr, flush=True)
        for e in engines:
            for b in batches:
                rows.append({"group": group, "engine": e.name, "batch": b,
                             "decode_tok_s": statistics.median(samples[(e.name, b)]),
                             "samples": samples[(e.name, b)]})
        del engines
    ours = {(r["group"], r["batch"]): r["decode_tok_s"] for r in rows if r["engine"].startswith("edgeformer")}
    single = {(r["group"], r["engine"]): r["decode_tok_s"] for r in rows if r["batch"] == 1}
    lines = [f"Batched decode, {a.size}, {a.threads} threads, prompts of {a.prompt} tokens, {a.new} new tokens each "
             f"({platform.processor() or platform.machine()}, {datetime.date.today()}):", "",
             "| group | engine | batch | decode tok/s (all sequences) | vs edgeformer | vs its own batch 1 |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        o = ours.get((r["group"], r["batch"]))
        s = single.get((r["group"], r["engine"]))
        lines.append(f"| {r['group']} | {r['engine']} | {r['batch']} | {r['decode_tok_s']:.1f} | "
                     f"{r['decode_tok_s'] / o:.2f}x | {r['decode_tok_s'] / s:.2f}x |" if o and s else
                     f"| {r['group']} | {r['engine']} | {r['batch']} | {r['decode_tok_s']:.1f} | | |")
    table = "\n".join(lines)
    print(table)
    name = a.name or f"batch-{a.size}"
    out = os.path.join(HERE, "results", name + ".json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"args": vars(a), "rows": rows, "table": table}, f, indent=1)
    with open(os.path.join(HERE, "results", name + ".md"), "w") as f:
        f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
