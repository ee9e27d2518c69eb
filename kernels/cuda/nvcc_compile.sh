#!/usr/bin/env bash
# Compiles one CUDA/C++ source of kernels/cuda with nvcc into an object file, for the Bazel
# genrules in kernels/cuda/BUILD.bazel (Bazel 4.2.3 has no rules_cuda here). Run from the
# execution root, so `#include "kernels/cuda/..."` resolves against -I.
#
#   nvcc_compile.sh OUT.o SRC [EXTRA_NVCC_FLAGS...]
#
# Same flags as gpu_check.sh, plus -fPIC so the objects can go into any kind of link.
set -euo pipefail
out=$1
src=$2
shift 2
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
# nvcc names its intermediate files in $TMPDIR (default /tmp) after its process id. Bazel's
# sandboxes share /tmp but give each action its own PID namespace, so two nvcc running at once
# both get the same small PID and overwrite each other's files ("cannot open module id file
# .../tmpxft_00000002_..." failed a CI run). Each compile gets a private directory instead.
nvcc_tmp=$(mktemp -d "${TMPDIR:-/tmp}/glimpse_nvcc.XXXXXX")
trap 'rm -rf "$nvcc_tmp"' EXIT
TMPDIR=$nvcc_tmp "$NVCC" -O3 -std=c++20 -I. \
  -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_80,code=sm_80 \
  -Xcompiler=-fPIC,-Wall,-Wextra,-Werror --Werror all-warnings "$@" -c "$src" -o "$out"
