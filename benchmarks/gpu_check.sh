#!/usr/bin/env bash
# The CUDA path's proof on a real GPU, in one go (about 10 minutes on an H100 / H200 with 16 cores):
#   1. build the extension with EF_CUDA=ON (cmake + ninja into build/gpu; nothing is pip-installed)
#   2. run tests/test_cuda.py on the device (every kernel against the CPU, every family against transformers)
#   3. benchmarks/bench_gpu.py: 1.1B and 7B Llama shapes in f16 and q4_0 (one sequence, and 8 decoded together),
#      PyTorch eager as the reference
# Needs python3 with numpy, tokenizers, jinja2, pytest, pybind11, torch and transformers (the device image has
# them), nvcc 12+ and cmake. Stages can be picked: gpu_check.sh [build] [test] [bench] [profile] [sanitize]
# (default: build test bench; `profile` times every kernel of a decode step and a prompt with torch.profiler
# (benchmarks/profile_gpu.py); `sanitize` runs the kernel tests under compute-sanitizer memcheck, slowly).
# Environment: EF_CUDA_ARCHS (default 90: this machine's Hopper; the wheel default is 80;86;89;90 + PTX),
# OUT (a folder the logs and results are copied to, if set).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=$ROOT/build/gpu
PKG=$BUILD/pkg
RESULTS=$ROOT/benchmarks/results
mkdir -p "$RESULTS"
LOG=$RESULTS/gpu_check.log
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(build test bench)
has() { local s; for s in "${stages[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
status=0
export PYTHONUNBUFFERED=1

{
echo "== gpu_check $(date -u +%FT%TZ) on $(hostname): stages ${stages[*]}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv 2>&1 || echo "(no nvidia-smi)"
nvcc --version 2>&1 | tail -1
python3 -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)" 2>&1

if has build; then
  echo "== build (EF_CUDA=ON, architectures ${EF_CUDA_ARCHS:-90})"
  t0=$(date +%s)
  inc=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['include'])")
  [ -f "$inc/Python.h" ] || { echo "FAILED: no Python.h in $inc (the Python headers are needed to build the extension)"; exit 1; }
  cmake -S . -B "$BUILD" -G Ninja -DEF_CUDA=ON -DEF_PYTHON=ON -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_ARCHITECTURES="${EF_CUDA_ARCHS:-90}" -DPython_EXECUTABLE="$(command -v python3)" \
    -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" >"$BUILD.configure.log" 2>&1 \
    || { cat "$BUILD.configure.log"; echo "FAILED: configure"; exit 1; }
  cmake --build "$BUILD" -j"$(nproc)" 2>&1 | grep -E "error|warning|FAILED" ; [ "${PIPESTATUS[0]}" -eq 0 ] \
    || { echo "FAILED: build"; exit 1; }
  rm -rf "$PKG" && mkdir -p "$PKG" && cp -r python/edgeformer "$PKG/" && cp "$BUILD"/_core*.so "$PKG/edgeformer/"
  # an editable install of edgeformer (a developer's machine) would shadow this copy: drop its import hook
  printf '%s\n' "import sys" \
    "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__ or 'edgeformer' not in type(f).__module__]" \
    >"$PKG/sitecustomize.py"
  echo "built in $(( $(date +%s) - t0 )) s"
fi
export PYTHONPATH=$PKG${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import edgeformer as e; assert e.__file__.startswith('$PKG'), e.__file__; print('edgeformer', e.__version__, 'cuda_available', e.cuda_available()); print(e.cuda_info(0))" \
  || { echo "FAILED: the CUDA build does not import or sees no device"; exit 1; }

if has test; then
  echo "== tests/test_cuda.py"
  timeout 240 python3 -m pytest tests/test_cuda.py -q -ra -p no:cacheprovider --durations=10 || status=1
fi

if has profile; then
  echo "== benchmarks/profile_gpu.py"
  timeout 200 python3 benchmarks/profile_gpu.py --out "$RESULTS/gpu_profile.txt" 2>&1 | grep -v "USDT\|UserWarning\|_warn_once" || status=1
fi

if has sanitize; then
  SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
  echo "== compute-sanitizer memcheck: kernel tests ($SAN)"
  timeout 400 "$SAN" --tool memcheck --error-exitcode 9 python3 -m pytest tests/test_cuda.py -q -x -p no:cacheprovider \
    -k "linear or embedding or norms or softmax or rope or attention or sampling or greedy" || status=1
fi

if has bench; then
  echo "== benchmarks/bench_gpu.py"
  timeout 330 python3 benchmarks/bench_gpu.py --out "$RESULTS/gpu_check.json" || status=1
fi
echo "== gpu_check done: status $status"
} 2>&1 | tee "$LOG"
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  cp "$LOG" "$OUT/" 2>/dev/null; cp "$RESULTS/gpu_check.json" "$RESULTS/gpu_profile.txt" "$OUT/" 2>/dev/null
fi
grep -q "gpu_check done: status 0" "$LOG" && exit 0 || exit 1
