"""Constrained generation's cost: decode tokens per second with and without a JSON grammar, edgeformer and
llama.cpp (llama-cpp-python's LlamaGrammar) on the same GGUF file, greedy, engines interleaved in one run; and
the time to find one state's allowed tokens for vocabularies of 32,000 and 152,000 tokens.

    python benchmarks/bench_grammar.py /work/bench/1.1b/lc-q3_k_m.gguf --llama-cpp /work/engines/llama_avx512

The grammar is the JSON Schema of a record with a name, a list of numbers and nested tags (converted by
edgeformer.json_schema_to_gbnf; llama.cpp parses the same GBNF text). A random-weight model writes JSON
as random as its weights, but a step's cost does not depend on what the text means: the masks of the states
the generation reaches are what is measured. Reported: tok/s, the constrained rate as a share of the free
one per engine, and the engines' ratio under the grammar."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import numpy as np

import edgeformer
from edgeformer import _core

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 24},
    "values": {"type": "array", "items": {"type": "number"}, "minItems": 8, "maxItems": 8},
    "tags": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string", "maxLength": 8},
                                                                          "v": {"type": "integer"}},
                                        "required": ["k", "v"]}, "minItems": 3, "maxItems": 3}},
    "required": ["name", "values", "tags"]}
PROMPT = "A record, as JSON:"


def _ours(path, threads, n, gbnf, reps):
    m = edgeformer.load(path, threads=threads, max_context=1024)
    g = edgeformer.Grammar(gbnf)
    out = {}
    for name, kw in (("free", dict(ignore_eos=True)), ("grammar", dict(grammar=g))):
        best = None
        for _ in range(reps):
            m._core.reset()
            m._cached = []
            r = m.generate(PROMPT, max_new_tokens=n, temperature=0, **kw)
            rate = (len(r.token_ids) - 1) / max(r.decode_seconds, 1e-9)
            if best is None or rate > best[0]:
                best = (rate, len(r.token_ids), r.text)
        out[name] = best
    return out, f"edgeformer {edgeformer.__version__} ({_core.active_isa()})"


def _llama(path, threads, n, gbnf, reps, lc_dir):
    sys.path.insert(0, lc_dir)
    import llama_cpp

    m = llama_cpp.Llama(model_path=path, n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)
    g = llama_cpp.LlamaGrammar.from_string(gbnf, verbose=False)
    out = {}
    prompt = m.tokenize(PROMPT.encode())
    eos = m.token_eos()
    for name, kw in (("free", {}), ("grammar", dict(grammar=g))):
        best = None
        for _ in range(reps):
            m.reset()
            times, toks = [], []
            for tok in m.generate(prompt, top_k=1, temp=0.0, reset=True, **kw):  # one token per iteration
                times.append(time.perf_counter())
                if tok == eos and name == "grammar":
                    break
                toks.append(tok)
                if len(toks) >= n:
                    break
            rate = (len(times) - 1) / max(times[-1] - times[0], 1e-9) if len(times) > 1 else 0.0
            if best is None or rate > best[0]:
                best = (rate, len(toks), m.detokenize(toks).decode("utf-8", "replace"))
        out[name] = best
    return out, f"llama.cpp (llama-cpp-python {llama_cpp.__version__})"


def _cold_masks(gbnf, vocab_bytes, trials=20):
    """Seconds to find the allowed tokens of states never seen before (a fresh binding each time), median."""
    rules = edgeformer.Grammar(gbnf)._rules
    voc = _core.GrammarVocab(vocab_bytes, [0], False)
    one = {b: i for i, b in enumerate(vocab_bytes) if len(b) == 1}
    prefix = [one[bytes([c])] for c in b'{"name": "']  # inside a string: most tokens stay alive longest
    times = []
    for _ in range(trials):
        g = _core.Grammar(rules, voc)  # empty caches
        t = time.perf_counter()
        a = g.allowed(prefix)  # (the states on the way there are few tokens' work: their masks prune early)
        times.append(time.perf_counter() - t)
    return float(np.median(times)), int(a.sum())


def _synthetic_vocab(n, seed=0):
    rng = random.Random(seed)
    letters = b"abcdefghijklmnopqrstuvwxyz"
    out = {b""}
    for c in range(32, 127):  # every printable byte on its own, as byte-level vocabularies have
        out.add(bytes([c]))
    while len(out) < n:  # word-like tokens, some with a leading space, some punctuation and digits
        k = rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12])
        w = bytes(rng.choice(letters) for _ in range(k))
        r = rng.random()
        out.add(b" " + w if r < 0.5 else w if r < 0.9 else bytes(rng.choice(b'0123456789.,:{}[]"') for _ in range(k)))
    return [b""] + sorted(out - {b""})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf", help="a GGUF file both engines read")
    ap.add_argument("--llama-cpp", default=None, help="folder with an installed llama_cpp package (--target)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", default=None, help="write the results here")
    a = ap.parse_args(argv)
    gbnf = edgeformer.json_schema_to_gbnf(SCHEMA)
    results = {}
    runs = [("edgeformer", lambda: _ours(a.gguf, a.threads, a.tokens, gbnf, a.reps))]
    if a.llama_cpp:
        runs.append(("llama.cpp", lambda: _llama(a.gguf, a.threads, a.tokens, gbnf, a.reps, a.llama_cpp)))
    for key, fn in runs:
        res, name = fn()
        results[key] = {"engine": name, **{k: {"tok_s": v[0], "tokens": v[1], "text": v[2][:300]} for k, v in res.items()}}
    print(f"{os.path.basename(a.gguf)}, {a.threads} threads, greedy, up to {a.tokens} tokens\n")
    print("| engine | free decode tok/s | JSON-schema decode tok/s (tokens) | constrained / free |")
    print("|---|---|---|---|")
    for key, r in results.items():
        f, g = r["free"]["tok_s"], r["grammar"]["tok_s"]
        print(f"| {r['engine']} | {f:.1f} | {g:.1f} ({r['grammar']['tokens']}) | {g / f:.2f} |")
    if "llama.cpp" in results:
        ours, theirs = results["edgeformer"]["grammar"]["tok_s"], results["llama.cpp"]["grammar"]["tok_s"]
        print(f"\nunder the grammar: edgeformer {ours / max(theirs, 1e-9):.2f}x llama.cpp's tokens per second")
    tok = edgeformer.load(a.gguf, threads=1, max_context=16).tokenizer
    from edgeformer.grammar import token_bytes

    vb, _ = token_bytes(tok, tok.get_vocab_size())
    cold = {"the file's vocabulary": (len(vb), *_cold_masks(gbnf, vb)),
            "a synthetic one": (152000, *_cold_masks(gbnf, _synthetic_vocab(152000), trials=5))}
    print('\nfinding the allowed tokens of a state not seen before, inside a string value (after {"name": "),'
          ' median; then cached per state:')
    for k, (n, t, ok) in cold.items():
        print(f"  {k} ({n} tokens, {ok} of them allowed there): {t * 1e3:.2f} ms")
    results["cold_mask"] = {k: {"tokens": v[0], "ms": v[1] * 1e3, "allowed": v[2]} for k, v in cold.items()}
    for key in ("edgeformer", "llama.cpp"):
        if key in results:
            print(f"\n{key} under the grammar wrote: {results[key]['grammar']['text'][:160]!r}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
