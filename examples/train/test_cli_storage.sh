#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The storage options of clopt-train-mlp at the command line: settings that do not go
# together and unknown values are refused before anything is loaded (no dataset or device
# needed): exit status 2 and a message that names the option to change. Valid settings get
# past the checks. Also --shard's refusals (Sophia, Muon; 16-bit weights, stochastic rounding
# and 8-bit state get past them), or
# in a build without MPI the refusal of --shard itself. test_mlp_train checks the same rules
# through the library (mlp_check_storage) and trains with bf16 weights and 8-bit state.
#   test_cli_storage.sh path/to/clopt-train-mlp
set -uo pipefail
bin=${1:?usage: test_cli_storage.sh path/to/clopt-train-mlp}
fails=0

# refused EXPECTED-TEXT ARGS...: exit status 2 and EXPECTED-TEXT on stderr.
refused() {
    local want=$1 out rc
    shift
    out=$("$bin" --data /nonexistent/fashion-mnist "$@" 2>&1 >/dev/null)
    rc=$?
    if [ "$rc" -ne 2 ] || [[ "$out" != *"$want"* ]]; then
        echo "FAIL: clopt-train-mlp $*: exit $rc, '$out' (expected exit 2 and '$want')" >&2
        fails=$((fails + 1))
    else
        echo "ok: $* -> $out"
    fi
}

refused "--master remainder needs --param-dtype bf16" --param-dtype f16 --master remainder
refused "it needs --param-dtype f16 or bf16" --master f32
refused "it needs --param-dtype f16 or bf16" --param-dtype f32 --master remainder
refused "needs --master none" --param-dtype bf16 --master f32 --stochastic-rounding
refused "needs --master none" --param-dtype bf16 --master remainder --stochastic-rounding
refused "--stochastic-rounding needs --param-dtype f16 or bf16" --stochastic-rounding
refused "--state-dtype expects one of f32, bf16, int8" --state-dtype u8
refused "--param-dtype expects one of f32, f16, bf16" --param-dtype fp8
refused "--master expects one of none, f32, remainder" --master fp32

# Valid settings get past the checks: the missing dataset is the next error (exit 1).
valid=("--param-dtype bf16 --master remainder" "--param-dtype f16 --stochastic-rounding"
       "--param-dtype bf16 --master f32 --state-dtype bf16" "--state-dtype int8")
if "$bin" --help | grep -q -- "--shard .*" && ! "$bin" --help | grep -q "not in this build"; then
    valid+=("--shard --param-dtype bf16 --master remainder --state-dtype int8"
            "--shard --param-dtype f16" "--shard --param-dtype bf16 --stochastic-rounding")
fi
for args in "${valid[@]}"; do
    # shellcheck disable=SC2086
    out=$("$bin" --data /nonexistent/fashion-mnist $args 2>&1 >/dev/null)
    rc=$?
    if [ "$rc" -ne 1 ] || [[ "$out" != *"not found"* ]]; then
        echo "FAIL: clopt-train-mlp $args: exit $rc, '$out' (expected the dataset error)" >&2
        fails=$((fails + 1))
    else
        echo "ok: $args accepted"
    fi
done
# --shard: in a build with MPI (libclopt_mpi), what libclopt_mpi does not shard is refused
# with exit status 2 before anything is loaded (run here as a one-process MPI job, no
# mpirun needed); in a build without MPI, --shard itself is refused.
if "$bin" --help | grep -q -- "--shard .*"; then
    if "$bin" --help | grep -q "not in this build"; then
        refused "--shard is not available: this build has no libclopt_mpi" --shard
    else
        refused "--shard does not take sophia" --shard --optimizer sophia
        refused "--shard does not take muon" --shard --optimizer muon
    fi
else
    echo "FAIL: clopt-train-mlp --help does not list --shard" >&2
    fails=$((fails + 1))
fi
exit $((fails > 0))
