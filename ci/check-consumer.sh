#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Consumers of an installed clopt (called by ci/test.sh after `cmake --install`):
#  - ci/consumer through find_package(clopt) and through pkg-config, run on the device;
#  - clopt.h under each OpenCL API level a consumer may choose (CL_TARGET_OPENCL_VERSION
#    120, 200, 300, or unset with <CL/cl.h> first), -Werror, linked and run;
#  - the installed tools' --version.
# usage: ci/check-consumer.sh PREFIX [BUILD_DIR]   (BUILD_DIR default build/ci-consumer)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=$(cd "$1" && pwd)
out=${2:-build/ci-consumer}
libdir="$prefix/lib"
[ -d "$libdir" ] || libdir=$(dirname "$(find "$prefix" -name 'libclopt.*' | head -n1)")
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cflags=(-std=c11 -Wall -Wextra -Wpedantic -Werror)

echo "-- consumer: find_package(clopt)"
cmake -S ci/consumer -B "$out" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$out" >/dev/null
"$out/consumer_cmake"

echo "-- consumer: pkg-config"
export PKG_CONFIG_PATH="$libdir/pkgconfig"
if pkg-config --cflags clopt | grep -q CL_TARGET_OPENCL_VERSION; then
    echo "clopt.pc must not set CL_TARGET_OPENCL_VERSION (the consumer's choice)" >&2
    exit 1
fi
# shellcheck disable=SC2046
cc "${cflags[@]}" ci/consumer/main.c -o "$out/consumer_pc" $(pkg-config --cflags --libs clopt) -lm
"$out/consumer_pc"

echo "-- consumer: clopt.h with OpenCL 1.2, 2.0, 3.0 headers and with <CL/cl.h> first"
for mode in 120 200 300 cl-first; do
    if [ "$mode" = cl-first ]; then
        defs=(-DCONSUMER_CL_FIRST)
    else
        defs=(-DCL_TARGET_OPENCL_VERSION="$mode" -DEXPECT_CL_TARGET="$mode")
        # the real consumer too, at this API level
        # shellcheck disable=SC2046
        cc "${cflags[@]}" "${defs[@]}" -c ci/consumer/main.c -o "$out/main_$mode.o" \
            $(pkg-config --cflags clopt)
    fi
    # shellcheck disable=SC2046
    cc "${cflags[@]}" "${defs[@]}" ci/consumer/opencl_versions.c -o "$out/opencl_versions_$mode" \
        $(pkg-config --cflags --libs clopt)
    "$out/opencl_versions_$mode"
done

echo "-- installed tools: --version"
version=$(sed -n 's/^project(clopt VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
for tool in "$prefix"/bin/clopt-*; do
    [ -x "$tool" ] || continue
    name=$(basename "$tool")
    got=$("$tool" --version)
    if [ "$got" != "$name $version (library $version)" ]; then
        echo "$name --version printed '$got', expected '$name $version (library $version)'" >&2
        exit 1
    fi
    echo "$got"
done
