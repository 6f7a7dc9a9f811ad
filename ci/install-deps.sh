#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian 12 packages clopt needs to build, test and benchmark.
# Skips apt when everything is already there (a warm machine), so reruns are quick.
set -euo pipefail
pkgs=(cmake make gcc pkg-config ocl-icd-opencl-dev opencl-headers pocl-opencl-icd
      libclblast-dev libcmocka-dev libcjson-dev clinfo gnuplot-nox libcairo2-dev
      zlib1g-dev dataset-fashion-mnist oclgrind openmpi-bin libopenmpi-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "ci/install-deps.sh: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
