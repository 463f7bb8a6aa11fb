"""CUDA benchmark on random-weight Llama shapes: TinyLlama 1.1B (2048 wide, 22 layers, 32 heads / 4 KV heads,
FFN 5632) and Llama-2 7B (4096 wide, 32 layers, 32 heads, FFN 11008), vocabulary 32000, in f16 and q4_0.

For each: prefill tokens/s of one 512-token prompt, decode tokens/s (greedy, one token per call, sampled on the
device; steps replayed as CUDA graphs, and again launched kernel by kernel), and decode as a fraction of the HBM roofline: bytes read per token (the layer matrices, the head and
the KV cache in use) times tokens/s, over the bandwidth of a device-to-device copy measured here. PyTorch eager
(transformers, f16, sdpa) runs the same shapes on the same GPU as the reference when torch has CUDA.

    python benchmarks/bench_gpu.py [--models 1.1b,7b] [--dtypes f16,q4_0] [--out benchmarks/results/gpu.json]

Weights are random (the speed does not depend on them); no checkpoint is read or written.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

import edgeformer
from edgeformer import _core
from edgeformer.archs import spec_from_config

SHAPES = {
    "1.1b": dict(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                 intermediate_size=5632, vocab_size=32000, max_position_embeddings=2048),
    "7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
               intermediate_size=11008, vocab_size=32000, max_position_embeddings=4096),
    # a dry run of this script (tests/test_cuda.py runs it on the host stand-ins of the CUDA path)
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=320, max_position_embeddings=128),
}


def llama_config(shape: str) -> dict:
    c = dict(SHAPES[shape])
    c.update(model_type="llama", architectures=["LlamaForCausalLM"], rms_norm_eps=1e-5, rope_theta=10000.0,
             hidden_act="silu", tie_word_embeddings=False, torch_dtype="float16")
    return c


def tensor_shapes(c: dict) -> dict:
    H, F, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = H // c["num_attention_heads"]
    KD = c["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,), "lm_head.weight": (V, H)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
                       p + "self_attn.q_proj.weight": (H, H), p + "self_attn.k_proj.weight": (KD, H),
                       p + "self_attn.v_proj.weight": (KD, H), p + "self_attn.o_proj.weight": (H, H),
                       p + "mlp.gate_proj.weight": (F, H), p + "mlp.up_proj.weight": (F, H),
                       p + "mlp.down_proj.weight": (H, F)})
    return shapes


def build(shape: str, dtype: str, max_context: int, threads: int):
    """A CudaModel of random f16 weights (views of one random pool), quantized on the host when asked."""
    c = llama_config(shape)
    shapes = tensor_shapes(c)
    rng = np.random.default_rng(0)
    largest = max(int(np.prod(s)) for s in shapes.values())
    pool = (rng.standard_normal(largest + 4096, dtype=np.float32) * 0.02).astype(np.float16)
    tmap = _core.TensorMap()
    for i, (name, s) in enumerate(shapes.items()):
        n = int(np.prod(s))
        if len(s) == 1:
            arr = np.ones(s, np.float16)
        else:
            off = (i * 977) % (len(pool) - n + 1)
            arr = pool[off: off + n].reshape(s)
        tmap.add_array(name, arr, _core.DType.f16, "random")
    del pool
    spec, names = spec_from_config(c, f"<random {shape}>", list(shapes))
    opts = _core.ModelOptions()
    opts.threads = threads
    opts.max_context = max_context
    opts.dtype = "" if dtype == "f16" else dtype
    t0 = time.perf_counter()
    host = _core.Model(spec, tmap, {k: v for k, v in names.items()}, opts)
    t1 = time.perf_counter()
    dev = _core.CudaModel(host, 0)
    t2 = time.perf_counter()
    del host, tmap
    gc.collect()
    return dev, c, {"host_load_s": round(t1 - t0, 2), "upload_s": round(t2 - t1, 2)}


def decode_bytes(c: dict, dtype: str, weight_bytes: int, ctx: float) -> float:
    """Bytes one decode step reads: every matrix but the embedding table (one row of it), plus the KV cache."""
    V, H = c["vocab_size"], c["hidden_size"]
    emb = V * H * 2 if dtype == "f16" else V * H // 32 * 34  # the embedding keeps 8 bits (q8_0) in a q4_0 model
    hd = H // c["num_attention_heads"]
    kv = 2 * c["num_hidden_layers"] * c["num_key_value_heads"] * hd * 2 * ctx  # f16 K and V
    return weight_bytes - emb + kv


def bench_ours(dev, c: dict, dtype: str, prompt: int, decode: int, reps: int) -> dict:
    rng = np.random.default_rng(1)
    ids = rng.integers(2, c["vocab_size"], size=prompt).astype(np.int32)
    dev.reset()
    dev.prefill(ids)  # warm-up: kernels loaded, buffers allocated
    times = []
    for _ in range(reps):
        dev.reset()
        t0 = time.perf_counter()
        dev.prefill(ids)
        times.append(time.perf_counter() - t0)
    opts = _core.SamplerOptions()
    opts.temperature = 0.0
    sampler = _core.Sampler(opts)
    hist = np.zeros(0, np.int32)
    tok = dev.step(ids[-1:], sampler, hist)  # the prompt's last token ...
    for _ in range(3):  # ... and a few warm-up steps
        tok = dev.step(np.array([tok], np.int32), sampler, hist)
    t0 = time.perf_counter()
    for _ in range(decode):
        tok = dev.step(np.array([tok], np.int32), sampler, hist)
    dt = time.perf_counter() - t0
    graphs = dev.graph_stats
    # the same steps launched kernel by kernel, from the same position on (the cache then holds what they write)
    dev.set_graphs(False)
    dev.truncate(prompt + 4)
    tok = dev.step(np.array([tok], np.int32), sampler, hist)
    t1 = time.perf_counter()
    for _ in range(decode):
        tok = dev.step(np.array([tok], np.int32), sampler, hist)
    dt_plain = time.perf_counter() - t1
    dev.set_graphs(True)
    return {"prefill_tok_s": prompt / statistics.median(times), "prefill_s": statistics.median(times),
            "decode_tok_s": decode / dt, "decode_ms_per_token": 1e3 * dt / decode,
            "decode_tok_s_without_graphs": decode / dt_plain, "graphs": graphs,
            "decode_ctx_avg": prompt + 4 + decode / 2}


def bench_batched(dev, c: dict, batch: int, prompt: int, decode: int) -> dict:
    """Decode steps of `batch` sequences together (_core.decode_batch over forks, as generate(list), Batcher and
    serve run them): tokens per second summed over the sequences, each after a prompt of its own."""
    rng = np.random.default_rng(2)
    forks = [dev.fork() for _ in range(batch)]
    opts = _core.SamplerOptions()
    opts.temperature = 0.0
    samplers = [_core.Sampler(opts) for _ in range(batch)]
    hists = [np.zeros(0, np.int32)] * batch
    for f in forks:
        f.prefill(rng.integers(2, c["vocab_size"], size=prompt).astype(np.int32))
    toks = np.asarray(_core.decode_batch(forks, rng.integers(2, c["vocab_size"], size=batch).astype(np.int32),
                                         samplers, hists), np.int32)  # warm-up: buffers sized
    t0 = time.perf_counter()
    for _ in range(decode):
        toks = np.asarray(_core.decode_batch(forks, toks, samplers, hists), np.int32)
    dt = time.perf_counter() - t0
    return {"batch": batch, "prompt": prompt, "decode_tok_s": batch * decode / dt, "step_ms": 1e3 * dt / decode}


def bench_torch(c: dict, prompt: int, decode: int, reps: int) -> dict:
    import torch
    import transformers

    cfg = transformers.LlamaConfig(**{k: v for k, v in c.items() if k not in ("architectures", "torch_dtype",
                                                                               "model_type")})
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)  # parameters made in f16, on the device
    try:
        with torch.device("cuda"):
            model = transformers.LlamaForCausalLM(cfg).eval()
    finally:
        torch.set_default_dtype(prev)
    ids = torch.randint(2, c["vocab_size"], (1, prompt), device="cuda")
    with torch.no_grad():
        model(ids)
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            out = model(ids, use_cache=True)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        past = out.past_key_values
        tok = out.logits[:, -1:].argmax(-1)
        for _ in range(3):
            out = model(tok, past_key_values=past, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(decode):
            out = model(tok, past_key_values=past, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    del model, out, past
    gc.collect()
    torch.cuda.empty_cache()
    return {"prefill_tok_s": prompt / statistics.median(times), "decode_tok_s": decode / dt,
            "version": torch.__version__, "transformers": transformers.__version__}


def torch_cuda() -> bool:
    try:
        import torch
        import transformers  # noqa: F401

        return torch.cuda.is_available()
    except ImportError:
        return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="1.1b,7b")
    ap.add_argument("--dtypes", default="f16,q4_0")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch", default="8", help="sequences decoded together, comma-separated (0: none)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "gpu.json"))
    a = ap.parse_args(argv)
    if not edgeformer.cuda_available():
        print("bench_gpu: no CUDA device (or a build without EF_CUDA=ON): nothing to measure", file=sys.stderr)
        return 2
    info = edgeformer.cuda_info(0)
    bw = _core.cuda_bandwidth(0, 1 << 30, 20)
    print(f"{info['name']}: {info['multiprocessors']} SMs, {info['total_memory'] / 2**30:.0f} GiB, "
          f"copy bandwidth {bw:.0f} GB/s (read + write; peak {info['peak_bandwidth_gbs']:.0f})", flush=True)
    results = {"device": info, "copy_bandwidth_gbs": bw, "prompt": a.prompt, "decode": a.decode,
               "host": platform.node(), "edgeformer": edgeformer.__version__, "runs": []}
    use_torch = not a.no_torch and torch_cuda()
    for shape in a.models.split(","):
        for dtype in a.dtypes.split(","):
            t0 = time.perf_counter()
            dev, c, load = build(shape, dtype, a.prompt + a.decode + 16, a.threads)
            r = bench_ours(dev, c, dtype, a.prompt, a.decode, a.reps)
            r["batched"] = [bench_batched(dev, c, int(b), min(64, a.prompt), a.decode) for b in a.batch.split(",") if int(b) > 0]
            r.update(load)
            r["weight_bytes"] = dev.weight_bytes
            nbytes = decode_bytes(c, dtype, dev.weight_bytes, r["decode_ctx_avg"])
            r["decode_bytes_per_token"] = nbytes
            r["decode_gbs"] = nbytes * r["decode_tok_s"] / 1e9
            r["roofline_fraction"] = r["decode_gbs"] / bw
            del dev
            gc.collect()
            row = {"model": shape, "dtype": dtype, "edgeformer": r}
            if use_torch and dtype == "f16":
                row["torch"] = bench_torch(c, a.prompt, a.decode, a.reps)
            row["wall_s"] = round(time.perf_counter() - t0, 1)
            results["runs"].append(row)
            msg = (f"{shape} {dtype}: prefill {r['prefill_tok_s']:.0f} tok/s, decode {r['decode_tok_s']:.1f} tok/s "
                   f"({r['decode_gbs']:.0f} GB/s = {100 * r['roofline_fraction']:.0f}% of the copy bandwidth; "
                   f"{r['decode_tok_s_without_graphs']:.1f} without CUDA graphs, {r['graphs']['launches']} replays)")
            for b in r["batched"]:
                msg += f"; {b['batch']} sequences together: {b['decode_tok_s']:.0f} tok/s in all"
            if "torch" in row:
                msg += (f"; PyTorch prefill {row['torch']['prefill_tok_s']:.0f}, "
                        f"decode {row['torch']['decode_tok_s']:.1f} tok/s")
            print(msg, flush=True)
            os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
            with open(a.out, "w") as f:  # after every run: a later failure keeps what was measured
                json.dump(results, f, indent=1)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
