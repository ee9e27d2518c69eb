#!/usr/bin/env bash
# Counts the SASS instructions in the loops of CUDA kernels, on a machine without a GPU:
#
#   tools/sass_counts.sh kernels/cuda/paged_decode_mma.cu 'MmaKernelIfLi128E'
#
# The CUDA 13 toolkit here has no disassembler, so this compiles the source to PTX with our
# nvcc (compute_90), assembles that PTX for sm_90 with the ptxas of Debian's CUDA 11.8 package
# (non-free; fetched once into ~/.cache/glimpse/cuda-11.8, not installed) and disassembles it
# with that package's cuobjdump. 11.8's ptxas is older than 13's, so the counts are close to,
# not exactly, what ships; compare kernels with each other, both counted here. Prints
# tools/sass_loop_counts.py's table (loops, instructions by opcode) for the kernels whose
# mangled names match the regex. Not part of the build or the tests.
set -euo pipefail
src=$1
pattern=$2
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/glimpse/cuda-11.8
if [[ ! -x $cache/usr/bin/cuobjdump ]]; then
  echo "fetching Debian's nvidia-cuda-toolkit 11.8 (non-free) for ptxas and cuobjdump..." >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # The source list lives outside the lists directory, which `apt-get update` cleans.
  cat > "$tmp/non-free.sources" <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  mkdir -p "$tmp/lists/partial" "$tmp/deb"
  apt_opts=(-o "Dir::Etc::SourceList=$tmp/non-free.sources" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$tmp/lists" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
  apt-get "${apt_opts[@]}" update >/dev/null 2>&1
  (cd "$tmp/deb" && apt-get "${apt_opts[@]}" download nvidia-cuda-toolkit >/dev/null 2>&1)
  mkdir -p "$cache"
  dpkg-deb -x "$tmp"/deb/nvidia-cuda-toolkit_*.deb "$cache"
fi
work=$(mktemp -d)
name=$(basename "$src" .cu)
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
(cd "$here" && "$NVCC" -O3 -std=c++20 -I. -arch=compute_90 -ptx -o "$work/$name.ptx" "$src")
# 11.8's ptxas reads PTX ISA 7.8; the kernels use nothing newer at compute_90.
sed -e 's/^\.version .*/.version 7.8/' "$work/$name.ptx" > "$work/$name.78.ptx"
"$cache/usr/bin/ptxas" -arch=sm_90 -O3 "$work/$name.78.ptx" -o "$work/$name.cubin"
"$cache/usr/bin/cuobjdump" -sass "$work/$name.cubin" > "$work/$name.sass"
python3 "$here/tools/sass_loop_counts.py" "$work/$name.sass" "$pattern"
rm -rf "$work"
