"""Shared by the fuzz harnesses (fuzz_*.py) and their replay test (tests/test_fuzz_regressions.py).

A harness module defines ``check(data: bytes) -> None``: it feeds data to edgeformer and returns normally
when edgeformer either accepts the input or rejects it with a ValueError. Anything else escaping check()
is a finding: another exception type (TypeError, IndexError, MemoryError, a tokenizers panic ...), or a
``Finding`` the harness raises itself when a property fails (a wrong result, a file left mapped). A crash
(a signal), a hang (-timeout) and a memory blow-up (-rss_limit_mb) are found by libFuzzer itself.

Run under atheris (``python fuzz/fuzz_X.py [libFuzzer flags] CORPUS...``, see fuzz/run.sh), a harness
does not stop at an exception: it saves the input as fuzz/crashes/<harness>-exc-<signature hash> (once per
signature; a file already there under that name, or that name plus "-<description>", is kept), logs the
traceback to the work folder and goes on. Signals, timeouts and OOMs stop the run;
libFuzzer saves those inputs as fuzz/crashes/<harness>-crash-<sha1> (-artifact_prefix).
"""

from __future__ import annotations

import atexit
import gc
import hashlib
import os
import re
import shutil
import sys
import tempfile
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CRASH_DIR = os.path.join(HERE, "crashes")
CORPUS_DIR = os.path.join(HERE, "corpus")
WORK_DIR = os.environ.get("FUZZ_WORK") or os.path.join(HERE, ".work")


# Under atheris (fuzz_main) the harnesses skip inputs that hit an already reported bug (their KNOWN
# lists), so that a 60-second run is not spent re-finding one hang; replaying fuzz/crashes/ never skips.
SKIP_KNOWN = False


class Finding(Exception):
    """A property the harness checks does not hold (never a ValueError, so it is always reported)."""


_scratch: Optional[str] = None


def scratch(name: str) -> str:
    """A path in this process's private temporary folder (removed at exit)."""
    global _scratch
    if _scratch is None:
        _scratch = tempfile.mkdtemp(prefix="ef-fuzz-")
        atexit.register(shutil.rmtree, _scratch, True)
    return os.path.join(_scratch, name)


def write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def mapped(path: str) -> List[str]:
    """Lines of /proc/self/maps that map path (empty where /proc is missing)."""
    try:
        with open("/proc/self/maps") as f:
            real = os.path.realpath(path)
            return [ln for ln in f if ln.rstrip("\n").endswith((" " + path, " " + real, " " + real + " (deleted)"))]
    except OSError:
        return []


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def assert_released(path: str, fds_before: int) -> None:
    """Once every Python reference is gone, the file must be unmapped and its descriptor closed."""
    if mapped(path) or (fds_before >= 0 and open_fds() > fds_before):
        gc.collect()
    left = mapped(path)
    if left:
        raise Finding(f"{path} is still memory-mapped after every reference was dropped: {left[0].strip()}")
    fds = open_fds()
    if fds_before >= 0 and fds > fds_before:
        raise Finding(f"{fds - fds_before} file descriptor(s) leaked ({fds_before} open before, {fds} after)")


# -- a tiny checkpoint for any ArchSpec ---------------------------------------------------------------------

_EXPERT = re.compile(r"moe\.experts\.\d+\.((?:gate|up|down)\.(?:weight|bias))")
_LAYER = re.compile(r"layers\.(\d+)\.(.+)$")
_LATENT = re.compile(r"attn\.(k_b|v_b)\.\d+\.weight")


def canonical_shape(spec, name: str) -> Optional[List[int]]:
    """The shape edgeformer's C++ loader expects for a canonical weight (cpp/src/model/model_load.cc, Loader)."""
    H, V, F, hd = spec.hidden_size, spec.vocab_size, spec.ffn_size, spec.head_dim
    vd = spec.v_head_dim or hd
    QD, KD, KVD, QVD = spec.n_heads * hd, spec.n_kv_heads * hd, spec.n_kv_heads * vd, spec.n_heads * vd
    E = spec.proj_dim if spec.proj_dim > 0 else H
    top = {
        "tok_embeddings.weight": [V, E],
        "pos_embeddings.weight": [spec.max_position + spec.pos_offset, H],
        "token_type_embeddings.weight": [spec.n_token_types, H],
        "proj_in.weight": [H, E],
        "proj_out.weight": [E, H],
        "emb_norm.weight": [H], "emb_norm.bias": [H],
        "norm.weight": [H], "norm.bias": [H],
        "lm_head.weight": [V, E], "lm_head.bias": [V],
        "rel_bias.weight": [spec.rel_buckets, spec.n_heads],
        "ple.embed.weight": [spec.ple_vocab, spec.n_layers * spec.ple_dim],
        "ple.proj.weight": [spec.n_layers * spec.ple_dim, H], "ple.norm.weight": [spec.ple_dim],
    }
    if name in top:
        return top[name]
    if re.fullmatch(r"altup\.(proj|unembed)\.\d+\.weight", name):
        return [H, H]
    m = _LAYER.match(name)
    if not m:
        return None
    i = int(m.group(1))
    if 0 <= i < spec.n_layers:  # (Gemma 4's per-layer head sizes, key/value heads and MLP widths)
        hd = spec.layer_head_dim[i] if spec.layer_head_dim else hd
        vd = spec.layer_head_dim[i] if spec.layer_head_dim else vd
        nkv = spec.layer_kv_heads[i] if spec.layer_kv_heads else spec.n_kv_heads
        F = spec.layer_ffn[i] if spec.layer_ffn else F
        QD, KD, KVD, QVD = spec.n_heads * hd, nkv * hd, nkv * vd, spec.n_heads * vd
    N, P, R = spec.altup, spec.ple_dim, spec.laurel_rank
    gemma = {"ple.gate.weight": [P, H], "ple.proj.weight": [H, P], "ple.norm.weight": [H], "out_scale": [1],
             "altup.norm.weight": [H], "altup.router.weight": [N, H], "altup.pred.weight": [N * N, N],
             "altup.corr.weight": [N, N], "altup.out_scale": [H], "laurel.l.weight": [R, H],
             "laurel.r.weight": [H, R], "laurel.norm.weight": [H], "moe.router.in_scale": [H],
             "moe.router.expert_scale": [spec.n_experts], "post_mlp_norm_1.weight": [H], "moe_norm.weight": [H],
             "post_moe_norm.weight": [H], "attn.sub_norm.weight": [QVD], "mlp.sub_norm.weight": [F]}
    if m.group(2) in gemma:
        return gemma[m.group(2)]
    layer = {
        "attn_norm.weight": [H], "attn_norm.bias": [H], "mlp_norm.weight": [H], "mlp_norm.bias": [H],
        "cross_norm.weight": [H], "cross_norm.bias": [H],
        "attn.q.weight": [QD, H], "attn.k.weight": [KD, H], "attn.v.weight": [KVD, H], "attn.o.weight": [H, QVD],
        "attn.q.bias": [QD], "attn.k.bias": [KD], "attn.v.bias": [KVD], "attn.o.bias": [H],
        "mlp.gate.weight": [F, H], "mlp.up.weight": [F, H], "mlp.down.weight": [H, F],
        "mlp.gate.bias": [F], "mlp.up.bias": [F], "mlp.down.bias": [H],
        "cross.q.weight": [QD, H], "cross.k.weight": [QD, H], "cross.v.weight": [QD, H], "cross.o.weight": [H, QD],
        "attn.q_norm.weight": [spec.n_heads, hd] if spec.qk_norm_per_head else [QD] if spec.qk_norm_full else [hd],
        "attn.k_norm.weight": [spec.n_kv_heads, hd] if spec.qk_norm_per_head else [KD] if spec.qk_norm_full else [hd],
        "attn.sinks": [spec.n_heads], "moe.router.select_bias": [spec.n_experts],
        "moe.shared.gate.bias": [spec.shared_ffn_size], "moe.shared.up.bias": [spec.shared_ffn_size],
        "moe.shared.down.bias": [H],
        "post_attn_norm.weight": [H], "post_mlp_norm.weight": [H],
        "moe.router.weight": [spec.n_experts, H], "moe.router.bias": [spec.n_experts],
        "moe.shared.gate.weight": [spec.shared_ffn_size, H], "moe.shared.up.weight": [spec.shared_ffn_size, H],
        "moe.shared.down.weight": [H, spec.shared_ffn_size], "moe.shared_scale.weight": [1, H],
    }
    if spec.lin_k_heads > 0:  # Gated DeltaNet layers (linear_attention.cc: load_linear) and gated attention
        Hv, KD, VD = spec.lin_v_heads, spec.lin_k_heads * spec.lin_k_dim, spec.lin_v_heads * spec.lin_v_dim
        lin = {"lin.qkv.weight": [2 * KD + VD, H], "lin.z.weight": [VD, H], "lin.b.weight": [Hv, H],
               "lin.a.weight": [Hv, H], "lin.out.weight": [H, VD], "lin.conv.weight": [2 * KD + VD, 1, spec.lin_conv],
               "lin.dt_bias": [Hv], "lin.A_log": [Hv], "lin.norm.weight": [spec.lin_v_dim]}
        if m.group(2) in lin:
            return lin[m.group(2)]
    if spec.ssm_dt_rank > 0 and m.group(2).startswith("lin."):  # Mamba mixers (linear_attention.cc: load_linear)
        I, N, R = spec.ssm_heads * spec.ssm_head_dim, spec.ssm_state, spec.ssm_dt_rank
        mamba1 = {"lin.in.weight": [2 * I, H], "lin.out.weight": [H, I], "lin.conv.weight": [I, 1, spec.lin_conv],
                  "lin.conv.bias": [I], "lin.x.weight": [R + 2 * N, I], "lin.dt.weight": [I, R], "lin.dt_bias": [I],
                  "lin.A_log": [I, N], "lin.D": [I], "lin.dt_norm.weight": [R], "lin.b_norm.weight": [N],
                  "lin.c_norm.weight": [N]}
        if m.group(2) in mamba1:
            return mamba1[m.group(2)]
    if spec.ssm_heads > 0 and m.group(2).startswith("lin."):  # Mamba2 mixers (linear_attention.cc: load_linear)
        I, nh = spec.ssm_heads * spec.ssm_head_dim, spec.ssm_heads
        CD = I + 2 * spec.ssm_groups * spec.ssm_state
        mamba = {"lin.in.weight": [I + CD + nh, H], "lin.out.weight": [H, I], "lin.conv.weight": [CD, 1, spec.lin_conv],
                 "lin.conv.bias": [CD], "lin.dt_bias": [nh], "lin.A_log": [nh], "lin.D": [nh], "lin.norm.weight": [I]}
        if m.group(2) in mamba:
            return mamba[m.group(2)]
    if spec.lin_k_heads == 0 and m.group(2) in ("lin.in.weight", "lin.out.weight", "lin.conv.weight"):  # (LFM2)
        return {"lin.in.weight": [3 * H, H], "lin.out.weight": [H, H], "lin.conv.weight": [H, 1, spec.lin_conv]}[m.group(2)]
    if m.group(2) == "attn.gate.weight":
        return [QD, H]
    if spec.mla_kv_lora > 0:  # latent attention (model_load.cc: the MLA weights)
        Lk, Lq, dn, dv, dr = spec.mla_kv_lora, spec.mla_q_lora, spec.mla_nope, spec.mla_v, spec.rope.rotary_dim
        dq = spec.n_heads * (dn + dr)
        mla = {"attn.q_a.weight": [Lq, H], "attn.q_a_norm.weight": [Lq], "attn.q_b.weight": [dq, Lq],
               "attn.q.weight": [dq, H], "attn.kv_a.weight": [hd, H], "attn.kv_a_norm.weight": [Lk],
               "attn.o.weight": [H, spec.n_heads * dv]}
        if m.group(2) in mla:
            return mla[m.group(2)]
        h = _LATENT.fullmatch(m.group(2))
        if h:
            return [Lk, dn] if h.group(1) == "k_b" else [dv, Lk]
    e = _EXPERT.fullmatch(m.group(2))
    if e:  # one expert's matrix or bias
        FE = spec.moe_ffn_size
        return {"gate.weight": [FE, H], "up.weight": [FE, H], "down.weight": [H, FE], "gate.bias": [FE],
                "up.bias": [FE], "down.bias": [H]}[e.group(1)]
    return layer.get(m.group(2))


def source_shapes(spec, names: Dict[str, Any]) -> Optional[Dict[str, List[int]]]:
    """Checkpoint tensor name -> shape that makes every entry of a name map (plain names and Derived
    recipes: transposed Conv1D weights, row groups of fused QKV) come out at its canonical shape.
    None when a canonical name is unknown to canonical_shape."""
    out: Dict[str, List[int]] = {}
    for canonical, v in names.items():
        shape = canonical_shape(spec, canonical)
        if shape is None:
            return None
        if isinstance(v, str):
            out[v] = list(shape)
            continue
        if hasattr(v, "srcs"):  # Stacked: one vector per head
            for src in v.srcs:
                out[src] = [shape[-1]]
            continue
        if type(v).__name__ == "_RowsT":  # rows of a tensor, transposed (DeepSeek's k_b)
            need = [v.rows.stop, shape[0]]
            prev = out.get(v.src)
            out[v.src] = [max(a, b) for a, b in zip(need, prev)] if prev else need
            continue
        rows = v.rows
        if rows is None:
            need = shape[0]
        elif isinstance(rows, slice):  # (a stride: gpt-oss's interleaved gate and up rows)
            need = rows.stop if rows.stop is not None else (rows.start or 0) + (rows.step or 1) * (shape[0] - 1) + 1
        else:
            need = (max(rows) + 1) if len(rows) else 0
        src = [need] + list(shape[1:])
        if v.transpose:
            src = src[::-1]
        if getattr(v, "index", None) is not None:  # one of stacked experts
            src = [v.index + 1] + src
        prev = out.get(v.src)
        if prev is not None and len(prev) == len(src):  # parts of one fused tensor: the union of their extents
            src = [max(a, b) for a, b in zip(src, prev)]
        out[v.src] = src
    return out


def numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def make_arrays(shapes: Dict[str, List[int]], seed: int = 0) -> Dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        if len(shape) == 1 and (name.endswith("weight") or name.endswith("gamma")):
            out[name] = (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)  # norm scales near 1
        else:
            out[name] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    return out


# -- outcome features ---------------------------------------------------------------------------------------
# Only edgeformer's Python code is instrumented (the C++ core is not built for coverage), so on its own
# libFuzzer would see almost no coverage for the file readers, keep no corpus and mutate blindly. Each
# harness therefore reports what happened as "features" (the class of an error message with the numbers
# and names taken out, the dtypes and ranks of the tensors read, the stage a GGUF file got to ...): a key
# is hashed onto one of N tiny instrumented functions, so an input that produces a new outcome counts as
# new coverage and is kept. Outside atheris feature() does nothing.

_FEATURE_FNS: Optional[list] = None
N_FEATURES = 4096


def _enable_features() -> None:
    global _FEATURE_FNS
    import atheris

    fns = []
    for i in range(N_FEATURES):
        ns: Dict[str, Any] = {}
        exec(f"def f{i}():\n    return {i}\n", ns)
        fns.append(atheris.instrument_func(ns[f"f{i}"]))
    _FEATURE_FNS = fns


def feature(*key: Any) -> None:
    if _FEATURE_FNS is not None:
        h = hashlib.blake2b(repr(key).encode(), digest_size=4).digest()
        _FEATURE_FNS[int.from_bytes(h, "little") % N_FEATURES]()


_NUM = re.compile(r"-?\d+(\.\d+)?(e[-+]?\d+)?")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def error_class(e: BaseException, path: str = "") -> str:
    """An error message with the file, quoted names and numbers taken out: which check failed."""
    msg = str(e)
    if path:
        msg = msg.replace(path, "P")
    msg = _QUOTED.sub("Q", msg)
    return type(e).__name__ + ":" + _NUM.sub("N", msg)[:160]


def bucket(n: int) -> int:
    """0, 1, 2, 3-4, 5-8, ... (a log2 bucket)."""
    return 0 if n <= 0 else int(n).bit_length()


# -- running under atheris -----------------------------------------------------------------------------------

_seen: set = set()
findings = 0


def signature(e: BaseException) -> str:
    """Exception type + the innermost frame + the innermost edgeformer frame (file, function and source
    line: stable when lines move), without spaces: one saved file per distinct bug."""
    tb = traceback.extract_tb(e.__traceback__)
    frames = list(tb[-1:])
    ours = [f for f in tb if "edgeformer" in f.filename]
    if ours and ours[-1] is not tb[-1]:
        frames.append(ours[-1])
    key = "|".join(f"{os.path.basename(f.filename)}:{f.name}:{(f.line or '').strip()}" for f in frames)
    head = ",".join(f"{os.path.basename(f.filename)}:{f.name}" for f in frames)
    return f"{type(e).__name__}@{head}#{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def record(harness: str, data: bytes, e: BaseException, reproducer: Optional[bytes] = None) -> None:
    """Saves a finding's input (once per signature) and logs it; the fuzzing goes on."""
    global findings
    findings += 1
    sig = signature(e)
    if sig in _seen:
        return
    _seen.add(sig)
    os.makedirs(CRASH_DIR, exist_ok=True)
    os.makedirs(WORK_DIR, exist_ok=True)
    name = f"{harness}-exc-{hashlib.sha1(sig.encode()).hexdigest()[:12]}"
    # a reproducer may have been renamed <name>-<what it shows>: one file per signature either way
    have = sorted(f for f in os.listdir(CRASH_DIR) if f == name or f.startswith(name + "-"))
    if have:
        name = have[0]
    else:
        write_file(os.path.join(CRASH_DIR, name), reproducer if reproducer is not None else data)
    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    with open(os.path.join(WORK_DIR, f"{harness}-findings.log"), "a") as f:
        f.write(f"==== FINDING {sig} -> fuzz/crashes/{name}\n{text}\n")
    sys.stderr.write(f"\n==== FINDING [{harness}] {sig}: {type(e).__name__}: {str(e)[:300]}\n"
                     f"     input saved as fuzz/crashes/{name}\n")
    sys.stderr.flush()


def fuzz_main(harness: str, check: Callable[[bytes], None],
              reproducer: Optional[Callable[[bytes], Optional[bytes]]] = None) -> None:
    """atheris entry point: check() every input; exceptions are recorded and fuzzing continues."""
    import atheris

    def one(data: bytes) -> None:
        try:
            check(data)
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as e:  # tokenizers' PanicException derives from BaseException
            rep = None
            if reproducer is not None:
                try:
                    rep = reproducer(data)
                except Exception:
                    rep = None
            record(harness, data, e, rep)

    global SKIP_KNOWN
    SKIP_KNOWN = os.environ.get("FUZZ_KNOWN", "skip") == "skip"
    os.makedirs(WORK_DIR, exist_ok=True)
    n = instrument_edgeformer(extra_modules=(check.__module__,))
    sys.stderr.write(f"INFO: [{harness}] instrumented {n} Python functions of edgeformer and the harness\n")
    _enable_features()
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


def instrument_edgeformer(extra_modules: Sequence[str] = ()) -> int:
    """Adds atheris' coverage instrumentation to every function of the edgeformer package (and of
    extra_modules). atheris.instrument_imports() does not work here: the editable install imports
    edgeformer through a custom loader, and the functions came out uninstrumented (no coverage at all).
    Returns the number of functions instrumented."""
    import importlib
    import pkgutil
    import types

    import atheris
    import edgeformer

    for m in pkgutil.iter_modules(edgeformer.__path__):
        if not m.name.startswith("_") and m.name not in ("cli",):
            importlib.import_module("edgeformer." + m.name)
    wanted = tuple(extra_modules)
    n = 0
    for obj in gc.get_objects():
        if not isinstance(obj, types.FunctionType):
            continue
        mod = getattr(obj, "__module__", None) or ""
        if mod.startswith("edgeformer") or mod in wanted:
            try:
                atheris.instrument_func(obj)
                n += 1
            except Exception:
                pass
    return n
