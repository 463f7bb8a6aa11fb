#!/usr/bin/env python3
"""Resident memory while generating from a GGUF file, against the budget: file size + KV cache + 10%.

    python benchmarks/bench_memory.py [--shape 1.1b] [--type q4_0] [--workdir /tmp/ef-mem]
    python benchmarks/bench_memory.py --mxfp4 [--workdir /tmp/ef-mem]

--mxfp4: the peak while loading a Hugging Face gpt-oss checkpoint whose experts are MXFP4 (as the released ones),
which load as q5_0 copies repacked into panels, against the q5_0 experts' bytes (the model's own copy).

Makes a random-weight Llama of the given shape (f16 safetensors, with tools/make_tiny_llama.py), writes it
as GGUF with `edgeformer quantize`, then in a fresh process loads the GGUF, generates, and reads the peak
resident set (getrusage) and the current one (/proc/self/statm). The interpreter's own baseline (Python,
NumPy, tokenizers before the model is loaded) is reported separately.
"""

import argparse
import json
import os
import subprocess
import sys

SHAPES = {
    "110m": dict(hidden=768, layers=12, heads=12, kv_heads=12, ffn=2048, vocab=32000),
    "1.1b": dict(hidden=2048, layers=22, heads=32, kv_heads=4, ffn=5632, vocab=32000),
}

CHILD = r"""
import json, os, resource, sys
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
import numpy, tokenizers, edgeformer
base = rss()
m = edgeformer.load(sys.argv[1], max_context=int(sys.argv[2]))
r = m.generate("The edge of the", max_new_tokens=int(sys.argv[3]), temperature=0, ignore_eos=True)
s = m.spec
kv = 2 * s.n_layers * s.n_kv_heads * s.head_dim * m.max_context * (2 if m._core.kv_dtype == "f16" else 4)
print(json.dumps({"baseline": base, "rss_now": rss(), "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "kv_cache": kv, "tokens": len(r.token_ids), "decode_tok_s": r.decode_tokens_per_s}))
"""


MXFP4_CHILD = r"""
import json, os, resource, sys
import numpy, tokenizers, edgeformer
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
m = edgeformer.load(sys.argv[1], max_context=64)
m._core.forward(numpy.arange(8, dtype=numpy.int32))
s = m.spec
experts = s.n_layers * s.n_experts * 3 * s.hidden_size * s.moe_ffn_size * 22 // 32  # q5_0: 22 bytes per 32 values
print(json.dumps({"baseline": base, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "experts_q5_0": experts}))
"""


def make_mxfp4_gpt_oss(path: str) -> None:
    """A random gpt-oss (4 layers, 32 experts of 1024 x 2048) with MXFP4 experts, written tensor by tensor from the
    names and shapes of a model built on the meta device."""
    import numpy as np
    import torch
    import transformers as tf
    from safetensors.numpy import save_file

    cfg = tf.GptOssConfig(hidden_size=1024, intermediate_size=2048, num_hidden_layers=4, num_local_experts=32,
                          num_experts_per_tok=4, num_attention_heads=16, num_key_value_heads=4, head_dim=64,
                          vocab_size=32000, max_position_embeddings=4096)
    with torch.device("meta"):
        shapes = {n: tuple(t.shape) for n, t in tf.GptOssForCausalLM(cfg).state_dict().items()}
    rng = np.random.default_rng(0)
    tensors = {}
    for name, shape in shapes.items():
        if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            e, k, n = shape  # x @ w[e]: [experts, in, out]; MXFP4 stores [experts, out, in / 32] blocks of 16 bytes
            tensors[name + "_blocks"] = rng.integers(0, 256, (e, n, k // 32, 16), dtype=np.uint8)
            tensors[name + "_scales"] = rng.integers(118, 124, (e, n, k // 32), dtype=np.uint8)
        else:
            tensors[name] = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)
            if name.endswith("norm.weight"):
                tensors[name][:] = 1
    os.makedirs(path, exist_ok=True)
    save_file(tensors, os.path.join(path, "model.safetensors"))
    cfg.save_pretrained(path)


def mxfp4_main(workdir: str) -> None:
    src = os.path.join(workdir, "gpt-oss-mxfp4")
    if not os.path.exists(os.path.join(src, "model.safetensors")):
        make_mxfp4_gpt_oss(src)
    out = subprocess.run([sys.executable, "-c", MXFP4_CHILD, src], check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    mib = lambda x: f"{x / 2**20:8.1f} MiB"  # noqa: E731
    file = os.path.getsize(os.path.join(src, "model.safetensors"))
    print(f"HF gpt-oss, MXFP4 experts: file {mib(file)}; the model's q5_0 experts {mib(r['experts_q5_0'])}")
    print(f"interpreter baseline (before load): {mib(r['baseline'])}")
    print(f"peak resident while loading:     {mib(r['peak'])}  (model alone: {mib(r['peak'] - r['baseline'])}, "
          f"{(r['peak'] - r['baseline']) / r['experts_q5_0']:.2f}x the q5_0 experts)")
    print(json.dumps({"file": file, **r}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mxfp4", action="store_true", help="the load peak of an HF gpt-oss with MXFP4 experts")
    p.add_argument("--shape", default="1.1b", choices=list(SHAPES))
    p.add_argument("--type", default="q4_0")
    p.add_argument("--workdir", default="/tmp/ef-mem")
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--new", type=int, default=32)
    a = p.parse_args()
    if a.mxfp4:
        return mxfp4_main(a.workdir)
    src = os.path.join(a.workdir, f"llama-{a.shape}")
    gguf = os.path.join(a.workdir, f"llama-{a.shape}-{a.type}.gguf")
    here = os.path.dirname(os.path.abspath(__file__))
    if not os.path.exists(os.path.join(src, "model.safetensors")):
        sh = SHAPES[a.shape]
        cmd = [sys.executable, os.path.join(here, "..", "tools", "make_tiny_llama.py"), src, "--dtype", "float16"]
        for k, v in sh.items():
            cmd += [f"--{k.replace('_', '-')}", str(v)]
        subprocess.run(cmd, check=True)
    if not os.path.exists(gguf):
        subprocess.run([sys.executable, "-m", "edgeformer", "quantize", src, gguf, "--type", a.type], check=True)
    out = subprocess.run([sys.executable, "-c", CHILD, gguf, str(a.context), str(a.new)], check=True,
                         capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    size = os.path.getsize(gguf)
    budget = (size + r["kv_cache"]) * 1.10
    mib = lambda x: f"{x / 2**20:8.1f} MiB"  # noqa: E731
    print(f"GGUF {a.type} {a.shape}: {mib(size)}; KV cache ({a.context} positions): {mib(r['kv_cache'])}")
    print(f"budget (file + KV + 10%):        {mib(budget)}")
    print(f"interpreter baseline (before load): {mib(r['baseline'])}")
    print(f"resident while generating:       {mib(r['rss_now'])}  (model alone: {mib(r['rss_now'] - r['baseline'])})")
    print(f"peak resident:                   {mib(r['peak'])}  (model alone: {mib(r['peak'] - r['baseline'])})")
    print(f"decode: {r['decode_tok_s']:.1f} tok/s")
    print(json.dumps({"file": size, "budget": budget, **r}))


if __name__ == "__main__":
    main()
