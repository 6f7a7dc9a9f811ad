#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# clopt vendored by an engine with add_subdirectory (ci/parent): configure (the CMake-time
# assertions of ci/parent/CMakeLists.txt), build with -Werror on clopt, run, and check that
# installing the parent installs nothing of clopt's and that the static libclopt keeps its
# API hidden (an engine's shared library linking it does not re-export clopt_*); then
# configure the same folder again with -DBUILD_SHARED_LIBS=ON (built and run: clopt shared)
# and OFF (configured: static again), as a user changes it.
# usage: ci/check-parent.sh [BUILD_DIR]   (default build/ci-parent)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/ci-parent}
rm -rf "$out"
cmake -S ci/parent -B "$out" -DCLOPT_SOURCE_DIR="$PWD" -DCLOPT_WERROR=ON
cmake --build "$out" -j"${JOBS:-2}"
"$out/parent"
cmake --install "$out" --prefix "$out/install" >/dev/null
if [ -n "$(find "$out/install" -type f 2>/dev/null)" ]; then
    echo "installing the parent installed clopt's files:" >&2
    find "$out/install" -type f >&2
    exit 1
fi
# readelf -sW: Num Value Size Type Bind Vis Ndx Name
exported=$(readelf -sW "$out/clopt/libclopt.a" |
    awk '$5 == "GLOBAL" && $6 == "DEFAULT" && $7 != "UND" && $8 ~ /^clopt_/ { print $8 }')
if [ -n "$exported" ]; then
    echo "the static libclopt.a gives its API default visibility:" >&2
    echo "$exported" | head -n 5 >&2
    exit 1
fi
cmake -S ci/parent -B "$out" -DBUILD_SHARED_LIBS=ON >/dev/null
cmake --build "$out" -j"${JOBS:-2}"
"$out/parent"
cmake -S ci/parent -B "$out" -DBUILD_SHARED_LIBS=OFF >/dev/null
echo "parent: ok"
