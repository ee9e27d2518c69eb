#!/usr/bin/env bash
# An overhead bench (engine_overhead_bench or grpc_overhead_bench, $1) runs to the end (a few
# steps at two batch sizes) and prints, for each sampling mode and batch, a median interval
# between full-batch decode steps and median engine-thread and process CPU times per step that
# it measured, and the median host gap between a step's return and the next (above 0: the
# engine did reach full-batch decode steps and the runner timed them).
set -uo pipefail
out=$("$1" --steps=8 --batch_sizes=1,4 "${@:2}" 2>&1)
code=$?
echo "$out"
[[ $code -eq 0 ]] || { echo "FAIL: exit status $code"; exit 1; }
rows=$(grep -E '^(greedy|top-k 50, T 0\.8|greedy \+ 5 logprobs|top-k 50, whole rows) +[14] ' \
  <<<"$out")
n=$(grep -c . <<<"$rows")
[[ $n -eq 8 ]] || { echo "FAIL: $n rows, want 8 (4 modes x 2 batch sizes)"; exit 1; }
# Columns from the end: median, p90, per sequence, engine CPU, process CPU, gap, gap CPU.
if awk '{ if (!($(NF-6) > 0) || !($(NF-3) > 0) || !($(NF-2) > 0) || !($(NF-1) > 0)) bad = 1 }
        END { exit bad }' \
  <<<"$rows"; then
  echo "PASS"
else
  echo "FAIL: a median of 0 (no full-batch decode steps timed)"
  exit 1
fi
