#!/usr/bin/env bash
# Builds and runs the kernels/cuda tests and benchmarks on a bare CUDA machine: nvcc straight
# from the sources (no Bazel, no Debian libraries, no network), one call of a few minutes.
#
#   kernels/cuda/gpu_check.sh [RESULT_JSON]      (from the repository root)
#
# Writes RESULT_JSON (default: $OUT/gpu_check.json, or ./gpu_check.json without $OUT) holding
# the test report and the benchmark results, and beside it gpu_check_logs.tar.gz with every
# log and partial result (build.log, tests[_experimental].{json,log}, bench[_experimental].
# {json,log}, tp_tests.*, gpu_state.csv) — two files, as the device tool brings back at most
# eight from $OUT — and prints a short table last. Exit status: nonzero if the build or any
# test fails (benchmarks never fail on time).
#
# Environment: NVCC (default: nvcc on PATH, else /usr/local/cuda/bin/nvcc), CUDA_HOME
# (default /usr/local/cuda), JOBS (parallel compiles, default nproc), SKIP_BENCH=1.
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 2
ROOT=$(pwd)
RESULT=${1:-${OUT:-.}/gpu_check.json}
RESULT_DIR=$(dirname "$RESULT")
mkdir -p "$RESULT_DIR"
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
NVCC=${NVCC:-$(command -v nvcc || echo "$CUDA_HOME/bin/nvcc")}
JOBS=${JOBS:-$(nproc)}
BUILD=$(mktemp -d /tmp/glimpse_gpu_check.XXXXXX)
# Logs and partial results go to WORK, packed into RESULT_DIR on any exit (a timeout too).
WORK=$(mktemp -d /tmp/glimpse_gpu_check_out.XXXXXX)
LOG="$WORK/build.log"
pack_logs() { tar -czf "$RESULT_DIR/gpu_check_logs.tar.gz" -C "$WORK" . 2>/dev/null; }
trap 'pack_logs; rm -rf "$WORK" "$BUILD"' EXIT
trap "exit 143" TERM INT  # so that EXIT packs on a timeout's TERM too

# Hopper's wgmma needs sm_90a, spelled as -gencode (nvcc 13.0's -arch=sm_90a shorthand also
# runs a plain sm_90 pass that rejects it); sm_80 keeps Ampere working.
FLAGS=(-O3 -std=c++20 -I"$ROOT" -gencode=arch=compute_90a,code=sm_90a
       -gencode=arch=compute_80,code=sm_80 -Xcompiler=-Wall,-Wextra)

# The kernel and test lists of kernels/cuda/sources.bzl (what the Bazel builds use), read
# without Bazel: the quoted names between `NAME = [` and `]`.
bzl_list() {
  sed -n "/^$1 = \[/,/^\]/p" "$ROOT/kernels/cuda/sources.bzl" | grep -o '"[a-z_0-9]*"' | tr -d '"'
}
mapfile -t LIB_SRCS < <(bzl_list KERNEL_SRCS)
mapfile -t TEST_SRCS < <(bzl_list KERNEL_TESTS)
if [[ ${#LIB_SRCS[@]} -eq 0 || ${#TEST_SRCS[@]} -eq 0 ]]; then
  echo "gpu_check.sh: could not read the source lists of kernels/cuda/sources.bzl" >&2
  exit 2
fi

echo "nvcc: $NVCC ($("$NVCC" --version | tail -1))" | tee "$LOG"
start=$(date +%s)
{
  for s in "${LIB_SRCS[@]}"; do echo "kernels/cuda/$s.cu $BUILD/$s.o"; done
  for s in "${TEST_SRCS[@]}"; do echo "kernels/cuda/$s.cc $BUILD/$s.o"; done
  echo "kernels/cuda/testing/test_harness.cc $BUILD/test_harness.o"
  echo "kernels/cuda/testing/test_main.cc $BUILD/test_main.o"
  echo "kernels/cuda/bench/kernel_bench.cu $BUILD/kernel_bench.o"
} | xargs -P "$JOBS" -L 1 sh -c '"$0" '"${FLAGS[*]}"' -c "$1" -o "$2" || { echo "FAILED: $1"; exit 255; }' "$NVCC" >>"$LOG" 2>&1
build_rc=$?
LIB_OBJS=()
for s in "${LIB_SRCS[@]}"; do LIB_OBJS+=("$BUILD/$s.o"); done
TEST_OBJS=()
for s in "${TEST_SRCS[@]}"; do TEST_OBJS+=("$BUILD/$s.o"); done
if [ $build_rc -eq 0 ]; then
  "$NVCC" "${FLAGS[@]}" -o "$BUILD/kernel_tests" "${TEST_OBJS[@]}" "$BUILD/test_harness.o" \
      "$BUILD/test_main.o" "${LIB_OBJS[@]}" >>"$LOG" 2>&1 &&
  "$NVCC" "${FLAGS[@]}" -o "$BUILD/kernel_bench" "$BUILD/kernel_bench.o" "${LIB_OBJS[@]}" \
      -L"$CUDA_HOME/lib64" -lcublas >>"$LOG" 2>&1
  build_rc=$?
fi
build_s=$(( $(date +%s) - start ))
if [ $build_rc -ne 0 ]; then
  tail -40 "$LOG"
  printf '{"build_ok": false, "build_seconds": %d}\n' "$build_s" >"$RESULT"
  echo "BUILD FAILED after ${build_s}s (log: $LOG)"
  exit 1
fi
echo "build: ${build_s}s"

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,power.draw,temperature.gpu \
    --format=csv 2>/dev/null | tee "$WORK/gpu_state.csv"

export LD_LIBRARY_PATH="$CUDA_HOME/lib64:${LD_LIBRARY_PATH:-}"
# The experimental kernels (wgmma attention, tensor-core decode) have never run on a GPU:
# their tests and benchmarks run in processes of their own under a time limit, after
# everything else, so that one that faults (a sticky error ends its process) or hangs cannot
# take the other results with it. (The wgmma kernels' mbarrier waits also give up after 2^26
# polls on the device.)
EXPERIMENTAL_TESTS=Wgmma,DecodeMma  # test-name substrings
"$BUILD/kernel_tests" --filter="-${EXPERIMENTAL_TESTS//,/,-}" --json="$WORK/tests.json" \
    2>&1 | tee "$WORK/tests.log"
test_rc=${PIPESTATUS[0]}
# (--foreground: in this script's process group, so the TERM of a limit on the whole script
# reaches it too; see gpu_e2e.sh.)
timeout --foreground "${EXPERIMENTAL_TEST_TIMEOUT:-240}" "$BUILD/kernel_tests" \
    --filter="$EXPERIMENTAL_TESTS" --json="$WORK/tests_experimental.json" 2>&1 \
    | tee "$WORK/tests_experimental.log"
experimental_test_rc=${PIPESTATUS[0]}
[ "$experimental_test_rc" -eq 124 ] &&
  echo "experimental tests: TIMED OUT (killed after ${EXPERIMENTAL_TEST_TIMEOUT:-240} s)"
[ "$experimental_test_rc" -ne 0 ] && test_rc=1

# Tensor parallelism needs NCCL: the toolkit's, else the one PyTorch's wheel brings
# (nvidia-nccl-cu13). Without it the NCCL test is reported as not built, not as passed.
NCCL_DIR=""
if [ -f "$CUDA_HOME/include/nccl.h" ]; then
  NCCL_DIR="$CUDA_HOME"
else
  NCCL_DIR=$(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null || true)
fi
tp_rc=0
if [ -n "$NCCL_DIR" ] && [ -f "$NCCL_DIR/include/nccl.h" ]; then
  NCCL_LIB="$NCCL_DIR/lib64"; [ -d "$NCCL_LIB" ] || NCCL_LIB="$NCCL_DIR/lib"
  # The wheel ships libnccl.so.2 without the unversioned link name.
  ln -sf "$(ls "$NCCL_LIB"/libnccl.so* | head -1)" "$BUILD/libnccl.so"
  if "$NVCC" "${FLAGS[@]}" -I"$NCCL_DIR/include" -o "$BUILD/tp_tests" \
        kernels/cuda/tensor_parallel.cc kernels/cuda/tensor_parallel_test.cc \
        "$BUILD/test_harness.o" "$BUILD/test_main.o" -L"$BUILD" -lnccl \
        -Xlinker -rpath -Xlinker "$NCCL_LIB" >>"$LOG" 2>&1; then
    "$BUILD/tp_tests" --json="$WORK/tp_tests.json" 2>&1 | tee "$WORK/tp_tests.log"
    tp_rc=${PIPESTATUS[0]}
  else
    echo "tensor-parallel test: BUILD FAILED (see $LOG)"; tp_rc=1
  fi
else
  echo "tensor-parallel test: not built (no NCCL found in $CUDA_HOME or python's nvidia.nccl)"
fi
[ $tp_rc -ne 0 ] && test_rc=1

bench_rc=0
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  "$BUILD/kernel_bench" --kernels=base "$WORK/bench.json" 2>&1 | tee "$WORK/bench.log"
  bench_rc=${PIPESTATUS[0]}
  timeout --foreground "${EXPERIMENTAL_BENCH_TIMEOUT:-180}" "$BUILD/kernel_bench" \
      --kernels=experimental "$WORK/bench_experimental.json" 2>&1 \
      | tee "$WORK/bench_experimental.log"
  experimental_bench_rc=${PIPESTATUS[0]}
  [ "$experimental_bench_rc" -eq 124 ] && echo "experimental benchmarks: TIMED OUT"
  [ "$experimental_bench_rc" -ne 0 ] && bench_rc=1
fi

{
  printf '{\n"build_ok": true, "build_seconds": %d, "tests_exit": %d, "bench_exit": %d,\n' \
      "$build_s" "$test_rc" "$bench_rc"
  printf '"tests": '
  cat "$WORK/tests.json" 2>/dev/null || printf 'null\n'
  printf ', "tests_experimental": '
  cat "$WORK/tests_experimental.json" 2>/dev/null || printf 'null\n'
  printf ', "bench": '
  cat "$WORK/bench.json" 2>/dev/null || printf 'null\n'
  printf ', "bench_experimental": '
  cat "$WORK/bench_experimental.json" 2>/dev/null || printf 'null\n'
  printf '}\n'
} >"$RESULT"

echo
echo "==== summary ===="
grep -hE '^\[ (FAIL| OK )' "$WORK/tests.log" "$WORK/tests_experimental.log" |
  sed 's/^/test /'
grep -hE '^[0-9]+ tests' "$WORK/tests.log" "$WORK/tests_experimental.log"
[ -f "$WORK/tp_tests.log" ] && grep -E '^\[ (FAIL| OK )|^[0-9]+ tests' "$WORK/tp_tests.log" | sed 's/^/tp /'
[ -f "$WORK/bench.log" ] && sed -n '/^kernel /,$p' "$WORK/bench.log"
[ -f "$WORK/bench_experimental.log" ] &&
  sed -n '/^kernel /,$p' "$WORK/bench_experimental.log"
echo "result: $RESULT and gpu_check_logs.tar.gz beside it (tests exit $test_rc, bench exit $bench_rc)"
[ $test_rc -eq 0 ] && [ $bench_rc -eq 0 ]
