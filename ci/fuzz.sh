#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds the libFuzzer harnesses of fuzz/ with clang (-fsanitize=fuzzer,address,undefined,
# the library instrumented too) in build/fuzz and runs each for FUZZ_SECONDS (default 30) on
# its committed seed corpus (fuzz/corpus/<harness>; new inputs go to build/fuzz/corpus).
# Fails on any crash, leak (LeakSanitizer on every input, with ci/lsan.supp for the OpenCL
# runtime's own allocations), sanitizer report or broken contract (the harnesses abort).
# Longer runs:
#   FUZZ_SECONDS=3600 bash ci/fuzz.sh
# FUZZ_HARNESSES="fuzz_golden" picks harnesses; FUZZ_NO_DEPS=1 skips the package check.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-30}
harnesses=${FUZZ_HARNESSES:-"fuzz_checkpoint_bytes fuzz_checkpoint_file fuzz_golden"}

# What the fuzz build needs beyond ci/install-deps.sh: clang with its libFuzzer runtime.
fuzz_packages=(clang libclang-rt-14-dev)
if [[ -z ${FUZZ_NO_DEPS:-} ]] && ! command -v clang >/dev/null; then
  SUDO=; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  $SUDO apt-get install -y --no-install-recommends "${fuzz_packages[@]}" >/dev/null
fi

build=build/fuzz
inst="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CC=clang cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCLOPT_FUZZ=ON \
  -DCLOPT_BUILD_SHARED=OFF -DCLOPT_BUILD_TESTS=OFF -DCLOPT_BUILD_BENCH=OFF \
  -DCLOPT_BUILD_EXAMPLES=OFF -DCLOPT_BUILD_CONFORM=OFF -DCLOPT_INSTALL=OFF \
  -DCMAKE_C_FLAGS="$inst" >/dev/null
cmake --build "$build" -j"$(nproc)" --target $harnesses >/dev/null

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
# leak_check_at_exit=0: libFuzzer checks every input that left more allocations than it freed
# (-detect_leaks, the default; a harness that leaks per input is still reported); the exit
# check only looked at the harness's own set-up, and LeakSanitizer's tracer crashed in it
# (signal 11 while stopping the OpenCL runtime's worker threads, nothing reported) in about a
# quarter of fuzz_checkpoint_bytes' runs, failing CI for no finding.
export LSAN_OPTIONS=suppressions="'$PWD/ci/lsan.supp'":print_suppressions=0:leak_check_at_exit=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export POCL_AFFINITY=${POCL_AFFINITY:-0}
summary=()
status=0
for h in $harnesses; do
  work=$build/corpus/$h
  mkdir -p "$work" "$build/artifacts/$h"
  log=$build/$h.log
  echo "== $h: ${secs}s"
  # -rss_limit_mb: the loaders must never need much; -max_len 64 KiB covers the seeds
  if "$build/fuzz/$h" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 \
       -max_len=65536 -print_final_stats=1 -artifact_prefix="$build/artifacts/$h/" \
       "$work" "fuzz/corpus/$h" >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    status=1
    tail -n 60 "$log"
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  leaks=$(grep -c "ERROR: LeakSanitizer" "$log" || true)
  summary+=("$h: ${runs:-?} executions (${speed:-?}/s) in ${secs}s, leaks reported: $leaks, $result")
done
echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
exit $status
