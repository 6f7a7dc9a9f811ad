#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Consumers of an installed clopt (called by ci/test.sh after `cmake --install`):
#  - ci/consumer through find_package(clopt) and through pkg-config, run on the device;
#  - ci/consumer/mpi through find_package(clopt COMPONENTS mpi) and pkg-config clopt_mpi,
#    compiled, linked and run (no mpirun: the calls need no MPI_Init) when the tree has
#    libclopt_mpi; without it, checks that asking for the component fails saying why;
#  - clopt.h under each OpenCL API level a consumer may choose (CL_TARGET_OPENCL_VERSION
#    120, 200, 300, or unset with <CL/cl.h> first), -Werror, linked and run;
#  - clopt.pc of a tree configured with absolute CMAKE_INSTALL_LIBDIR/INCLUDEDIR (as Nix,
#    Guix and Spack configure) names those directories;
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
# pc ARGS...: pkg-config's words into the array PC (eval: it escapes a space in a path
# with a backslash, which word splitting would cut)
pc() { local out; out=$(pkg-config "$@") || return 1; eval "PC=($out)"; }
export PKG_CONFIG_PATH="$libdir/pkgconfig"
if pkg-config --cflags clopt | grep -q CL_TARGET_OPENCL_VERSION; then
    echo "clopt.pc must not set CL_TARGET_OPENCL_VERSION (the consumer's choice)" >&2
    exit 1
fi
pc --cflags --libs clopt
cc "${cflags[@]}" ci/consumer/main.c -o "$out/consumer_pc" "${PC[@]}" -lm
"$out/consumer_pc"

echo "-- consumer: libclopt_mpi (find_package(clopt COMPONENTS mpi), pkg-config clopt_mpi)"
if compgen -G "$libdir/libclopt_mpi.*" >/dev/null; then
    cmake -S ci/consumer/mpi -B "$out/mpi" -DCMAKE_PREFIX_PATH="$prefix" \
        -DCONSUMER_MPI_OPTIONAL=OFF >/dev/null
    cmake --build "$out/mpi" >/dev/null
    "$out/mpi/consumer_mpi_cmake"
    # a static libclopt_mpi pulls in more of libclopt (and CLBlast): Libs.private too
    pc_static=()
    compgen -G "$libdir/libclopt_mpi.so*" >/dev/null || pc_static=(--static)
    pc "${pc_static[@]}" --cflags --libs clopt_mpi
    cc "${cflags[@]}" ci/consumer/mpi/main.c -o "$out/consumer_mpi_pc" "${PC[@]}"
    "$out/consumer_mpi_pc"
else
    echo "skipped: no libclopt_mpi in $libdir (clopt was built without MPI)"
    # nothing of it installed, find_package(clopt COMPONENTS mpi) fails saying why, and
    # OPTIONAL_COMPONENTS mpi finds clopt without it
    for f in "$libdir/pkgconfig/clopt_mpi.pc" "$libdir/cmake/clopt/clopt-mpi-targets.cmake" \
        $(find "$prefix" -name clopt_mpi.h); do
        if [ -e "$f" ]; then
            echo "$f is installed without libclopt_mpi" >&2
            exit 1
        fi
    done
    rm -rf "$out/mpi-missing" "$out/mpi-optional"
    if cmake -S ci/consumer/mpi -B "$out/mpi-missing" -DCMAKE_PREFIX_PATH="$prefix" \
        >"$out/mpi-missing.log" 2>&1; then
        echo "find_package(clopt REQUIRED COMPONENTS mpi) succeeded without libclopt_mpi" >&2
        exit 1
    fi
    if ! grep -q "without libclopt_mpi" "$out/mpi-missing.log"; then
        echo "find_package(clopt REQUIRED COMPONENTS mpi) failed without saying why:" >&2
        cat "$out/mpi-missing.log" >&2
        exit 1
    fi
    cmake -S ci/consumer/mpi -B "$out/mpi-optional" -DCMAKE_PREFIX_PATH="$prefix" \
        -DCONSUMER_MPI_OPTIONAL=ON -DCONSUMER_EXPECT_MPI=OFF >/dev/null
fi

echo "-- consumer: clopt.h with OpenCL 1.2, 2.0, 3.0 headers and with <CL/cl.h> first"
for mode in 120 200 300 cl-first; do
    if [ "$mode" = cl-first ]; then
        defs=(-DCONSUMER_CL_FIRST)
    else
        defs=(-DCL_TARGET_OPENCL_VERSION="$mode" -DEXPECT_CL_TARGET="$mode")
        # the real consumer too, at this API level
        pc --cflags clopt
        cc "${cflags[@]}" "${defs[@]}" -c ci/consumer/main.c -o "$out/main_$mode.o" "${PC[@]}"
    fi
    pc --cflags --libs clopt
    cc "${cflags[@]}" "${defs[@]}" ci/consumer/opencl_versions.c -o "$out/opencl_versions_$mode" \
        "${PC[@]}"
    "$out/opencl_versions_$mode"
done

echo "-- pkg-config: absolute CMAKE_INSTALL_LIBDIR and CMAKE_INSTALL_INCLUDEDIR"
# configured only: the .pc files are written at configure time. Outside the source tree
# (CMake refuses an install include directory inside it)
abs=$(mktemp -d)
trap 'rm -rf "$abs"' EXIT
cmake -S . -B "$abs/build" -DCLOPT_BUILD_TESTS=OFF -DCLOPT_BUILD_BENCH=OFF \
    -DCLOPT_BUILD_EXAMPLES=OFF -DCLOPT_BUILD_CONFORM=OFF -DCLOPT_INSTALL=ON \
    -DCMAKE_INSTALL_PREFIX="$abs/prefix" -DCMAKE_INSTALL_LIBDIR="$abs/store/lib64" \
    -DCMAKE_INSTALL_INCLUDEDIR="$abs/store/inc" >/dev/null
for m in clopt $( [ -f "$abs/build/clopt_mpi.pc" ] && echo clopt_mpi ); do
    for v in libdir:lib64 includedir:inc; do
        got=$(PKG_CONFIG_PATH="$abs/build" pkg-config --variable="${v%%:*}" "$m")
        if [ "$got" != "$abs/store/${v#*:}" ]; then
            echo "$m.pc: ${v%%:*} is '$got', expected '$abs/store/${v#*:}'" >&2
            exit 1
        fi
    done
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
