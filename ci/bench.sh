#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The main job of the README: installs the Debian packages, builds clopt in Release and runs
# clopt-bench's default set on the default device (CLOPT_DEVICE picks another one).
# Extra arguments go to clopt-bench, e.g. bash ci/bench.sh --rules adamw --sizes 2^25
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install-deps.sh
# CLOPT_BENCH_NATIVE: the C-loop baseline compiled with -march=native, for this machine only
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DCLOPT_BUILD_TESTS=OFF -DCLOPT_BENCH_NATIVE=ON >/dev/null
cmake --build build/bench -j"$(nproc)" >/dev/null
build/bench/bench/clopt-bench "$@"
