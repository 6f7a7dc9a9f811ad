#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The Oclgrind job of the test command: the kernel tests and the golden replay at small sizes
# on Oclgrind, a simulated OpenCL device that checks every memory access (reads and writes
# past a buffer, including reads whose value is then discarded) and finds data races between
# work-items. A second OpenCL implementation next to PoCL: a kernel that only works because
# PoCL's compiler tolerates it, or a read past an array that PoCL's padding hides, fails here.
#
#   bash ci/oclgrind.sh [BUILD_DIR]     (default build/ci; the tests must be built there)
#
# Installs nothing: ci/install-deps.sh installs the Debian package oclgrind. Oclgrind is
# registered through a private vendors folder (OCL_ICD_VENDORS), so it is the only OpenCL
# platform these runs see and the machine's setup is left alone. Checks on:
#   OCLGRIND_CHECK_API=1      misuse of the OpenCL API (arguments, sizes, objects);
#   OCLGRIND_DATA_RACES=1     read-write and write-write races inside a launch.
# The uninitialized-value checker (OCLGRIND_UNINITIALIZED) stays off: it reports false
# positives on vector types (Oclgrind issue 126). OCLGRIND_BUILD_OPTIONS=-cl-opt-disable
# compiles the kernels without optimisation, so every load and store of the source reaches
# the simulator (an optimiser may drop a read whose value is discarded: the very reads past
# an array this job looks for), and clang emits no intrinsics Oclgrind 21.10 cannot
# interpret (at -O2 it turns `a > b ? a - b : 0` into llvm.usub.sat, a fatal error there).
# The library's own options (-cl-std=CL1.2, and -Werror when it is built with
# CLOPT_KERNEL_WERROR, as ci/test.sh does) come first.
#
# What runs, chosen to exercise every kernel family and every variant once while staying
# short (the simulator is thousands of times slower than PoCL; CLOPT_TEST_SMALL=1 shrinks the
# tests' 2^20-element cases, see tests/fixture.h):
#   test_kernels  every element-wise rule (sgd.cl, adam.cl, adaptive.cl, sign.cl) at the op
#                 level in both tunings (float16 x 16 per work-item, float4 x 1), vector
#                 tails, the optimizer level (CTRL: the device-side verdict and gradient
#                 check of tensor.cl and reduce.cl), Philox and the Hessian estimators
#                 (hessian.cl);
#   test_golden   every golden case (the replay clopt-conform runs, through the same code):
#                 LAMB (lamb.cl), Adafactor (adafactor.cl), Lookahead and Ranger, Adam with
#                 gradient centralization (GC), clipping, the copy passes, Schedule-Free
#                 with its eval switch (schedule_free.cl), ADOPT and AdEMAMix, cautious AdamW
#                 and StableAdamW (reduced.cl); except muon (CLOPT_TEST_SKIP_GOLDEN): its
#                 CLBlast GEMM kernels take about 10 minutes in the simulator, so muon.cl is
#                 checked by PoCL only;
#   test_flat     range groups (RANGES: one launch over many tensors of shared buffers),
#                 element-wise and multi-pass rules;
#   test_reductions  Adafactor, LAMB, gradient centralization (N x 1 shapes too) and
#                 clipping against double references, with the device's reduction shape and
#                 with a GPU's (64-item work-groups adding by trees in local memory: the
#                 race checker sees every barrier of reduce.cl, tensor.cl, lamb.cl and
#                 adafactor.cl);
#   test_storage_opt  16-bit θ and g with fp32 and bf16-remainder masters in every kind of
#                 group and in LAMB, Adafactor, GC and Lookahead (the typed loads and stores
#                 of storage.cl, theta_copy), bf16 and 8-bit state in arena groups;
#   test_q8       8-bit blockwise state (one work-item per 256-element block, blocks cut by
#                 a tensor's end; and a GPU's shape, a work-group per block with the absmax
#                 reduced in local memory between barriers: races and divergent barriers
#                 are reported) and bf16 state for every element-wise rule.
# (tests/test_storage*.c, ~1 min here, are left to PoCL: its kernels are the ones above in
# more combinations.)
# Fails when a test fails or when Oclgrind writes any report to stderr; the reports are
# printed. Runtime on 2 cores: about 3 minutes (two tests side by side; one after another
# they take 5-6 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/ci}

icd=/usr/lib/oclgrind/liboclgrind-rt-icd.so
if [ ! -f "$icd" ]; then
  echo "ci/oclgrind.sh: $icd not found (bash ci/install-deps.sh installs oclgrind)" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/vendors"
echo "$icd" >"$work/vendors/oclgrind.icd"

export OCL_ICD_VENDORS="$work/vendors" OCLGRIND_CHECK_API=1 OCLGRIND_DATA_RACES=1
export OCLGRIND_BUILD_OPTIONS=-cl-opt-disable CLOPT_DEVICE=oclgrind CLOPT_TEST_SMALL=1
# nothing that would stop for a debugger, change the checks or reuse binaries built elsewhere
unset OCLGRIND_INTERACTIVE OCLGRIND_UNINITIALIZED OCLGRIND_QUICK OCLGRIND_INST_COUNTS \
      OCLGRIND_PLUGINS CLOPT_CACHE_DIR CLOPT_TEST_VERBOSE

# Oclgrind's reports (src/core/Context.cpp, src/plugins/*): "Invalid read/write of size ...",
# "Read-write data race ...", "Work-group divergence detected ...", "Uninitialized value
# ...", "OCLGRIND FATAL ERROR", "Oclgrind - OpenCL runtime error detected" (the API checker).
reports='Invalid (read|write)|data race|divergence|Uninitiali[sz]ed|OCLGRIND|Oclgrind - |Unaligned|out of bounds|Invalid access'

# The simulator runs a program on one thread: the tests run side by side, JOBS at a time
# (default: the cores; 2 lanes took 22 s where one after the other took 35 s).
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
run() { # name command...: in the background; its exit status and time into $work/name.rc
  local name=$1
  shift
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n || true
  done
  (
    t0=$SECONDS rc=0
    "$@" >"$work/$name.out" 2>"$work/$name.err" || rc=$?
    echo "$rc $((SECONDS - t0))" >"$work/$name.rc"
  ) &
}
names="test_kernels test_golden test_flat test_reductions test_storage_opt test_q8"
run test_golden env CLOPT_TEST_SKIP_GOLDEN=muon "$build/tests/test_golden" # the longest first
for name in $names; do
  [ "$name" = test_golden ] || run "$name" "$build/tests/$name"
done
wait

fail=0
for name in $names; do
  read -r rc secs <"$work/$name.rc" || { rc=1 secs=0; }
  if grep -Eiq "$reports" "$work/$name.err"; then
    echo "ci/oclgrind.sh: $name: Oclgrind reports:" >&2
    grep -Ei -A6 "$reports" "$work/$name.err" | head -200 >&2
    fail=1
  fi
  if [ "$rc" -ne 0 ]; then
    echo "ci/oclgrind.sh: $name failed (exit $rc):" >&2
    tail -40 "$work/$name.out" >&2
    tail -40 "$work/$name.err" >&2
    fail=1
  fi
  echo "  $name: exit $rc, $secs s"
done
if [ "$fail" -ne 0 ]; then
  echo "ci/oclgrind.sh: FAILED" >&2
  exit 1
fi
echo "ci/oclgrind.sh: no Oclgrind reports"
