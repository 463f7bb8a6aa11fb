#!/usr/bin/env python3
"""Runs the test suite against an INSTALLED edgeformer (a wheel), never the source tree.

    python tools/wheel_tests.py [--install-deps] [--project DIR] [-- PYTEST_ARGS...]

Used by cibuildwheel's test-command (pyproject.toml) and by tools/check_wheel.sh. Steps:

1. checks that `import edgeformer` resolves to site-packages, not DIR/python (prints the path and the ISA);
2. --install-deps: installs torch==2.13.0 (the CPU build; set EF_TORCH_INDEX_URL to a CPU-only index, e.g.
   on CI) and tests/requirements.txt; where no such torch wheel exists (musllinux, macOS x86_64, the oldest
   and newest CPythons) it installs only pytest + gguf and runs the part of the suite that needs neither
   torch nor transformers;
3. a command-line smoke test on the bundled demo model (`edgeformer info`, `edgeformer run`);
4. pytest on DIR/tests (the whole suite, or the torch-free part), run from a scratch directory with
   `-p no:cacheprovider`; a plugin fails the session if the suite imported edgeformer from anywhere but
   site-packages.

EDGEFORMER_ISA in the environment is honoured throughout (the suite then runs only that ISA).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

TORCH = "torch==2.13.0"
# The test files that need neither torch nor transformers (and the one test among them that does).
TORCH_FREE = ["test_ops.py", "test_errors.py", "test_gguf_errors.py", "test_quant.py", "test_native.py"]
TORCH_FREE_DESELECT = ["test_ops.py::test_rope_inv_freq_matches_transformers"]


def pip(*args: str) -> bool:
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd).returncode == 0


def has(mod: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True).returncode == 0


def installed_location(project: str) -> str:
    """The directory `import edgeformer` resolves to in a clean interpreter; exits if it is the source tree."""
    r = subprocess.run([sys.executable, "-c", "import edgeformer, os; print(os.path.dirname(edgeformer.__file__));"
                        "print(edgeformer.__version__, edgeformer.cpu_info()['isa'],"
                        " edgeformer.cpu_info()['supported_isas'])"],
                       capture_output=True, text=True, cwd=tempfile.gettempdir())
    if r.returncode != 0:
        sys.exit("import edgeformer failed:\n" + r.stderr)
    where, info = r.stdout.splitlines()[:2]
    check_path(where, project)
    print(f"edgeformer {info.split()[0]} from {where}; ISA {info.split(None, 2)[1]} (supported: {info.split(None, 2)[2]})")
    return where


def check_path(where: str, project: str) -> None:
    where = os.path.realpath(where)
    src = os.path.realpath(os.path.join(project, "python"))
    sites = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}
    if where.startswith(src + os.sep) or not any(where.startswith(s + os.sep) for s in sites):
        sys.exit(f"edgeformer is imported from {where}, not from this interpreter's site-packages {sorted(sites)}")


class InstalledOnly:
    """pytest plugin: after collection (conftest imports edgeformer) the module must come from site-packages."""

    def __init__(self, project: str):
        self.project = project

    def pytest_collection_finish(self, session):
        mod = sys.modules.get("edgeformer")
        if mod is None:
            raise RuntimeError("the suite did not import edgeformer")
        check_path(os.path.dirname(mod.__file__), self.project)
        print(f"\n[wheel_tests] the suite imports edgeformer from {os.path.dirname(mod.__file__)}")


def main() -> int:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project", default=here, help="the source tree whose tests/ to run (default: this one)")
    ap.add_argument("--install-deps", action="store_true", help="pip install torch and tests/requirements.txt")
    ap.add_argument("--no-smoke", action="store_true", help="skip the command-line smoke test")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    a = ap.parse_args()
    project = os.path.abspath(a.project)
    tests = os.path.join(project, "tests")

    where = installed_location(project)

    if a.install_deps:
        index = os.environ.get("EF_TORCH_INDEX_URL")
        if not has("torch"):
            ok = pip("--only-binary", ":all:", TORCH, *(["--index-url", index] if index else []))
            print("torch:", "installed" if ok else "no wheel for this platform / Python: torch-free tests only")
        if has("torch"):
            if not pip("-r", os.path.join(tests, "requirements.txt")):
                return 1
        elif not pip("pytest>=7", "gguf>=0.10"):
            return 1
    full = has("torch") and has("transformers")

    if not a.no_smoke:
        demo = os.path.join(where, "demo_model")
        for cmd in (["info"], ["run", demo, "The edge of", "-n", "8"]):
            r = subprocess.run([sys.executable, "-m", "edgeformer", *cmd], cwd=tempfile.gettempdir())
            if r.returncode != 0:
                print("FAILED: edgeformer", " ".join(cmd))
                return 1

    import pytest

    args = ["-q", "-p", "no:cacheprovider", f"--rootdir={project}"]
    if full:
        args.append(tests)
    else:
        args += [os.path.join(tests, f) for f in TORCH_FREE]
        args += [f"--deselect=tests/{t}" for t in TORCH_FREE_DESELECT]
    if os.name == "nt":
        # test_native drives cmake with a single-config generator's layout (build/test_kernels)
        args += ["-k", "not test_cpp_kernels_native"]
    elif not (shutil.which("cmake") and (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++"))):
        args += ["-k", "not test_cpp_kernels_native"]
    args += a.pytest_args
    print(f"pytest ({'whole suite' if full else 'torch-free part'}; EDGEFORMER_ISA="
          f"{os.environ.get('EDGEFORMER_ISA', '<unset>')}):", " ".join(args), flush=True)
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="ef-wheel-tests-") as scratch:
        os.chdir(scratch)  # nothing of the source tree on sys.path through the working directory
        try:
            return int(pytest.main(args, plugins=[InstalledOnly(project)]))
        finally:
            os.chdir(cwd)


if __name__ == "__main__":
    sys.exit(main())
