#!/usr/bin/env bash
# The C++ tests (tests/cpp: every kernel against its reference; concurrent models, thread pools and an
# interrupt) under sanitizers, with no Python in the way:
#   tools/sanitize_cpp.sh thread     ThreadSanitizer
#   tools/sanitize_cpp.sh address    AddressSanitizer + UndefinedBehaviorSanitizer + LeakSanitizer
# (CPython cannot host a preloaded TSan runtime here; the Python suite runs under ASan in tools/sanitize.sh.)
set -euo pipefail
cd "$(dirname "$0")/.."
san=${1:-thread}
case "$san" in
  thread) fl="-fsanitize=thread"; export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" ;;
  address) fl="-fsanitize=address,undefined"
    export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1" UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" ;;
  *) echo "usage: $0 thread|address" >&2; exit 2 ;;
esac
build=build/cpp-$san
cmake -S . -B "$build" -G Ninja -DEF_BUILD_TESTS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="$fl -fno-omit-frame-pointer" -DCMAKE_EXE_LINKER_FLAGS="$fl" >/dev/null
cmake --build "$build" -j2 --target test_threads test_kernels
setarch "$(uname -m)" -R "$build/test_threads"
setarch "$(uname -m)" -R "$build/test_kernels" | tail -1
