"""Replays the fuzzers' inputs (fuzz/): every seed corpus file and every saved finding goes through the same
check its harness runs under atheris. Fast and deterministic; no fuzzing here (that is fuzz/run.sh).

A corpus file must pass (edgeformer accepts it or rejects it with a ValueError). A file in fuzz/crashes/
runs in a subprocess (it may crash, hang or eat memory), limited to 2 GiB of address space and 15 seconds,
and must pass too, unless KNOWN lists it: those reproduce reported bugs that are not fixed yet, and are
strict xfails, so that a fix makes the test fail until its entry is removed.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# EF_FUZZ_DIR: for a copy of tests/ run elsewhere, e.g. under the ASan build:
#   EF_FUZZ_DIR=$PWD/fuzz tools/sanitize.sh tests/test_fuzz_regressions.py -q
FUZZ = os.environ.get("EF_FUZZ_DIR") or os.path.join(REPO, "fuzz")
HARNESSES = ("safetensors", "gguf", "config", "tokenizer", "grammar")
CRASH_TIMEOUT_S = 15
CRASH_MEMORY = 2 << 30

# fuzz/crashes/<file> -> the open bug it reproduces (remove the entry with the fix). The other files there
# reproduce bugs already fixed: T5 relative buckets read outside their table (SIGSEGV); a huge layer count
# (config.json, or a GGUF block_count) or bloom head count made load() loop for minutes and take gigabytes;
# 4 * n_embd past int32 and model_type a list raised TypeError; yarn with original_max_position_embeddings 0
# raised ZeroDivisionError; a str with lone surrogates raised TypeError from encode; with two stop strings the
# later one in the list won over the earliest in the text.
KNOWN: dict = {}  # file name -> why it still fails (an open bug): none open

sys.path.insert(0, FUZZ)


def _harness(path: str) -> str:
    return os.path.basename(path).split("-", 1)[0]


def _files(folder: str):
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if not f.startswith(".") and os.path.isfile(os.path.join(folder, f)))


def _needs_atheris(harness: str, data: bytes) -> bool:
    # fuzz_config decodes non-JSON inputs with atheris' FuzzedDataProvider
    return harness == "config" and data[:1] != b"{"


CORPUS = [(h, p) for h in HARNESSES for p in _files(os.path.join(FUZZ, "corpus", h))]
CRASHES = [p for p in _files(os.path.join(FUZZ, "crashes")) if _harness(p) in HARNESSES]


def test_every_harness_has_a_seed_corpus():
    for h in HARNESSES:
        assert _files(os.path.join(FUZZ, "corpus", h)), f"fuzz/corpus/{h} is empty: python fuzz/fuzz_{h}.py --make-seeds"


@pytest.mark.parametrize("harness, path", CORPUS, ids=[f"{h}/{os.path.basename(p)}" for h, p in CORPUS])
def test_corpus_file(harness, path):
    with open(path, "rb") as f:
        data = f.read()
    if _needs_atheris(harness, data):
        pytest.importorskip("atheris")
    importlib.import_module("fuzz_" + harness).check(data)


def _crash_params():
    out = []
    for p in CRASHES:
        name = os.path.basename(p)
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN[name])] if name in KNOWN else []
        out.append(pytest.param(p, id=name, marks=marks))
    return out


_REPLAY = """
import os, resource, sys
if "libasan" not in os.environ.get("LD_PRELOAD", ""):  # AddressSanitizer reserves terabytes of address space
    resource.setrlimit(resource.RLIMIT_AS, ({mem}, {mem}))
sys.path.insert(0, {fuzz!r})
import fuzz_{harness} as h
with open({path!r}, "rb") as f:
    h.check(f.read())
"""


def test_known_entries_exist():
    missing = sorted(set(KNOWN) - {os.path.basename(p) for p in CRASHES})
    assert not missing, f"KNOWN names files that are not in fuzz/crashes/: {missing}"


@pytest.mark.parametrize("path", _crash_params())
def test_saved_finding(path):
    harness = _harness(path)
    with open(path, "rb") as f:
        data = f.read()
    if _needs_atheris(harness, data):
        pytest.importorskip("atheris")
    code = _REPLAY.format(mem=CRASH_MEMORY, fuzz=FUZZ, harness=harness, path=path)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=CRASH_TIMEOUT_S,
                           env=env, cwd=os.path.dirname(FUZZ))
    except subprocess.TimeoutExpired:
        pytest.fail(f"{path}: still running after {CRASH_TIMEOUT_S} s (a hang or a memory blow-up)")
    if r.returncode < 0:
        pytest.fail(f"{path}: killed by signal {-r.returncode}\n{r.stderr[-3000:]}")
    assert r.returncode == 0, f"{path}: exit {r.returncode}\n{r.stderr[-3000:]}"
