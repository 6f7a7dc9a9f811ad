#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The training example of the README: installs the Debian packages (with
# dataset-fashion-mnist), builds clopt and trains the 784-256-128-10 MLP on Fashion-MNIST with
# CLBlast GEMMs and clopt updates. Extra arguments go to clopt-train-mlp, e.g.
#   bash ci/train.sh --optimizer lion --epochs 5
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install-deps.sh
cmake -S . -B build/train -DCMAKE_BUILD_TYPE=Release -DCLOPT_BUILD_TESTS=OFF -DCLOPT_BUILD_BENCH=OFF >/dev/null
cmake --build build/train -j"$(nproc)" --target clopt-train-mlp >/dev/null
if [ $# -eq 0 ]; then set -- --optimizer adamw --epochs 10; fi
build/train/examples/train/clopt-train-mlp "$@"
