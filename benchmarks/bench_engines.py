#!/usr/bin/env python3
"""Head-to-head: edgeformer, llama.cpp (llama-cpp-python), CTranslate2 and PyTorch (transformers) on the same
random-weight Llama checkpoints (benchmarks/make_checkpoints.py), the same bits where the formats allow (both
GGUF engines read the same llama.cpp-quantized file), the same threads, in one run.

    python benchmarks/bench_engines.py /data/bench --sizes 1.1b [--precisions f32,f16,q8_0,q4_0,q4_k]
        [--engines edgeformer,llama.cpp,ct2,torch] [--threads 2] [--repeat 3] [--llama-cpp DIR]

Each engine runs in its own process (loaded once, peak memory its own); within a precision every engine's
process stays up and the measurements go round robin, the order rotating each round, so that the machine's
drift hits every engine alike. Prefill: a random prompt of each length, timed to its last-position logits.
Decode: `--new` greedy tokens after a prompt of the first length, tokens/s of the steps after the first.
Reported: medians, every engine's ratio to edgeformer, peak and generating resident memory, and decode as a
fraction of the roofline (read bandwidth / weight bytes read per token), each decode sample against the
bandwidth measured just before it (this machine's bandwidth moves with its neighbours).
Writes benchmarks/results/<name>.json and .png and prints a Markdown table.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


# --------------------------------------------------------------------------------------------------- workers
class Edgeformer:
    def __init__(self, path, precision, threads, ctx):
        import edgeformer

        dtype = {"f32": "f32", "bf16": "bf16"}.get(precision) if os.path.isdir(path) else None
        self.m = edgeformer.load(path, threads=threads, dtype=dtype, max_context=ctx)
        self.name = f"edgeformer {edgeformer.__version__} ({edgeformer._core.active_isa()})"

    def prefill(self, ids):
        # the prompt, then the logits of its last position only, as the other engines compute (and generate())
        self.m._core.reset()
        self.m._cached = []
        last = self.m._prefill_head([int(i) for i in ids])
        self.m._core.forward(np.asarray(last, np.int32), False)
        self.m._cached.extend(last)

    def decode(self, ids, n):
        self.prefill(ids[:-1])
        t0 = time.perf_counter()  # generate() reuses the cached prefix: one 1-token step, then n - 1 more
        r = self.m.generate(list(ids), max_new_tokens=n, temperature=0, ignore_eos=True)
        t1 = time.perf_counter()
        assert len(r.token_ids) == n
        return [t0] + [t1] * n  # n forward steps in t1 - t0 (pessimistic by one step against the others)


class LlamaCpp:
    def __init__(self, path, precision, threads, ctx):
        import llama_cpp

        self.m = llama_cpp.Llama(model_path=path, n_ctx=ctx, n_threads=threads, n_threads_batch=threads,
                                 n_batch=512, n_ubatch=512, verbose=False)
        self.name = f"llama.cpp (llama-cpp-python {llama_cpp.__version__})"

    def prefill(self, ids):
        self.m.reset()
        self.m.eval(list(ids))

    def decode(self, ids, n):
        self.prefill(ids)
        times = []
        nv = self.m.n_vocab()
        for _ in range(n):  # the last position's logits (llama-cpp-python keeps scores only with logits_all)
            tok = int(np.argmax(np.ctypeslib.as_array(self.m._ctx.get_logits(), shape=(nv,))))
            self.m.eval([tok])
            times.append(time.perf_counter())
        return times


class CT2:
    def __init__(self, path, precision, threads, ctx):
        import ctranslate2

        self.compute = "int8" if precision in ("q8_0", "int8") else "float32"
        self.m = ctranslate2.Generator(path, device="cpu", compute_type=self.compute, intra_threads=threads)
        with open(os.path.join(path, "vocabulary.json")) as f:
            self.vocab = json.load(f)
        self.name = f"CTranslate2 {ctranslate2.__version__} ({self.compute})"

    def _run(self, ids, n):
        toks = [self.vocab[i] for i in ids]
        times = []
        for _ in self.m.generate_tokens(toks, max_length=n, min_length=n, sampling_topk=1):
            times.append(time.perf_counter())
            if len(times) >= n:
                break
        return times

    def prefill(self, ids):
        self._run(ids, 1)

    def decode(self, ids, n):
        return self._run(ids, n)


class Torch:
    def __init__(self, path, precision, threads, ctx):
        import torch
        import transformers

        torch.set_num_threads(threads)
        self.torch = torch
        self.dt = {"f32": torch.float32, "bf16": torch.bfloat16}[precision]
        self.m = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=self.dt).eval()
        self.name = f"PyTorch {torch.__version__.split('+')[0]} ({str(self.dt).split('.')[1]})"

    def _forward(self, x, past):
        out = self.m(x, past_key_values=past, use_cache=True, logits_to_keep=1)
        return out.logits[0, -1], out.past_key_values

    def prefill(self, ids):
        with self.torch.inference_mode():
            return self._forward(self.torch.tensor([list(ids)]), None)

    def decode(self, ids, n):
        with self.torch.inference_mode():
            logits, past = self.prefill(ids)
            times = []
            for _ in range(n):
                tok = int(logits.argmax())
                logits, past = self._forward(self.torch.tensor([[tok]]), past)
                times.append(time.perf_counter())
        return times


ENGINES = {"edgeformer": Edgeformer, "llama.cpp": LlamaCpp, "ct2": CT2, "torch": Torch}


def rss_mib():
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS", "VmHWM")):
                    k, v = line.split(":")
                    out[k] = int(v.split()[0]) / 1024
    except OSError:
        pass
    return out.get("VmRSS", 0.0), out.get("VmHWM", 0.0)


def worker(spec):
    """Loads one engine, then answers commands on stdin with one JSON line each on stdout."""
    s = json.loads(spec)
    if s.get("isa"):
        os.environ["EDGEFORMER_ISA"] = s["isa"]
        if s["isa"] == "avx2":  # the other engines held to the same instructions (llama.cpp: its AVX2 build)
            os.environ["CT2_FORCE_CPU_ISA"] = "AVX2"
            os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"  # CTranslate2's int8 products run in oneDNN
            os.environ["ATEN_CPU_CAPABILITY"] = "avx2"
    if s.get("llama_cpp_dir"):
        sys.path.insert(0, s["llama_cpp_dir"])
    out = sys.stdout
    sys.stdout = sys.stderr  # engines' chatter stays off the protocol
    t0 = time.perf_counter()
    e = ENGINES[s["engine"]](s["path"], s["precision"], s["threads"], s["ctx"])
    out.write(json.dumps({"name": e.name, "load_s": time.perf_counter() - t0}) + "\n")
    out.flush()
    rng = np.random.default_rng(0)
    gen_rss = 0.0
    for line in sys.stdin:
        cmd = json.loads(line)
        ids = [int(x) for x in rng.integers(258, s["vocab"], size=cmd["prompt"])]
        if cmd["op"] == "prefill":
            t0 = time.perf_counter()
            e.prefill(ids)
            r = {"tok_s": len(ids) / (time.perf_counter() - t0)}
        else:
            times = e.decode(ids, cmd["new"])
            gen_rss = max(gen_rss, rss_mib()[0])
            r = {"tok_s": (len(times) - 1) / (times[-1] - times[0])}
        r["rss_mib"], r["peak_mib"] = rss_mib()
        r["gen_rss_mib"] = gen_rss
        out.write(json.dumps(r) + "\n")
        out.flush()


# --------------------------------------------------------------------------------------------------- runner
class Proc:
    def __init__(self, spec):
        self.spec = spec
        self.p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        hello = self.p.stdout.readline()
        if not hello:
            self.p.wait()
            raise RuntimeError(f"{spec['engine']} {spec['precision']} ({spec['path']}): failed to load")
        h = json.loads(hello)
        self.name, self.load_s = h["name"], h["load_s"]

    def ask(self, **cmd):
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: worker died")
        return json.loads(line)

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def gguf_weight_bytes(path):
    """Bytes of the weights one decode step reads: every tensor but the embedding tables (one row each: the token
    embedding, unless it is the head too, and Gemma 4's per-layer one); of a mixture of experts' stacked experts
    (ffn_*_exps), the share one token takes (expert_used_count of expert_count)."""
    import gguf

    r = gguf.GGUFReader(path)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    count = lambda key: int(r.fields[key].parts[-1][0]) if key in r.fields else 0  # noqa: E731
    n, used = count(f"{arch}.expert_count"), count(f"{arch}.expert_used_count")
    share = lambda t: used / n if n and "_exps." in t.name else 1.0  # noqa: E731
    tied = not any(t.name == "output.weight" for t in r.tensors)
    gathered = ("per_layer_token_embd",) if tied else ("token_embd", "per_layer_token_embd")
    return int(sum(int(t.n_bytes) * share(t) for t in r.tensors if not t.name.startswith(gathered)))


def hf_weight_bytes(hf_dir, bytes_per_param):
    with open(os.path.join(hf_dir, "config.json")) as f:
        c = json.load(f)
    h, f_, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    hd = h // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * hd
    params = L * (2 * h * h + 2 * h * kv + 3 * h * f_) + V * h
    return params * bytes_per_param


IQUANTS = ("iq3_s", "iq3_xxs", "iq2_s", "iq2_xs", "iq2_xxs", "iq1_m", "iq1_s")


def configs(root, size, precision, engines):
    """(engine, path, label) for one precision; the GGUF engines share llama.cpp's quantized file."""
    hf = os.path.join(root, size, "hf")
    f = lambda n: os.path.join(root, size, n)  # noqa: E731
    lc = {"q8_0": "lc-q8_0.gguf", "q4_0": "lc-q4_0.gguf", "q4_k": "lc-q4_k_m.gguf", "q5_k": "lc-q5_k_m.gguf",
          "q3_k": "lc-q3_k_m.gguf", "q2_k": "lc-q2_k.gguf", "iq4_xs": "lc-iq4_xs.gguf",
          # benchmarks/make_iquant_files.py: llama.cpp's quantizer, layer matrices of one i-quant type
          **{k: f"lc-{k}.gguf" for k in IQUANTS}}
    table = {
        "f32": [("edgeformer", hf, "f32"), ("ct2", f("ct2-float32"), "f32"), ("torch", hf, "f32")],
        "f16": [("edgeformer", f("ef-f16.gguf"), "f16"), ("llama.cpp", f("ef-f16.gguf"), "f16")],
        "bf16": [("edgeformer", hf, "bf16"), ("torch", hf, "bf16")],
        "q8_0": [("edgeformer", f(lc["q8_0"]), "q8_0"), ("llama.cpp", f(lc["q8_0"]), "q8_0"),
                 ("ct2", f("ct2-int8"), "int8")],
        # edgeformer's int8 (q8_0 rows sharing one scale) against CTranslate2's int8 and llama.cpp's q8_0
        "int8": [("edgeformer", f("ef-int8.gguf"), "int8"), ("ct2", f("ct2-int8"), "int8"),
                 ("llama.cpp", f(lc["q8_0"]), "q8_0")],
        "q4_0": [("edgeformer", f(lc["q4_0"]), "q4_0"), ("llama.cpp", f(lc["q4_0"]), "q4_0")],
        "q4_k": [("edgeformer", f(lc["q4_k"]), "q4_k_m"), ("llama.cpp", f(lc["q4_k"]), "q4_k_m")],
        # BitNet's ternary projections: our TQ2_0 file (scales of 1, a scale tensor per matrix) and llama.cpp's
        # TQ1_0 made from it, each read by both engines
        "tq2_0": [(e, f("ef-tq2_0.gguf"), "tq2_0") for e in ("edgeformer", "llama.cpp")],
        "tq1_0": [(e, f("lc-tq1_0.gguf"), "tq1_0") for e in ("edgeformer", "llama.cpp")],
        # llama.cpp's other K-quant mixes, read by both engines from its own file
        **{k: [(e, f(lc[k]), lc[k][3:-5]) for e in ("edgeformer", "llama.cpp")]
           for k in ("q5_k", "q3_k", "q2_k", "iq4_xs") + IQUANTS},
    }
    out = []
    for eng, path, label in table[precision]:
        if eng not in engines:
            continue
        if not os.path.exists(path) and eng == "edgeformer" and path.endswith(".gguf"):
            path = f(f"ef-{precision}.gguf")  # no llama.cpp file: our own
        if os.path.exists(path) and (eng != "torch" or os.path.exists(os.path.join(path, "config.json"))):
            out.append((eng, path, label))
    return out


def weight_bytes(path, precision, hf):
    if path.endswith(".gguf"):
        return gguf_weight_bytes(path)
    return hf_weight_bytes(hf, {"f32": 4, "bf16": 2, "f16": 2, "q8_0": 1, "int8": 1}[precision])


def run(args):
    if args.llama_cpp:
        sys.path.insert(0, args.llama_cpp)
    import edgeformer

    bw = edgeformer._core.read_bandwidth(1024, args.threads, 5)
    print(f"read bandwidth, {args.threads} threads: {bw:.1f} GB/s", flush=True)
    bws = [bw]  # and again before every decode measurement: this machine's bandwidth moves with its neighbours
    rows = []
    prompts = [int(p) for p in args.prompts.split(",")]
    for size in args.sizes.split(","):
        hf = os.path.join(args.root, size, "hf")
        vocab = 32000  # make_checkpoints.py's vocabulary
        for prec in args.precisions.split(","):
            cfgs = configs(args.root, size, prec, args.engines.split(","))
            if not cfgs:
                continue
            procs = []
            for eng, path, label in cfgs:
                spec = {"engine": eng, "path": path, "precision": prec, "threads": args.threads,
                        "ctx": max(prompts) + args.new + 16, "vocab": vocab, "isa": args.isa,
                        "llama_cpp_dir": args.llama_cpp}
                try:
                    procs.append((Proc(spec), label, path))
                except RuntimeError as e:
                    print(f"  skipped: {e}", flush=True)
            res = {id(p): {"prefill": {n: [] for n in prompts}, "decode": [], "bw": [], "mem": {}} for p, _, _ in procs}
            for p, _, _ in procs:  # warm-up: pages in the weights, first-call allocations
                p.ask(op="prefill", prompt=min(prompts))
            for r in range(args.repeat):
                order = procs[r % len(procs):] + procs[:r % len(procs)]
                for n in prompts:
                    for p, _, _ in order:
                        res[id(p)]["prefill"][n].append(p.ask(op="prefill", prompt=n)["tok_s"])
                for p, _, _ in order:
                    b = edgeformer._core.read_bandwidth(1024, args.threads, 3)  # the workers are idle here
                    bws.append(b)
                    d = p.ask(op="decode", prompt=prompts[0], new=args.new)
                    res[id(p)]["decode"].append(d["tok_s"])
                    res[id(p)]["bw"].append(b)
                    res[id(p)]["mem"] = d
            for p, label, path in procs:
                r = res[id(p)]
                wb = weight_bytes(path, prec, hf)
                dec = statistics.median(r["decode"])
                # each decode sample against the bandwidth measured just before it
                frac = statistics.median(t * wb / (b * 1e9) for t, b in zip(r["decode"], r["bw"]))
                rows.append({"size": size, "precision": prec, "format": label, "engine": p.name,
                             "file": os.path.relpath(path, args.root),
                             **{f"prefill{n}_tok_s": statistics.median(r["prefill"][n]) for n in prompts},
                             "decode_tok_s": dec, "weight_bytes_per_token": wb,
                             "roofline_tok_s": statistics.median(r["bw"]) * 1e9 / wb, "roofline_fraction": frac,
                             "peak_rss_mib": r["mem"].get("peak_mib"), "gen_rss_mib": r["mem"].get("gen_rss_mib"),
                             "load_s": p.load_s,
                             "samples": {"prefill": r["prefill"], "decode": r["decode"], "bandwidth_gb_s": r["bw"]}})
                p.close()
            print_rows([x for x in rows if x["size"] == size and x["precision"] == prec], prompts)
    return {"machine": machine(), "threads": args.threads, "isa": args.isa or edgeformer._core.active_isa(),
            "bandwidth_gb_s": statistics.median(bws), "bandwidth_range_gb_s": [min(bws), max(bws)], "prompts": prompts, "new_tokens": args.new, "repeat": args.repeat,
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "rows": rows}


def machine():
    import edgeformer

    c = edgeformer.cpu_info()
    f = [k for k, v in c["features"].items() if v and k.startswith(("avx512", "amx", "avx2", "dotprod", "i8mm"))]
    return f"{c['brand'] or c['vendor']} {platform.machine()}, {os.cpu_count()} cpus ({', '.join(f)})"


def ratio_to_us(rows, r, key):
    base = [x for x in rows if x["size"] == r["size"] and x["precision"] == r["precision"]
            and x["engine"].startswith("edgeformer")]
    return r[key] / base[0][key] if base and base[0][key] else float("nan")


def print_rows(rows, prompts):
    for r in rows:
        pf = "  ".join(f"pf{n} {r[f'prefill{n}_tok_s']:7.1f} ({ratio_to_us(rows, r, f'prefill{n}_tok_s'):4.2f})"
                       for n in prompts)
        print(f"  {r['size']:5s} {r['precision']:5s} {r['engine'][:44]:44s} {pf}  decode {r['decode_tok_s']:6.1f} "
              f"({ratio_to_us(rows, r, 'decode_tok_s'):4.2f}) roofline {100 * r['roofline_fraction']:3.0f}%  "
              f"rss {r['gen_rss_mib']:6.0f} MiB", flush=True)


def markdown(res):
    prompts = res["prompts"]
    head = ("| size | precision | engine | " + " | ".join(f"prefill {n} tok/s" for n in prompts) +
            " | decode tok/s | decode % of roofline | RSS generating (MiB) |")
    span = res.get("bandwidth_range_gb_s")  # results written before the bandwidth was measured per sample
    bw = f"{res['bandwidth_gb_s']:.1f} GB/s" + (f" (median; {span[0]:.1f}-{span[1]:.1f} before each decode)" if span else "")
    lines = [f"Machine: {res['machine']}; {res['threads']} threads; edgeformer ISA {res['isa']}; read bandwidth "
             f"{bw}; median of {res['repeat']}; ratio to edgeformer in brackets.", "",
             head, "|" + "---|" * (head.count("|") - 1)]
    for r in res["rows"]:
        pf = " | ".join(f"{r[f'prefill{n}_tok_s']:.1f} ({ratio_to_us(res['rows'], r, f'prefill{n}_tok_s'):.2f}x)"
                        for n in prompts)
        lines.append(f"| {r['size']} | {r['format']} | {r['engine']} | {pf} | {r['decode_tok_s']:.1f} "
                     f"({ratio_to_us(res['rows'], r, 'decode_tok_s'):.2f}x) | {100 * r['roofline_fraction']:.0f}% | "
                     f"{r['gen_rss_mib']:.0f} |")
    return "\n".join(lines)


def chart(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = {(r["size"], r["precision"]) for r in res["rows"]}  # (size, precision) in the order measured
    groups = [(s, p) for s in dict.fromkeys(r["size"] for r in res["rows"])
              for p in dict.fromkeys(r["precision"] for r in res["rows"]) if (s, p) in present]
    engines = list(dict.fromkeys(r["engine"].split(" (")[0].split(" ")[0] for r in res["rows"]))
    metrics = [f"prefill{res['prompts'][0]}_tok_s", "decode_tok_s"]
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.8))
    width = 0.8 / max(1, len(engines))
    for ax, metric in zip(axes, metrics):
        for i, eng in enumerate(engines):
            vals = []
            for g in groups:
                m = [r[metric] for r in res["rows"] if (r["size"], r["precision"]) == g
                     and r["engine"].split(" (")[0].split(" ")[0] == eng]
                vals.append(m[0] if m else 0)
            ax.bar([j + i * width for j in range(len(groups))], vals, width, label=eng)
        ax.set_xticks([j + width * (len(engines) - 1) / 2 for j in range(len(groups))])
        ax.set_xticklabels([f"{s}\n{p}" for s, p in groups])
        ax.set_ylabel("tokens/s")
        ax.set_title(metric.replace("_tok_s", "").replace("prefill", "prefill, prompt ") + f" ({res['threads']} threads)")
        ax.legend(fontsize=8)
    fig.suptitle(res["machine"][:110], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", nargs="?")
    ap.add_argument("--sizes", default="1.1b")
    ap.add_argument("--precisions", default="f32,f16,bf16,q8_0,int8,q4_0,q4_k")
    ap.add_argument("--engines", default="edgeformer,llama.cpp,ct2,torch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", default="128,512")
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--isa", default=None, help="EDGEFORMER_ISA for edgeformer's workers (e.g. avx2; avx2 also "
                    "forces CTranslate2's and PyTorch's AVX2 paths; pass llama.cpp's AVX2 build with --llama-cpp)")
    ap.add_argument("--llama-cpp", default=None, help="folder with an installed llama_cpp package (--target)")
    ap.add_argument("--name", default=None, help="results file name (default: date and ISA)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker)
    if not a.root:
        ap.error("the checkpoints folder (benchmarks/make_checkpoints.py) is required")
    res = run(a)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    name = a.name or f"{datetime.date.today().isoformat()}-{res['isa']}"
    base = os.path.join(HERE, "results", name)
    with open(base + ".json", "w") as f:
        json.dump(res, f, indent=1)
    md = markdown(res)
    with open(base + ".md", "w") as f:
        f.write(md + "\n")
    chart(res, base + ".png")
    print("\n" + md + f"\n\nwrote {base}.json .md .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
