#!/usr/bin/env bash
# Builds the extension with AddressSanitizer + UndefinedBehaviorSanitizer (EF_SANITIZE=ON, or
# ThreadSanitizer with SAN=thread) into its own build dir, stages it beside a copy of the Python package,
# and runs pytest against that copy with the sanitizer runtime preloaded into the (uninstrumented) Python.
#   tools/sanitize.sh [pytest args...]        default: the whole suite minus the slow native/qemu builds
set -euo pipefail
cd "$(dirname "$0")/.."
san=${SAN:-address}
build=build/san-$san
stage=$build/stage
flags="-DEF_PYTHON=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -Dpybind11_DIR=$(python -m pybind11 --cmakedir)"
if [ "$san" = thread ]; then
  flags="$flags -DCMAKE_CXX_FLAGS=-fsanitize=thread -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread"
  runtime=$(g++ -print-file-name=libtsan.so)
  export TSAN_OPTIONS="report_signal_unsafe=0 halt_on_error=1 suppressions=$PWD/tools/tsan.supp"
else
  flags="$flags -DEF_SANITIZE=ON"
  runtime="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libubsan.so)"
  # Python's own allocations are not instrumented and never freed at exit: leaks are LeakSanitizer's job
  # (tools/lsan.sh would run a C++ driver); here every memory error and undefined behaviour aborts.
  export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
  export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
fi
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
[ ${#args[@]} -eq 0 ] && args=(tests -q -x --deselect tests/test_native.py -p no:cacheprovider \
  --deselect tests/test_concurrency.py::test_memory_flat_over_1000_cycles)
cd "$stage" && cp -r ../../../tests . && \
  PYTHONPATH="$PWD" LD_PRELOAD="$runtime" python -c "import edgeformer, sys; assert 'stage' in edgeformer.__file__, edgeformer.__file__" && \
  PYTHONPATH="$PWD" LD_PRELOAD="$runtime" python -m pytest "${args[@]}"
