#!/usr/bin/env bash
# Builds the extension with AddressSanitizer + UndefinedBehaviorSanitizer (EF_SANITIZE=ON) into its own
# build dir, stages it beside a copy of the Python package, and runs pytest against that copy with the
# sanitizer runtimes preloaded into the (uninstrumented) Python. C++ tests under TSan/LSan: tools/sanitize_cpp.sh.
#   tools/sanitize.sh [pytest args...]        default: the whole suite minus the slow native/qemu builds
set -euo pipefail
cd "$(dirname "$0")/.."
build=build/san-address
stage=$build/stage
flags="-DEF_PYTHON=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -Dpybind11_DIR=$(python -m pybind11 --cmakedir) -DEF_SANITIZE=ON"
runtime="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libubsan.so)"
# CPython's own allocations are not instrumented and live until exit, so leak checking is off here (the
# C++ tests run under LeakSanitizer: tools/sanitize_cpp.sh address; pytest checks resident memory);
# every memory error and every undefined behaviour aborts the run.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
cmake -S . -B "$build" -G Ninja $flags >/dev/null
cmake --build "$build" -j2 --target _core
rm -rf "$stage" && mkdir -p "$stage"
cp -r python/edgeformer "$stage/edgeformer"
find "$stage/edgeformer" -name "_core*.so" -delete
cp "$build"/_core*.so "$stage/edgeformer/"
# an editable install's import hook would shadow the staged copy: drop it at start-up
cat > "$stage/sitecustomize.py" <<'PY'
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "edgeformer" not in type(f).__module__]
PY
args=("$@")
# (resident-memory checks are meaningless under ASan, whose quarantine holds freed memory on purpose)
[ ${#args[@]} -eq 0 ] && args=(tests -q -x -p no:cacheprovider -k "not test_cpp_kernels and not test_neon_kernels and not test_memory_flat")
cd "$stage" && cp -r ../../../tests ../../../fuzz . && \
  PYTHONPATH="$PWD" LD_PRELOAD="$runtime" python -c "import edgeformer, sys; assert 'stage' in edgeformer.__file__, edgeformer.__file__" && \
  PYTHONPATH="$PWD" LD_PRELOAD="$runtime" python -m pytest "${args[@]}"
