#!/usr/bin/env bash
# gpu_e2e.sh's plumbing, without a GPU: a stand-in bundle whose tests "skip" and whose benches
# sleep and write a JSON. Checks what a lease depends on: the folder holds exactly the two
# files the device tool brings back (summary JSON, logs tarball); E2E_BUDGET_S stops starting
# variant benches once spent; a timeout's TERM still packs the logs.
set -uo pipefail
script="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

mkdir -p "$tmp/bundle"
cat >"$tmp/bundle/run.sh" <<'RUN'
#!/usr/bin/env bash
prog=$1; shift
case "$prog" in
  cuda_*_test)
    for a in "$@"; do
      [[ $a == --gtest_output=json:* ]] && echo '{"tests": 0}' >"${a#--gtest_output=json:}"
    done
    echo "[  SKIPPED ] $prog";;
  engine_overhead_bench) echo "engine_overhead_bench $*";;
  glimpse_lean)
    sub=$1; shift
    for a in "$@"; do
      [[ $sub == make-model && $a == --out=* ]] && touch "${a#--out=}"
    done
    if [[ $sub == bench ]]; then
      sleep "$STANDIN_BENCH_S"
      for a in "$@"; do
        [[ $a == --json_out=* ]] && echo '{"results": [{"prefill_tok_s": 1000, "decode_tok_s": 250}],
          "weight_bytes": 16000000000, "kv_bytes_per_token": 131072, "backend_counters": {}}' \
          >"${a#--json_out=}"
      done
    fi;;
esac
RUN
chmod +x "$tmp/bundle/run.sh"
echo '{"bench": {"ceilings": {"d2d_bandwidth_gbs": 4000}}}' >"$tmp/gpu_check.json"
export BUNDLE="$tmp/bundle" MODEL_8B="$tmp/model.gguf" BENCH_JSON="$tmp/gpu_check.json"

# 1. A budget that holds the main bench and a few variants.
STANDIN_BENCH_S=1 E2E_BUDGET_S=36 "$script" "$tmp/out1" >"$tmp/log1" 2>&1 ||
  { cat "$tmp/log1"; fail "exit status $?"; }
files=$(ls "$tmp/out1" | sort | tr '\n' ' ')
[[ $files == "gpu_e2e.json gpu_e2e_logs.tar.gz " ]] || fail "out1 holds: $files"
# Floor: weights plus the KV of the mean context (512 + 64 / 2 tokens) over 4000 GB/s.
python3 - "$tmp/out1/gpu_e2e.json" <<'PY' || fail "gpu_e2e.json is not the summary"
import json, sys
d = json.load(open(sys.argv[1]))
floor_ms = (16e9 + 131072 * (512 + 32)) / 4000e9 * 1e3
assert d["decode_batch1_tok_s"] == 250, d
assert abs(d["bandwidth_floor_ms_per_token"] - floor_ms) < 1e-3, d
assert abs(d["step_over_floor"] - 4.0 / floor_ms) < 1e-3, d
assert d["cuda_backend_test_exit"] == 0 and d["bench_8b_exit"] == 0, d
PY
listing=$(tar -tzf "$tmp/out1/gpu_e2e_logs.tar.gz")
for f in cuda_backend_test.log engine_overhead_step5ms.txt bench_8b.json bench_8b_decode_mma_sync.json; do
  grep -q "$f" <<<"$listing" || fail "the logs lack $f"
done
grep -q "variant top_k_50_penalty_rows: skipped, E2E_BUDGET_S spent" "$tmp/log1" ||
  fail "the last variant ran although the budget was spent"
ran=$(grep -c '^bench_8b_[a-z0-9_]*: prefill' "$tmp/log1")
[[ $ran -ge 1 && $ran -lt 16 ]] || fail "$ran variants ran"

# 2. Killed by a timeout mid-way: the logs are packed all the same.
STANDIN_BENCH_S=2 E2E_BUDGET_S=400 timeout 6 "$script" "$tmp/out2" >"$tmp/log2" 2>&1
[[ -f "$tmp/out2/gpu_e2e_logs.tar.gz" ]] || { cat "$tmp/log2"; fail "no logs after a timeout"; }
tar -tzf "$tmp/out2/gpu_e2e_logs.tar.gz" | grep -q bench_8b.json || fail "the packed logs lack bench_8b.json"
echo PASS
