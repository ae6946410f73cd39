#!/usr/bin/env bash
# Installs what building, testing and running mue needs, from Debian's packages, if missing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libeigen3-dev libdnnl-dev libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev
  libjpeg-dev libpng-dev
  python3 python3-numpy python3-torch python3-pil python3-matplotlib libopenblas0-pthread
  dataset-fashion-mnist  # the default model's scenes (training, held-out dumps)
  clang libclang-rt-14-dev libomp-dev  # tools/fuzz.sh: libFuzzer and clang's OpenMP
  pybind11-dev python3-pybind11 python3-dev python3-pytest  # the Python bindings and their tests
  libcpp-httplib-dev wrk  # mue-server and its load benchmark
  libopenmpi-dev openmpi-bin  # bench runs sharded over MPI
)
# node and npm are used only by the tokenizer cross-check; a machine may already have them
# from another source (nodesource ships npm inside nodejs), so look for the commands.
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
