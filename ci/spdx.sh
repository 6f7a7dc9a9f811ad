#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# License identifiers in the sources. Every .c .h .cl .cmake, CMakeLists.txt and .sh file
# tracked by git (tests/data/ excepted) must have "SPDX-License-Identifier: MIT" within its
# first 3 lines.
#   ci/spdx.sh --check   lists the files without one; exits 1 if there are any
#   ci/spdx.sh --fix     inserts one into each of them: "/* SPDX-License-Identifier: MIT */"
#                        as the first line of C and OpenCL files, "# SPDX-License-Identifier:
#                        MIT" in CMake and shell files (after the "#!" line if there is one)
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
if [ "$mode" != --check ] && [ "$mode" != --fix ]; then
    echo "usage: ci/spdx.sh --check | --fix" >&2
    exit 2
fi

tag="SPDX-License-Identifier: MIT"
# the tracked files; outside a checkout of its own (a tarball, or unpacked into another
# repository) every file but build outputs
list_files() {
    if [ "$(git rev-parse --show-toplevel 2>/dev/null)" = "$(pwd -P)" ]; then
        git ls-files -z
    else
        find . \( -path ./build -o -path ./.git -o -path ./.gpu \) -prune -o -type f -print0 |
            sed -z 's|^\./||'
    fi
}
offenders=()
while IFS= read -r -d '' f; do
    case "$f" in
    tests/data/*) continue ;;
    *.c | *.h | *.cl | *.cmake | *.sh | CMakeLists.txt | */CMakeLists.txt) ;;
    *) continue ;;
    esac
    [ -f "$f" ] || continue # deleted in the work tree, not yet in the index
    if ! head -n 3 "$f" | grep -q "$tag"; then
        offenders+=("$f")
    fi
done < <(list_files)

if [ "$mode" = --check ]; then
    if [ ${#offenders[@]} -gt 0 ]; then
        echo "files without \"$tag\" in their first 3 lines (bash ci/spdx.sh --fix adds it):" >&2
        printf '  %s\n' "${offenders[@]}" >&2
        exit 1
    fi
    echo "spdx: every source file has \"$tag\""
    exit 0
fi

for f in "${offenders[@]}"; do
    case "$f" in
    *.c | *.h | *.cl) line="/* $tag */" ;;
    *) line="# $tag" ;;
    esac
    tmp=$(mktemp "$f.spdx.XXXXXX")
    if head -n 1 "$f" | grep -q '^#!'; then
        { head -n 1 "$f"; printf '%s\n' "$line"; tail -n +2 "$f"; } >"$tmp"
    else
        { printf '%s\n' "$line"; cat "$f"; } >"$tmp"
    fi
    chmod --reference="$f" "$tmp"
    mv "$tmp" "$f"
    echo "stamped $f"
done
