#!/usr/bin/env bash
# Packs what a bare GPU machine needs to check the CUDA backend end to end, built here with
# --config=cuda: the lean engine (//server:glimpse_lean: generate, tokenize, make-model, bench;
# no gRPC/HTTP) and the Backend-level GPU tests, with the shared libraries they load and this
# machine's dynamic loader, so they run whatever the GPU machine's own system libraries are.
# The NVIDIA driver (libcuda) and cuBLAS are NOT carried (cuBLAS alone is over the 64 MiB a
# device call may carry): gpu_bundle/run.sh finds them on the GPU machine (the CUDA toolkit's
# lib64, or PyTorch's nvidia-* wheels).
#
#   tools/gpu_bundle.sh [DIR]        (default: gpu_bundle/, which git ignores)
# then, on the GPU machine, from the repository root (the device tool's `carry` names DIR):
#   kernels/cuda/gpu_e2e.sh [RESULT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-gpu_bundle}"
TESTS=(cuda_backend_test cuda_greedy_test cuda_graph_test cuda_tensor_parallel_test cuda_engine_test)
TARGETS=(//server:glimpse_lean)
for t in "${TESTS[@]}"; do TARGETS+=("//kernels/cuda/backend:$t"); done
bazel build --config=cuda "${TARGETS[@]}" >&2
BIN="$(bazel info --config=cuda bazel-bin 2>/dev/null)"
rm -rf "$DIR"
mkdir -p "$DIR/bin" "$DIR/lib"
cp "$BIN/server/glimpse_lean" "$DIR/bin/"
for t in "${TESTS[@]}"; do cp "$BIN/kernels/cuda/backend/$t" "$DIR/bin/"; done
# The shared-library closure, minus what must come from the GPU machine: the driver
# (libcuda, libnvidia-*), cuBLAS and NCCL (too large; found there at run time).
for binary in "$DIR"/bin/*; do
  ldd "$binary" | awk '/=> \// {print $3}'
done | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libcuda.so*|libnvidia-*|libcublas*|libnccl*) ;;
    *) cp -L "$lib" "$DIR/lib/" ;;
  esac
done
cp -L /lib64/ld-linux-x86-64.so.2 "$DIR/lib/"
cp tools/gpu_bundle_run.sh "$DIR/run.sh"
chmod -R u+w "$DIR"
size_kib=$(du -sk "$DIR" | cut -f1)
echo "gpu_bundle: $DIR holds $(ls "$DIR/bin" | wc -l) binaries and $(ls "$DIR/lib" | wc -l) libraries, ${size_kib} KiB" >&2
if (( size_kib > 60 * 1024 )); then
  echo "gpu_bundle: over 60 MiB; a device call carries at most 64 MiB in all" >&2
  exit 1
fi
