#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# clopt vendored by an engine with add_subdirectory (ci/parent): configure (the CMake-time
# assertions of ci/parent/CMakeLists.txt), build with -Werror on clopt, run, and check that
# installing the parent installs nothing of clopt's.
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
echo "parent: ok"
