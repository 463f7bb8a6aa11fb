#!/usr/bin/env bash
# tests/test_cuda.py without a GPU: builds the extension with EF_CUDA_MOCK=ON (the CUDA path's host code over
# the host stand-ins in this folder) into BUILD (default build/cuda-mock) and runs the tests against that copy.
# This checks uploads and weight layouts, the model's buffers, strides and kernel arguments, the bindings and
# load(device="cuda") for every family; the device kernels are checked only by benchmarks/gpu_check.sh on a GPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-$PWD/build/cuda-mock}  # inside the tree: a cache from another checkout cannot collide
PY=${PYTHON:-python}
cmake -S . -B "$BUILD" -G Ninja -DEF_CUDA_MOCK=ON -DEF_PYTHON=ON -DCMAKE_BUILD_TYPE=Release \
  -DPython_EXECUTABLE="$(command -v "$PY")" -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" >/dev/null
cmake --build "$BUILD" -j"${JOBS:-2}"
rm -rf "$BUILD/pkg" && mkdir -p "$BUILD/pkg" && cp -r python/edgeformer "$BUILD/pkg/" && cp "$BUILD"/_core*.so "$BUILD/pkg/edgeformer/"
# an installed or editable edgeformer must not shadow this copy: its import hook is dropped at start-up
printf '%s\n' "import sys" \
  "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__ or 'edgeformer' not in type(f).__module__]" \
  >"$BUILD/pkg/sitecustomize.py"
PYTHONPATH="$BUILD/pkg${PYTHONPATH:+:$PYTHONPATH}" "$PY" - <<'PY'
import edgeformer
assert "emulation" in edgeformer.cuda_info()["name"], edgeformer.__file__
PY
PYTHONPATH="$BUILD/pkg${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m pytest tests/test_cuda.py -q -p no:cacheprovider "$@"
