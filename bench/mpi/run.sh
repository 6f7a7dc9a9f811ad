#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The sharded optimizer at N = 1, 2, 4 ranks (4 on a 2-core machine needs oversubscription:
# the ranks then share cores, so step times measure contention as much as sharding).
#   bash bench/mpi/run.sh [BUILD_DIR] [extra clopt-bench-mpi arguments]
# BUILD_DIR (default build/dev) holds bench/clopt-bench-mpi, e.g. build after the README's
# `cmake -S . -B build`.
set -euo pipefail
build=${1:-build/dev}
shift || true
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 POCL_MAX_PTHREAD_COUNT=${POCL_MAX_PTHREAD_COUNT:-1}
for np in 1 2 4; do
  for mode in "" --reduce-scatter; do
    mpirun -np "$np" "$build/bench/clopt-bench-mpi" $mode --unsharded "$@"
  done
done
