#!/usr/bin/env bash
# Runs a binary of this bundle (made by tools/gpu_bundle.sh) with the bundle's own dynamic
# loader and libraries, plus the GPU machine's driver, cuBLAS and NCCL:
#   gpu_bundle/run.sh glimpse_lean bench --device=cuda ...
# GLIMPSE_BUNDLE_PRELOAD=LIB (a library of the bundle, e.g. libtcmalloc_minimal.so.4) loads it
# first, as LD_PRELOAD would.
set -euo pipefail
BUNDLE="$(cd "$(dirname "$0")" && pwd)"
# The binaries and libraries come packed (payload.tar.gz); unpack them once per payload.
HERE="${GLIMPSE_BUNDLE_UNPACK:-${TMPDIR:-/tmp}/glimpse_gpu_bundle}"
stamp="$(cksum <"$BUNDLE/payload.tar.gz")"
if [[ ! -f "$HERE/.stamp" || "$(cat "$HERE/.stamp")" != "$stamp" ]]; then
  rm -rf "$HERE"
  mkdir -p "$HERE"
  tar -C "$HERE" -xzf "$BUNDLE/payload.tar.gz"
  echo "$stamp" >"$HERE/.stamp"
fi
name="$1"; shift
paths="$HERE/lib"
# cuBLAS / NCCL: the CUDA toolkit's, else the ones PyTorch's nvidia-* wheels bring.
for d in "${CUDA_HOME:-/usr/local/cuda}/lib64" \
         $(python3 -c 'import nvidia.cublas as m; print(list(m.__path__)[0] + "/lib")' 2>/dev/null) \
         $(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0] + "/lib")' 2>/dev/null); do
  [[ -d "$d" ]] && paths="$paths:$d"
done
# The driver's libcuda.so.1 wherever the machine keeps it.
for d in /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu /usr/lib64 /lib/x86_64-linux-gnu; do
  [[ -e "$d/libcuda.so.1" ]] && paths="$paths:$d"
done
[[ -n "${LD_LIBRARY_PATH:-}" ]] && paths="$paths:$LD_LIBRARY_PATH"
preload=()
[[ -n "${GLIMPSE_BUNDLE_PRELOAD:-}" ]] && preload=(--preload "$HERE/lib/$GLIMPSE_BUNDLE_PRELOAD")
exec "$HERE/lib/ld-linux-x86-64.so.2" --library-path "$paths" "${preload[@]}" "$HERE/bin/$name" "$@"
