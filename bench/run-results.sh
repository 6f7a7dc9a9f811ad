#!/bin/sh
# SPDX-License-Identifier: MIT
# The committed benchmark results of one device: runs clopt-bench eight times and writes into DIR
#
#   default.txt .json .csv .png   clopt-bench            (the default rules at 2^20, 2^22, 2^24)
#   large.*                       --rules adamw --sizes 2^25 --reps 7
#   elementwise25.*               every rule at 2^25: fused, stream, unfused, c_loop, --reps 9
#   tensors.*                     --rules adamw,sgd_momentum --sizes 2^24 --tensors 1,100,1000
#                                 --reps 7
#   engine.*                      --rules adamw,sgd_momentum,lion --sizes 2^20,2^24
#                                 --tensors 6,1000 --variants arena,arena_amp,ranges
#                                 --reps 15 (issue 11: AMP and clipping, range groups)
#   storage.*                     --rules adamw,sgd_momentum --sizes 2^25 --dtypes all
#                                 --variants fused,stream --reps 5 (16-bit storage, bf16
#                                 and 8-bit states: 72 combinations each)
#   storage_multipass.*           --rules lamb,adafactor,stable_adamw,ranger --sizes 2^24
#                                 --dtypes all --variants fused,stream --reps 5 (the same at
#                                 the optimizer level: 24 or 48 combinations each)
#   sweep.txt .json .csv          --sweep-tuning   (AdamW, diffGrad at 2^24 over VW x WG x IPW)
#   results.md                    device, date, commit, host, the command lines and every table
#
# usage: bench/run-results.sh DIR [clopt-bench options added to every run, e.g. --device 1]
# The executable: $CLOPT_BENCH, else build/bench/bench/clopt-bench (where ci/bench.sh builds
# it, with CLOPT_BENCH_NATIVE) or build/bench/clopt-bench (a build in build/, as the README's)
# of this checkout, else clopt-bench on the PATH. The plots need gnuplot (skipped without).
# Exit status: 0 when every run succeeded, else the last failing run's status (the other runs
# still happen; results.md records each status).
set -u

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '3,27p' "$0" | sed 's/^# \{0,1\}//'
    [ $# -lt 1 ] && exit 2
    exit 0
fi
DIR=$1
shift

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${CLOPT_BENCH:-}
if [ -z "$BENCH" ]; then
    for b in "$ROOT/build/bench/bench/clopt-bench" "$ROOT/build/bench/clopt-bench"; do
        if [ -x "$b" ]; then
            BENCH=$b
            break
        fi
    done
fi
if [ -z "$BENCH" ]; then
    BENCH=$(command -v clopt-bench || true)
fi
if [ -z "$BENCH" ] || [ ! -x "$BENCH" ]; then
    echo "run-results.sh: clopt-bench not found (build it, or set CLOPT_BENCH)" >&2
    exit 1
fi

mkdir -p "$DIR" || exit 1
MD="$DIR/results.md"
STATUS=0
SUMMARY=""

# run NAME TITLE ARGS...: clopt-bench ARGS plus the common options, output into DIR/NAME.*
run() {
    name=$1
    title=$2
    shift 2
    plot=1
    case " $* " in *" --sweep-tuning "*) plot="" ;; esac
    echo "run-results.sh: $title: $BENCH $*" >&2
    if [ -n "$plot" ]; then
        "$BENCH" "$@" --json "$DIR/$name.json" --csv "$DIR/$name.csv" \
            --plot "$DIR/$name.png" >"$DIR/$name.txt" 2>&1
    else
        "$BENCH" "$@" --json "$DIR/$name.json" --csv "$DIR/$name.csv" >"$DIR/$name.txt" 2>&1
    fi
    rc=$?
    [ $rc -ne 0 ] && STATUS=$rc
    SUMMARY="$SUMMARY$name:$rc "
    {
        echo "## $title"
        echo
        echo '```sh'
        echo "clopt-bench ${*:+$* }--json $name.json --csv $name.csv${plot:+ --plot $name.png}"
        echo '```'
        echo
        [ $rc -ne 0 ] && echo "**exit status $rc** (see below)" && echo
        echo '```text'
        cat "$DIR/$name.txt"
        echo '```'
        echo
        if [ -n "$plot" ] && [ -f "$DIR/$name.png" ]; then
            echo "![$name]($name.png)"
            echo
        fi
    } >>"$MD.body"
}

ALL_RULES=sgd,sgd_momentum,adam,adamw,adagrad,adadelta,rmsprop,adamax,nadam,radam,adamod
ALL_RULES=$ALL_RULES,diffgrad,lion,sophia,adafactor,lamb,ranger,adam_lookahead
# The common options (no spaces inside a value) go after each run's own.
COMMON="$*"
rm -f "$MD.body"
# shellcheck disable=SC2086 # COMMON is split into its options on purpose
{
    run default "Default run (every default rule at 2^20, 2^22, 2^24)" $COMMON
    run large "AdamW at 2^25, median of 7" --rules adamw --sizes 2^25 --reps 7 $COMMON
    run elementwise25 "Every rule at 2^25: fused, its stream kernel, unfused chain, C loop" \
        --rules "$ALL_RULES" --sizes 2^25 --reps 9 --variants fused,stream,unfused,c_loop $COMMON
    run tensors "Tensor counts: 1, 100 and 1000 tensors of the same total 2^24" \
        --rules adamw,sgd_momentum --sizes 2^24 --tensors 1,100,1000 --reps 7 $COMMON
    run engine "The engine contract: AMP and clipping on the device, range groups over one flat buffer" \
        --rules adamw,sgd_momentum,lion --sizes 2^20,2^24 --tensors 6,1000 \
        --variants arena,arena_amp,ranges --reps 15 $COMMON
    run storage "Storage: every combination of parameter, gradient, master and state types at 2^25 (fused and its stream kernel)" \
        --rules adamw,sgd_momentum --sizes 2^25 --dtypes all --variants fused,stream --reps 5 $COMMON
    run storage_multipass "Storage at the optimizer level: every combination of LAMB, Adafactor, StableAdamW and Ranger at 2^24 (fused and its stream kernel, one combination at a time)" \
        --rules lamb,adafactor,stable_adamw,ranger --sizes 2^24 --dtypes all --variants fused,stream --reps 5 $COMMON
    run sweep "Tuning sweep: fused AdamW and diffGrad at 2^24 over VW x work-group x vectors per item" \
        --sweep-tuning --rules adamw,diffgrad --sizes 2^24 $COMMON
}

DEVICE=$(sed -n 's/^clopt-bench: device \(.*\), vector width.*/\1/p' "$DIR/default.txt" | head -n 1)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
# the sources the numbers depend on; DIR (under bench/results) is being rewritten by this run
if [ "$COMMIT" != unknown ] &&
    [ -n "$(git -C "$ROOT" status --porcelain -- host kernels include bench ':!bench/results' 2>/dev/null)" ]; then
    COMMIT="$COMMIT (with uncommitted changes)"
fi
{
    echo "# clopt-bench results: ${DEVICE:-unknown device}"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- commit: $COMMIT"
    echo "- host: $(uname -srm), $(getconf _NPROCESSORS_ONLN 2>/dev/null || echo '?') CPU(s)"
    echo "- produced by: \`bench/run-results.sh DIR${COMMON:+ $COMMON}\`"
    echo "- runs (exit status): $SUMMARY"
    echo
    echo "Fields and variants: bench/README.md. ms is device time (profiling events; markers"
    echo "around clopt_optimizer_step for the optimizer level), GB/s = bytes_per_param * n / ms."
    echo
    cat "$MD.body"
} >"$MD"
rm -f "$MD.body"
echo "run-results.sh: wrote $DIR (results.md, *.txt, *.json, *.csv, *.png); runs: $SUMMARY" >&2
exit $STATUS
