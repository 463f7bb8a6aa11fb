"""Do we compute what llama.cpp computes from its own files? For each GGUF file, both engines evaluate the same
prompt; the script reports the NMSE between their logits at every position, how often their top tokens agree,
and where their greedy continuations first part. Both read the same quantized weights, so what differs is the
activations' rounding (llama.cpp: 8 bits per 256 for the K-quants, per 32 for the others; ours: per 32) and
the order of the sums. q8_0 is the yardstick: two engines on nearly the same arithmetic. --reference also runs
transformers (f32, PyTorch) on the file's weights dequantized by gguf-py, the exact product: each engine's error
against it says which engine computes closer to the weights the file holds.

    python benchmarks/agree_llama_cpp.py /work/bench/1.1b/lc-q4_k_m.gguf ... --llama-cpp /work/engines/llama_avx512

Writes a markdown table (--out) as well as printing it. Not a test: llama.cpp is not a test dependency."""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def gguf_types(path):
    """The tensor types of a GGUF file and their share of its bytes, e.g. 'q4_k 70%, q6_k 30%'."""
    import gguf

    r = gguf.GGUFReader(path)
    share = {}
    for t in r.tensors:
        if len(t.shape) >= 2:
            k = t.tensor_type.name.lower()
            share[k] = share.get(k, 0) + int(t.n_bytes)
    total = sum(share.values())
    return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(share.items(), key=lambda kv: -kv[1]))


def reference_logits(path, ids):
    """transformers' logits (f32) from the file's weights as gguf-py dequantizes them."""
    import torch
    import transformers

    from edgeformer import _core
    from edgeformer.gguf_config import config_from_gguf

    _, meta, order, _ = _core.TensorMap.open_gguf(path)
    kw = {}
    if any(k.endswith(".expert_count") for k in meta):  # (transformers' reader takes no expert widths from the file)
        cfg = config_from_gguf(meta, order, path)
        kw["config"] = transformers.AutoConfig.for_model(**cfg)
    m = transformers.AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                         torch_dtype=torch.float32, **kw).eval()
    with torch.no_grad():
        out = m(torch.tensor([ids])).logits[0].float().numpy()
    del m
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--llama-cpp", default=None, help="folder with an installed llama_cpp package")
    ap.add_argument("--prompt", type=int, default=64, help="prompt tokens (random ids, seed 0)")
    ap.add_argument("--new", type=int, default=32, help="greedy tokens compared")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="markdown file for the table")
    ap.add_argument("--reference", action="store_true", help="also the exact product (transformers, f32)")
    a = ap.parse_args()
    if a.llama_cpp:
        sys.path.insert(0, a.llama_cpp)
    import llama_cpp

    import edgeformer

    rows = []
    for path in a.files:
        ours = edgeformer.load(path, threads=a.threads, max_context=a.prompt + a.new + 8)
        vocab = ours._core.spec.vocab_size
        ids = np.random.default_rng(0).integers(3, vocab, a.prompt).tolist()
        mine = ours.logits(ids)
        greedy_ours = ours.generate(ids, max_new_tokens=a.new, temperature=0, ignore_eos=True).token_ids
        del ours
        lc = llama_cpp.Llama(model_path=path, n_ctx=a.prompt + a.new + 8, n_threads=a.threads,
                             n_threads_batch=a.threads, logits_all=True, verbose=False)
        lc.eval(ids)
        theirs = np.array(lc.scores[: len(ids)], np.float32)
        greedy_lc = []
        for _ in range(a.new):
            tok = int(np.argmax(lc.scores[lc.n_tokens - 1]))
            greedy_lc.append(tok)
            lc.eval([tok])
        del lc
        nmse = lambda x, ref: float(((x - ref) ** 2).sum() / (ref**2).sum())  # noqa: E731
        top1 = float((mine.argmax(-1) == theirs.argmax(-1)).mean())
        part = next((i for i, (x, y) in enumerate(zip(greedy_ours, greedy_lc)) if x != y), None)
        ref = ("", "")
        if a.reference:
            exact = reference_logits(path, ids)
            ref = (f"{nmse(mine, exact):.2e}", f"{nmse(theirs, exact):.2e}")
        rows.append((os.path.basename(path), gguf_types(path), nmse(mine, theirs), top1,
                     f"{a.new} of {a.new}" if part is None else f"first {part}") + ref)
        print(rows[-1], flush=True)
    lines = [f"Prompt of {a.prompt} random tokens, {a.new} greedy tokens, {a.threads} threads, "
             f"llama-cpp-python {llama_cpp.__version__}, edgeformer {edgeformer.__version__} "
             f"({edgeformer.cpu_info()['isa']})", "",
             "| file | matrix types (share of bytes) | logits NMSE vs llama.cpp | top-1 agreement | greedy tokens equal "
             "| NMSE vs exact: edgeformer | NMSE vs exact: llama.cpp |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {f} | {t} | {n:.2e} | {100 * p:.1f}% | {g} | {e1} | {e2} |" for f, t, n, p, g, e1, e2 in rows]
    print("\n".join(lines))
    if a.out:
        with open(a.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
