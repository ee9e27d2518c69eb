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
      seconds=$STANDIN_BENCH_S
      for a in "$@"; do  # a variant bench started: the main bench has written its JSON
        if [[ $a == --json_out=*bench_8b_*.json ]]; then
          seconds=${STANDIN_VARIANT_S:-$STANDIN_BENCH_S}
          [[ -n ${STANDIN_VARIANT_MARK:-} ]] && touch "$STANDIN_VARIANT_MARK"
        fi
      done
      # Dies on TERM with its sleep, as the one-process bench would (an orphaned sleep would
      # hold the pipe to the script's tee open until it ended).
      trap 'kill $! 2>/dev/null; exit 143' TERM
      sleep "$seconds" &
      wait $!
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

# 1. A budget that holds the main bench and a few variants (variants start while 30 s of it
# are left: a 15 s window, of which the tests and the main bench take 2-3 s, more on a loaded
# machine, and each variant 2 s).
STANDIN_BENCH_S=2 E2E_BUDGET_S=45 "$script" "$tmp/out1" >"$tmp/log1" 2>&1 ||
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
for f in cuda_backend_test.log engine_overhead_step5ms.txt engine_overhead_step5ms_no_overlap.txt \
  bench_8b.json bench_8b_decode_mma_sync.json; do
  grep -q "$f" <<<"$listing" || fail "the logs lack $f"
done
grep -q "variant top_k_50_penalty_rows: skipped, E2E_BUDGET_S spent" "$tmp/log1" ||
  fail "the last variant ran although the budget was spent"
ran=$(grep -c '^bench_8b_[a-z0-9_]*: prefill' "$tmp/log1")
[[ $ran -ge 1 && $ran -lt 16 ]] || fail "$ran variants ran"

# 2. Killed by a timeout mid-way, during the first variant bench: the logs are packed all the
# same, that variant's log with them. TERM to `timeout` is what its expiry does (the signal to
# the whole process group), sent once a variant has started rather than after a fixed time,
# so that a loaded machine cannot race it.
mark="$tmp/variant_started"
STANDIN_VARIANT_MARK="$mark" STANDIN_BENCH_S=1 STANDIN_VARIANT_S=120 E2E_BUDGET_S=400 \
  timeout 300 "$script" "$tmp/out2" >"$tmp/log2" 2>&1 &
pid=$!
for _ in $(seq 600); do [[ -f $mark ]] && break; sleep 0.1; done
[[ -f $mark ]] || { kill "$pid"; cat "$tmp/log2"; fail "no variant bench started in 60 s"; }
kill -TERM "$pid"
wait "$pid"
rc=$?
[[ $rc -ne 0 ]] || fail "the script exited 0 after TERM"
[[ -f "$tmp/out2/gpu_e2e_logs.tar.gz" ]] || { cat "$tmp/log2"; fail "no logs after a timeout"; }
listing=$(tar -tzf "$tmp/out2/gpu_e2e_logs.tar.gz")
grep -q 'bench_8b\.json' <<<"$listing" || fail "the packed logs lack bench_8b.json"
grep -q bench_8b_decode_mma_sync.log <<<"$listing" ||
  fail "the packed logs lack the log of the variant the timeout cut short"
! grep -q bench_8b_decode_mma_sync.json <<<"$listing" || fail "the variant was not cut short"
echo PASS
