"""The edgeformer command: `edgeformer run MODEL "prompt"`, `edgeformer info`."""

from __future__ import annotations

import argparse
import sys


def _info(args) -> int:
    from . import __version__, cpu_info

    print(f"edgeformer {__version__}")
    try:
        info = cpu_info()
    except ValueError as e:  # EDGEFORMER_ISA names something this CPU cannot run
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"cpu: {info['brand'] or info['vendor']} ({info['arch']}), {info['physical_cores']} physical cores, "
          f"{info['logical_cores']} logical")
    feats = [k for k, v in info["features"].items() if v]
    print(f"features: {' '.join(feats) if feats else '(none detected)'}")
    print(f"kernels available: {', '.join(info['supported_isas'])}")
    print(f"kernels in use: {info['isa']}  (the best available; force one with EDGEFORMER_ISA=generic|avx2|avx512|avx512vnni|avx512bf16|amx|neon|neondot)")
    print(f"cuda: {_cuda_line()}")
    from .model import BLOCK_TYPES, GRID_TYPES

    print(f"weight types: f32 f16 bf16 {' '.join(BLOCK_TYPES)} int8  (GGUF in and out, load(dtype=...))")
    print(f"              {' '.join(GRID_TYPES)}  (GGUF in)")
    return 0


def _cuda_line() -> str:
    from . import _core

    if not _core.cuda_built():
        return "not in this build (pip install . -C cmake.define.EF_CUDA=ON)"
    n = _core.cuda_device_count()
    if n == 0:
        return "built; no device visible"
    d = _core.cuda_device_info(0)
    cc = ".".join(map(str, d["compute_capability"]))
    return f"{n} device{'s' if n > 1 else ''}; cuda:0 {d['name']} (sm {cc}, {d['total_memory'] / 2**30:.0f} GiB)"


DEFAULT_PROMPT = "The Python interpreter"


def _run(args) -> int:
    from . import demo_model_path, load
    from .device import parse_device

    if len(args.items) > 2:
        print("error: usage: edgeformer run [MODEL] [PROMPT]", file=sys.stderr)
        return 2
    model_path = args.items[0] if len(args.items) == 2 else demo_model_path()
    try:
        parse_device(args.device)  # before loading: a build or machine without CUDA says so at once
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.prompt = args.items[-1] if args.items else DEFAULT_PROMPT
    try:
        grammar = _grammar_arg(args)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model = load(model_path, dtype=args.dtype, threads=args.threads, max_context=args.max_context, device=args.device,
                 kv_dtype=args.kv_dtype)
    stream = model.generate(args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                            top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                            repetition_penalty=args.repetition_penalty, seed=args.seed, stream=True, grammar=grammar)
    print(args.prompt, end="", flush=True)
    return _stream(model, stream)


def _grammar_arg(args):
    """run's --grammar / --grammar-file / --json / --json-schema, as a Grammar (None: none given)."""
    from .grammar import Grammar

    given = [(k, v) for k, v in (("--grammar", args.grammar), ("--grammar-file", args.grammar_file),
                                 ("--json-schema", args.json_schema)) if v is not None]
    if args.json:
        given.append(("--json", True))
    if len(given) > 1:
        raise ValueError(f"{given[0][0]} and {given[1][0]}: give one of them")
    if not given:
        return None
    k, v = given[0]
    if k == "--grammar":
        return Grammar(v)
    if k == "--grammar-file":
        with open(v, encoding="utf-8") as f:
            return Grammar(f.read())
    if k == "--json-schema":
        if v.startswith("@"):  # @file.json
            with open(v[1:], encoding="utf-8") as f:
                v = f.read()
        return Grammar.from_json_schema(v)
    return Grammar.json()


def _stream(model, stream) -> int:
    try:
        for piece in stream:
            print(piece, end="", flush=True)
    except KeyboardInterrupt:
        print("\n[interrupted]", file=sys.stderr)
        return 130
    r = stream.result
    print()
    print(f"[prefill: {r.prompt_tokens} tokens, {r.prefill_tokens_per_s:.1f} tok/s | decode: {len(r.token_ids)} tokens, "
          f"{r.decode_tokens_per_s:.1f} tok/s | "
          + (f"{model.threads} threads, {_isa()} kernels" if model.device == "cpu" else model.device)
          + f" | {r.finish_reason}]",
          file=sys.stderr)
    return 0


def _non_negative(v: str) -> int:
    n = int(v)
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {v}")
    return n


def _serve(args) -> int:
    import os

    from . import demo_model_path, load
    from .device import parse_device
    from .server import serve

    path = args.model or demo_model_path()
    try:
        parse_device(args.device)  # before loading: a build or machine without CUDA says so at once
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model = load(path, dtype=args.dtype, threads=args.threads, max_context=args.max_context, kv_dtype=args.kv_dtype,
                 device=args.device)
    name = os.path.basename(os.path.normpath(path))
    return serve(model, name, args.host, args.port, args.max_batch, args.prefill_chunk or None, args.cors,
                 args.prefix_cache)


def _quantize(args) -> int:
    from .gguf_io import quantize

    out = quantize(args.src, args.out, args.type, threads=args.threads)
    import os

    print(f"wrote {out} ({os.path.getsize(out) / 2**20:.1f} MiB, {args.type})")
    return 0


def _embed(args) -> int:
    """Sentence embeddings of texts (the arguments, else one per line of standard input) as JSON lines, or one
    float32 array written with --out FILE.npy."""
    import json

    import numpy as np

    from . import load

    texts = args.texts or [line.rstrip("\n") for line in sys.stdin]
    if not texts:
        raise ValueError("no texts: pass them as arguments or one per line on standard input")
    model = load(args.model, threads=args.threads, dtype=args.dtype)
    vecs = model.embed(texts, pooling=args.pooling, normalize=args.normalize, batch_size=args.batch_size,
                       prompt=args.prompt, prompt_name=args.prompt_name)
    if args.out:
        np.save(args.out, vecs)
        print(f"wrote {args.out} ({vecs.shape[0]} x {vecs.shape[1]} float32)", file=sys.stderr)
        return 0
    for v in vecs:
        print(json.dumps([round(float(x), 7) for x in v]))
    return 0


def _isa() -> str:
    from . import _core

    return _core.active_isa()


def main(argv=None) -> int:
    from .embeddings import POOLINGS
    from .model import QUANTIZED

    p = argparse.ArgumentParser(prog="edgeformer", description="Transformer inference on the CPU")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="version, CPU features and the kernels chosen")
    d = sub.add_parser("demo", help="the bundled model generating text, and a semantic search with MiniLM")
    d.add_argument("--threads", type=int, default=None)
    r = sub.add_parser("run", help="generate text from a prompt, streaming")
    r.add_argument("items", nargs="*", metavar="[MODEL] [PROMPT]",
                   help="checkpoint directory, GGUF file or hub id (default: the bundled demo model), then the prompt")
    r.add_argument("-n", "--max-new-tokens", type=int, default=128)
    r.add_argument("--temperature", type=float, default=None)
    r.add_argument("--top-k", type=int, default=None)
    r.add_argument("--top-p", type=float, default=None)
    r.add_argument("--min-p", type=float, default=None)
    r.add_argument("--repetition-penalty", type=float, default=None)
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--threads", type=int, default=None)
    r.add_argument("--dtype", default=None,
                   help="f32, f16, bf16, int8 or a block type (q8_0, q6_k, q5_k, q5_1, q5_0, q4_k, q4_1, q4_0, "
                        "iq4_nl, iq4_xs, q3_k, q2_k): convert at load (default: as stored)")
    r.add_argument("--max-context", type=int, default=None)
    r.add_argument("--kv-dtype", default=None, choices=["f16", "bf16", "f32"],
                   help="the KV cache's element type (default: f32 beside f32 weights, else f16)")
    r.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N (a build with EF_CUDA=ON)")
    r.add_argument("--grammar", default=None, metavar="GBNF", help="constrain the text to this GBNF grammar")
    r.add_argument("--grammar-file", default=None, metavar="FILE", help="... to the GBNF grammar in FILE")
    r.add_argument("--json", action="store_true", help="... to one JSON object")
    r.add_argument("--json-schema", default=None, metavar="SCHEMA",
                   help="... to JSON that this JSON Schema accepts (its text, or @FILE)")
    s = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (continuous batching)")
    s.add_argument("model", nargs="?", default=None, help="checkpoint directory or GGUF file (default: the demo model)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--max-batch", type=int, default=16, help="the most requests decoded together")
    s.add_argument("--prefill-chunk", type=_non_negative, default=256,
                   help="the most prompt tokens prefilled between two decode steps (0: whole prompts)")
    s.add_argument("--prefix-cache", type=_non_negative, default=4, metavar="N",
                   help="KV caches of finished requests kept for prompts that begin with their tokens (a chat's "
                        "next turn); 0: none")
    s.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N (a build with EF_CUDA=ON)")
    s.add_argument("--cors", default=None, metavar="ORIGINS",
                   help="origins whose web pages may call the API, comma-separated ('*': any; default: none)")
    s.add_argument("--dtype", default=None, help="convert at load, as for run")
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--max-context", type=int, default=None)
    s.add_argument("--kv-dtype", default=None, choices=["f16", "bf16", "f32"])
    e = sub.add_parser("embed", help="sentence embeddings of texts (arguments, or one per line of standard input) "
                                     "as JSON lines")
    e.add_argument("model", help="checkpoint directory (a sentence-transformers one: its pooling, Dense modules "
                                 "and normalization), GGUF file or hub id")
    e.add_argument("texts", nargs="*", help="texts to embed (default: the lines of standard input)")
    e.add_argument("--pooling", default=None, choices=list(POOLINGS), help="default: the checkpoint's")
    e.add_argument("--normalize", default=None, action=argparse.BooleanOptionalAction,
                   help="L2-normalize (default: the checkpoint's)")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--prompt-name", default=None, metavar="NAME",
                   help="put the checkpoint's prompt NAME (config_sentence_transformers.json) before each text")
    e.add_argument("--prompt", default=None, help="put this text before each text")
    e.add_argument("--out", default=None, metavar="FILE.npy", help="write one float32 array [N, dim] instead")
    e.add_argument("--threads", type=int, default=None)
    e.add_argument("--dtype", default=None, help="convert at load, as for run")
    q = sub.add_parser("quantize", help="write a checkpoint as a GGUF file (llama.cpp's format), quantized")
    q.add_argument("src", help="checkpoint directory (config.json, *.safetensors, tokenizer.json)")
    q.add_argument("out", help="output .gguf file (written to a temporary name, then renamed)")
    q.add_argument("--type", default="q4_0", choices=list(QUANTIZED) + ["f16", "bf16", "f32"],
                   help="int8: q8_0 blocks that share one scale per row (CTranslate2's int8 scheme)")
    q.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    try:
        if args.cmd == "quantize":
            return _quantize(args)
        if args.cmd == "serve":
            return _serve(args)
        if args.cmd == "embed":
            return _embed(args)
        if args.cmd == "demo":
            from .demo import run_demo

            return run_demo(threads=args.threads)
        return _info(args) if args.cmd == "info" else _run(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
