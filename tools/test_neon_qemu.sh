#!/usr/bin/env bash
# Cross-compiles the C++ core and its kernel tests for aarch64 and runs them under qemu-aarch64, on CPUs
# with and without the dot-product extension: the NEON kernels against the scalar reference.
# Needs Debian's g++-aarch64-linux-gnu and qemu-user (apt-get install -y g++-aarch64-linux-gnu qemu-user).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build/aarch64}
cmake -S . -B "$build" -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake -DEF_BUILD_TESTS=ON \
  -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j2 --target test_kernels
for cpu in cortex-a53 neoverse-n1 max; do  # a53: plain NEON; n1: + dotprod; max: every extension qemu has
  echo "== qemu-aarch64 -cpu $cpu"
  qemu-aarch64 -cpu "$cpu" -L /usr/aarch64-linux-gnu "$build/test_kernels"
done
