"""The C++ kernel tests: natively (every ISA this CPU has against the scalar reference), and cross-compiled
for aarch64 under qemu (the NEON kernels, on CPUs with and without dot-product instructions)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _passed_line(out: str) -> str:
    lines = [ln for ln in out.splitlines() if ln.endswith("failed") and "passed" in ln]
    assert lines, out[-2000:]
    return lines[-1]


def test_cpp_kernels_native(tmp_path_factory):
    build = str(tmp_path_factory.mktemp("native"))
    subprocess.run(["cmake", "-S", ROOT, "-B", build, "-DEF_BUILD_TESTS=ON", "-DCMAKE_BUILD_TYPE=Release"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", build, "-j2", "--target", "test_kernels"], check=True, capture_output=True)
    r = subprocess.run([os.path.join(build, "test_kernels")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:]
    assert _passed_line(r.stdout).endswith(" 0 failed")


@pytest.mark.skipif(not (shutil.which("aarch64-linux-gnu-g++") and shutil.which("qemu-aarch64")),
                    reason="needs Debian's g++-aarch64-linux-gnu and qemu-user (.ci/run installs them)")
def test_neon_kernels_under_qemu(tmp_path_factory):
    env = dict(os.environ, BUILD_DIR=str(tmp_path_factory.mktemp("aarch64")))
    r = subprocess.run([os.path.join(ROOT, "tools", "test_neon_qemu.sh")], capture_output=True, text=True,
                       timeout=1200, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    results = [ln for ln in r.stdout.splitlines() if "passed" in ln]
    assert len(results) == 3 and all(ln.endswith(" 0 failed") for ln in results), r.stdout
    assert "neon: checked" in r.stdout and "neondot: checked" in r.stdout  # dotprod CPUs run both copies
