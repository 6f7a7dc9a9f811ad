#!/usr/bin/env bash
# The test command of the README (and of .ci/run): installs the Debian packages, builds with
# warnings as errors, runs the cmocka suite through CTest, replays every golden case with
# clopt-conform, installs the library and builds a consumer against the installed copy, then
# builds and runs the suite again with -fsanitize=address,undefined.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install-deps.sh

jobs=$(nproc)
export CLOPT_DEVICE=${CLOPT_DEVICE:-}

echo "== build (Release, -Werror)"
cmake -S . -B build/ci -DCMAKE_BUILD_TYPE=Release -DCLOPT_WERROR=ON -DCMAKE_INSTALL_PREFIX="$PWD/build/ci-install"
cmake --build build/ci -j"$jobs"

echo "== tests"
ctest --test-dir build/ci --output-on-failure -j1

echo "== conformance: every golden case of tests/data/golden"
build/ci/host/conform/clopt-conform tests/data/golden

echo "== install and build a consumer against the installed copy"
cmake --install build/ci >/dev/null
cmake -S ci/consumer -B build/ci-consumer -DCMAKE_PREFIX_PATH="$PWD/build/ci-install"
cmake --build build/ci-consumer
LD_LIBRARY_PATH="$PWD/build/ci-install/lib" build/ci-consumer/consumer_cmake
PKG_CONFIG_PATH="$PWD/build/ci-install/lib/pkgconfig" \
  sh -c 'cc -std=c11 -Wall -Wextra -Wpedantic -Werror ci/consumer/main.c -o build/ci-consumer/consumer_pc $(pkg-config --cflags --libs clopt) -lm'
LD_LIBRARY_PATH="$PWD/build/ci-install/lib" build/ci-consumer/consumer_pc
"$PWD/build/ci-install/bin/clopt-conform" tests/data/golden/adamw >/dev/null

echo "== sanitizers (address, undefined) on the host code"
cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DCLOPT_WERROR=ON -DCLOPT_SANITIZE=ON -DCLOPT_BUILD_BENCH=OFF
cmake --build build/asan -j"$jobs"
# The OpenCL runtime (PoCL and the LLVM it loads) keeps allocations alive until exit on
# purpose; ci/lsan.supp suppresses leaks whose stack is entirely inside those libraries.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export LSAN_OPTIONS=suppressions=$PWD/ci/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build/asan --output-on-failure -j1
build/asan/host/conform/clopt-conform tests/data/golden
