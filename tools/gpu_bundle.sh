#!/usr/bin/env bash
# Packs what a bare GPU machine needs to check the CUDA backend end to end, built here with
# --config=cuda: the lean engine (//server:glimpse_lean: generate, tokenize, make-model, bench;
# no gRPC/HTTP), the engine's host-overhead bench (its figure on the GPU machine's CPU) and the
# Backend-level GPU tests, with the shared libraries they load and this
# machine's dynamic loader, so they run whatever the GPU machine's own system libraries are.
# The NVIDIA driver (libcuda) and cuBLAS are NOT carried (cuBLAS alone is over the 64 MiB a
# device call may carry): gpu_bundle/run.sh finds them on the GPU machine (the CUDA toolkit's
# lib64, or PyTorch's nvidia-* wheels).
#
# The binaries and libraries travel as one gzip'd tar (DIR/payload.tar.gz, unpacked by run.sh
# on first use): each test binary carries its own copy of every kernel's sm_90a + sm_80 code,
# ~6 MiB apiece, ~68 MiB unpacked, ~21 MiB packed (2026-12-01), and the working tree that
# travels with it is ~31 MiB: ~52 of the 64 MiB a device call may carry.
#
#   tools/gpu_bundle.sh [DIR]        (default: gpu_bundle/, which git ignores)
# then, on the GPU machine, from the repository root (the device tool's `carry` names DIR):
#   kernels/cuda/gpu_e2e.sh [RESULT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-gpu_bundle}"
TESTS=(cuda_backend_test cuda_greedy_test cuda_graph_test cuda_tensor_parallel_test cuda_engine_test)
TARGETS=(//server:glimpse_lean //tools/bench:engine_overhead_bench)
for t in "${TESTS[@]}"; do TARGETS+=("//kernels/cuda/backend:$t"); done
bazel build --config=cuda "${TARGETS[@]}" >&2
BIN="$(bazel info --config=cuda bazel-bin 2>/dev/null)"
rm -rf "$DIR"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$DIR" "$STAGE/bin" "$STAGE/lib"
cp "$BIN/server/glimpse_lean" "$BIN/tools/bench/engine_overhead_bench" "$STAGE/bin/"
for t in "${TESTS[@]}"; do cp "$BIN/kernels/cuda/backend/$t" "$STAGE/bin/"; done
# The shared-library closure, minus what must come from the GPU machine: the driver
# (libcuda, libnvidia-*), cuBLAS and NCCL (too large; found there at run time).
for binary in "$STAGE"/bin/*; do
  ldd "$binary" | awk '/=> \// {print $3}'
done | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libcuda.so*|libnvidia-*|libcublas*|libnccl*) ;;
    *) cp -L "$lib" "$STAGE/lib/" ;;
  esac
done
cp -L /lib64/ld-linux-x86-64.so.2 "$STAGE/lib/"
chmod -R u+w "$STAGE"
tar -C "$STAGE" -czf "$DIR/payload.tar.gz" bin lib
cp tools/gpu_bundle_run.sh "$DIR/run.sh"
size_kib=$(du -sk "$DIR" | cut -f1)
tree_kib=$(( $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) / 1024 ))
echo "gpu_bundle: $DIR holds $(ls "$STAGE/bin" | wc -l) binaries and $(ls "$STAGE/lib" | wc -l)" \
     "libraries, $(du -sk "$STAGE" | cut -f1) KiB unpacked, ${size_kib} KiB packed;" \
     "the working tree is ${tree_kib} KiB" >&2
if (( size_kib + tree_kib > 60 * 1024 )); then
  echo "gpu_bundle: bundle + working tree over 60 MiB; a device call carries at most 64 MiB" >&2
  exit 1
fi
