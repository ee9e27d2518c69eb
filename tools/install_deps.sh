#!/usr/bin/env bash
# Installs the Debian 12 packages that glimpse's offline Bazel build needs. Idempotent: when
# everything is already installed it only runs `dpkg -s` and exits (no apt-get, no network).
#
#   tools/install_deps.sh            install what is missing
#   tools/install_deps.sh --check    only report what is missing (exit 1 if anything is)
#
# Not installed here: the CUDA toolkit (nvcc). It is optional: the CPU backend and
# `bazel test //...` build without it; tools/test.sh also compiles the CUDA backend
# (--config=cuda) when /usr/local/cuda/bin/nvcc exists.
set -euo pipefail

PACKAGES=(
  # Toolchain and build system. bazel-bootstrap is Bazel 4.2.3 and pulls in a JDK.
  build-essential
  git
  ca-certificates
  # tests/cli_test.sh, tests/bench_suite_test.sh and tools/bench/suite.sh script with Python.
  python3
  bazel-bootstrap
  bazel-platforms
  # Libraries wrapped by //third_party/system.
  libabsl-dev
  libspdlog-dev
  libfmt-dev
  libgtest-dev
  libgmock-dev
  nlohmann-json3-dev
  libboost-dev
  libprotobuf-dev
  libgrpc++-dev
  # tcmalloc, the glimpse binaries' allocator (//third_party/system:tcmalloc).
  libgoogle-perftools-dev
  # Code generators used by //third_party/proto:cc_grpc.bzl.
  protobuf-compiler
  protobuf-compiler-grpc
)

is_installed() {
  dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  is_installed "$pkg" || missing+=("$pkg")
done
# Node.js and npm run the OpenAI SDK tests; a Node.js installed outside Debian's packages
# (as on the project's build machines) is fine.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install_deps: all ${#PACKAGES[@]} packages present."
  exit 0
fi

echo "install_deps: missing: ${missing[*]}"
if [[ "${1:-}" == "--check" ]]; then
  exit 1
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if ! command -v sudo >/dev/null; then
    echo "install_deps: not root and no sudo; install the packages above as root." >&2
    exit 1
  fi
  SUDO=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends "${missing[@]}"
echo "install_deps: done."
