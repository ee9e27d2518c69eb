#!/usr/bin/env bash
# The CUDA backend end to end on a GPU machine, with the bundle tools/gpu_bundle.sh made here
# (the lean engine and the Backend-level tests, built with --config=cuda; carry gpu_bundle/):
#   1. every Backend op vs the CPU backend (cuda_backend_test);
#   2. greedy generation of the bundled model on CUDA vs CPU over the 40 reference prompts,
#      with the bf16 divergence rate (cuda_greedy_test); decode-step CUDA graphs replaying
#      bitwise what eager recording computes (cuda_graph_test); tensor parallelism, one rank
#      and, with 2+ GPUs, two (cuda_tensor_parallel_test); the engine's preemption and
#      copy-on-write on the device (cuda_engine_test);
#   2b. the engine's own time per decode step on this machine's CPU (engine_overhead_bench,
#      with the system allocator and with tcmalloc, which glimpse links: tools/bench/README.md;
#      and at 5 ms steps with the outputs emitted during the next step and before it);
#   3. unless SKIP_8B=1: a synthetic Llama-3.1-8B-shaped bf16 model made there (16 GB cannot
#      travel), batch-1 decode timed by `glimpse_lean bench`, against the bandwidth floor
#      (weight bytes + KV bytes read per step, over the D2D bandwidth gpu_check.sh measured —
#      pass its gpu_check.json as BENCH_JSON, or the floor is given in bytes only); then, unless
#      SKIP_VARIANTS=1, the same bench with --cuda_prefill_attention=mma_sync_wide, =wgmma,
#      =wgmma_pipelined and =wgmma_pipelined_128 (prefill tok/s of the five attention kernels
#      side by side), with --cuda_decode_attention=mma_sync (decode tok/s of the two decode
#      kernels), with --bench_logprobs=true (greedy with logprobs: the argmax and the row's
#      softmax normalizer from the device) and with --bench_device_top_k=0 as well (every
#      logits row back to the host and sampled there: what reducing greedy steps, logprobs
#      or not, on the device saves), top-p 0.9 sampling with its nucleus decided from the
#      device's candidates and weight sums and with every row sampled on the host
#      (--bench_top_p=0.9, --bench_nucleus_candidates=0), the same for plain temperature 1
#      sampling (--bench_temperature=1), top-k 50 sampling with its
#      candidates selected on the device and with every row sampled on the host
#      (--bench_top_k=50, --bench_device_top_k=0: what the device top-k saves), and the same
#      with a repetition penalty of 1.2 (--bench_repetition_penalty=1.2: the penalty applied to
#      the device's candidates, the row fetched when they do not decide).
#
#   kernels/cuda/gpu_e2e.sh [RESULT_DIR]          (from the repository root)
# Writes RESULT_DIR/gpu_e2e.json and RESULT_DIR/gpu_e2e_logs.tar.gz (every log and bench JSON;
# packed on any exit, a timeout too) — two files, as the device tool brings back at most
# eight from $OUT — and prints a short table last. Exit status nonzero if a test fails
# (benchmarks never fail on time).
#
# Time: the tests and the overhead benches take a minute or two, making the 8B model about
# one, each 8B bench run 20-40 s. E2E_BUDGET_S (default 480) bounds the whole script: the
# variant benches, most telling first, stop being started once it is spent, so that a call
# of 10 minutes (and a lease of 15) holds it with its results.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
SCRIPT_START=$(date +%s)
RESULT_DIR=${1:-${OUT:-.}/gpu_e2e}
mkdir -p "$RESULT_DIR"
WORK=$(mktemp -d /tmp/glimpse_gpu_e2e.XXXXXX)
pack_logs() { tar -czf "$RESULT_DIR/gpu_e2e_logs.tar.gz" -C "$WORK" . 2>/dev/null; }
trap 'pack_logs; rm -rf "$WORK"' EXIT
trap "exit 143" TERM INT  # so that EXIT packs on a timeout's TERM too
BUNDLE=${BUNDLE:-gpu_bundle}
if [ ! -x "$BUNDLE/run.sh" ]; then
  echo "gpu_e2e: no bundle at $BUNDLE; make it on the build machine with tools/gpu_bundle.sh" >&2
  exit 2
fi
RUN="$BUNDLE/run.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
  | tee "$WORK/gpu.txt"

# Every inner time limit is `timeout --foreground`: a plain timeout puts its command in a
# process group of its own, which the TERM of the limit on this whole script (sent to the
# script's group) would miss, and the script would wait for that command to end before
# packing its logs. (run.sh execs the binary, so there are no grandchildren to miss.)
run_test() {  # NAME -> exit status (124: timed out); log and gtest JSON in WORK
  timeout --foreground "${TEST_TIMEOUT:-300}" "$RUN" "$1" --gtest_output=json:"$WORK/$1.json" \
      >"$WORK/$1.log" 2>&1
}
run_test cuda_backend_test; backend_rc=$?
run_test cuda_greedy_test; greedy_rc=$?
run_test cuda_graph_test; graph_rc=$?
run_test cuda_tensor_parallel_test; tp_rc=$?
run_test cuda_engine_test; engine_rc=$?
echo "exit: cuda_backend_test $backend_rc, cuda_greedy_test $greedy_rc, cuda_graph_test $graph_rc," \
     "cuda_tensor_parallel_test $tp_rc, cuda_engine_test $engine_rc"
grep -E "^\[  (FAILED|PASSED|SKIPPED) |divergen|graph" "$WORK"/cuda_*_test.log | head -60

# The engine's host time per decode step on this CPU (a second or two): glibc's malloc, then
# tcmalloc as glimpse links it (the bundle's copy, preloaded by run.sh).
timeout --foreground 120 "$RUN" engine_overhead_bench --steps=200 \
    >"$WORK/engine_overhead_glibc.txt" 2>&1
overhead_rc=$?
GLIMPSE_BUNDLE_PRELOAD=libtcmalloc_minimal.so.4 timeout --foreground 120 "$RUN" \
    engine_overhead_bench --steps=200 >"$WORK/engine_overhead_tcmalloc.txt" 2>&1 || overhead_rc=$?
tail -n 13 "$WORK/engine_overhead_tcmalloc.txt"
# ... and with forward passes of 5 ms (an 8B decode step), the engine thread's CPU time per
# step with serve's sampling threads (last column: what this host adds to each step).
GLIMPSE_BUNDLE_PRELOAD=libtcmalloc_minimal.so.4 timeout --foreground 120 "$RUN" \
    engine_overhead_bench --steps=100 --forward_us=5000 --batch_sizes=64,256 \
    >"$WORK/engine_overhead_step5ms.txt" 2>&1 || overhead_rc=$?
tail -n 7 "$WORK/engine_overhead_step5ms.txt"
# ... and with each step's outputs emitted before the next step instead of during it (serve's
# --overlap_outputs=false): what the overlap hides on this host.
GLIMPSE_BUNDLE_PRELOAD=libtcmalloc_minimal.so.4 timeout --foreground 120 "$RUN" \
    engine_overhead_bench --steps=100 --forward_us=5000 --batch_sizes=64,256 \
    --overlap_outputs=false >"$WORK/engine_overhead_step5ms_no_overlap.txt" 2>&1 \
    || overhead_rc=$?
tail -n 7 "$WORK/engine_overhead_step5ms_no_overlap.txt"
pack_logs

bench_rc=0
decode_tok_s="null"; weight_bytes="null"; floor_ms="null"; ratio="null"
if [ "${SKIP_8B:-0}" != 1 ]; then
  MODEL=${MODEL_8B:-/tmp/glimpse-llama-3.1-8b-bf16.gguf}
  if [ ! -f "$MODEL" ]; then
    start=$(date +%s)
    "$RUN" glimpse_lean make-model --shape=llama-3.1-8b --type=bf16 --out="$MODEL" \
      >"$WORK/make_model.log" 2>&1 || { echo "make-model failed"; tail "$WORK/make_model.log"; }
    echo "make-model llama-3.1-8b bf16: $(( $(date +%s) - start )) s"
  fi
  PROMPT=${PROMPT_TOKENS:-512}
  GEN=${GEN_TOKENS:-64}
  "$RUN" glimpse_lean bench --device=cuda --bench_model="$MODEL" --batch_sizes=1 \
      --prompt_tokens="$PROMPT" --gen_tokens="$GEN" --repetitions=2 \
      --json_out="$WORK/bench_8b.json" 2>&1 | tee "$WORK/bench_8b.log"
  bench_rc=${PIPESTATUS[0]}
  pack_logs
  if [ "${SKIP_VARIANTS:-0}" != 1 ]; then
    # NAME:FLAGS -> the bench with FLAGS (comma-separated), results in bench_8b_NAME.json.
    # host_logits: every logits row back to the host and sampled there (with logprobs), as
    # before greedy steps reduced them on the device (the A/B of ArgMaxRows, and of the host
    # sampler's cost); logprobs: the same requests with the device's candidate and softmax
    # normalizer (TopKRows, k = 1); top_k_50 / top_k_50_rows: the A/B for top-k sampling;
    # top_p_09 / top_p_09_rows: for top-p sampling; temperature_1 / temperature_1_rows: for
    # plain temperature sampling; top_k_50_penalty / top_k_50_penalty_rows: for top-k with a
    # repetition penalty. VARIANTS="name ..." runs only those.
    variants=(
      decode_mma_sync:--cuda_decode_attention=mma_sync
      mma_sync_wide:--cuda_prefill_attention=mma_sync_wide
      wgmma:--cuda_prefill_attention=wgmma
      wgmma_pipelined:--cuda_prefill_attention=wgmma_pipelined
      wgmma_pipelined_128:--cuda_prefill_attention=wgmma_pipelined_128
      host_logits:--bench_logprobs=true,--bench_device_top_k=0
      logprobs:--bench_logprobs=true
      top_k_50:--bench_top_k=50
      top_k_50_rows:--bench_top_k=50,--bench_device_top_k=0
      top_p_09:--bench_top_p=0.9
      top_p_09_rows:--bench_top_p=0.9,--bench_nucleus_candidates=0
      temperature_1:--bench_temperature=1
      temperature_1_rows:--bench_temperature=1,--bench_nucleus_candidates=0
      top_k_50_penalty:--bench_top_k=50,--bench_repetition_penalty=1.2
      top_k_50_penalty_rows:--bench_top_k=50,--bench_repetition_penalty=1.2,--bench_device_top_k=0
    )
    for variant in "${variants[@]}"; do
      name=${variant%%:*}
      if [ -n "${VARIANTS:-}" ] && [[ " $VARIANTS " != *" $name "* ]]; then continue; fi
      left=$(( ${E2E_BUDGET_S:-480} - ($(date +%s) - SCRIPT_START) ))
      if [ "$left" -lt 30 ]; then
        echo "variant $name: skipped, E2E_BUDGET_S spent"
        continue
      fi
      IFS=, read -ra flags <<<"${variant#*:}"
      limit=${VARIANT_TIMEOUT:-180}
      [ "$left" -lt "$limit" ] && limit=$left
      timeout --foreground "$limit" "$RUN" glimpse_lean bench --device=cuda "${flags[@]}" \
          --bench_model="$MODEL" --batch_sizes=1 --prompt_tokens="$PROMPT" --gen_tokens="$GEN" \
          --repetitions=2 --json_out="$WORK/bench_8b_$name.json" 2>&1 \
          | tee "$WORK/bench_8b_$name.log"
      [ "${PIPESTATUS[0]}" -eq 0 ] || bench_rc=1
    done
    # The summary: the main bench, then the variants in the order they ran.
    names=("${variants[@]%%:*}")
    for f in bench_8b "${names[@]/#/bench_8b_}"; do
      [ -f "$WORK/$f.json" ] || continue
      python3 - "$WORK/$f.json" "$f" <<'PY'
import json, sys
bench = json.load(open(sys.argv[1]))
r = bench["results"][0]
c = bench.get("backend_counters", {})
print(f"{sys.argv[2]}: prefill {r['prefill_tok_s']:.0f} tok/s, decode {r['decode_tok_s']:.1f} "
      f"tok/s, attention calls: tensor-core {c.get('cuda_attention_tensor_core_calls_total', 0)}, "
      f"wide {c.get('cuda_attention_wide_calls_total', 0)}, "
      f"wgmma {c.get('cuda_attention_wgmma_calls_total', 0)}, "
      f"pipelined {c.get('cuda_attention_wgmma_pipelined_calls_total', 0)}, "
      f"pipelined_128 {c.get('cuda_attention_wgmma_pipelined_128_calls_total', 0)}, "
      f"mma decode {c.get('cuda_attention_mma_decode_calls_total', 0)}, rows from candidates "
      f"{r.get('nucleus_rows_decided', 0) + r.get('adjusted_rows_decided', 0)}, "
      f"fetched {r.get('rows_fetched', 0)}")
PY
    done
  fi
  if [ -f "$WORK/bench_8b.json" ]; then
    read -r decode_tok_s weight_bytes floor_ms ratio < <(python3 - "$WORK/bench_8b.json" \
        "${BENCH_JSON:-}" "$PROMPT" "$GEN" <<'PY'
import json, sys
bench = json.load(open(sys.argv[1]))
r = bench["results"][0]
tok_s = r["decode_tok_s"]
w = bench["weight_bytes"]
prompt, gen = int(sys.argv[3]), int(sys.argv[4])
# Every layer's K and V of each cached token (the bench's kv_bytes_per_token, in the cache's
# element type), read once per decode step at the mean context of the timed steps.
kv = bench["kv_bytes_per_token"] * (prompt + gen / 2)
bw = None
if sys.argv[2]:
    try:
        b = json.load(open(sys.argv[2]))
        b = b if "ceilings" in b else b["bench"]  # gpu_check.json embeds bench.json
        bw = b["ceilings"]["d2d_bandwidth_gbs"] * 1e9
    except Exception:
        bw = None
floor_ms = (w + kv) / bw * 1e3 if bw else None
step_ms = 1e3 / tok_s if tok_s else None
ratio = step_ms / floor_ms if (floor_ms and step_ms) else None
f = lambda x: "null" if x is None else f"{x:.4g}"
print(f(tok_s), w, f(floor_ms), f(ratio))
PY
)
  fi
fi

cat >"$RESULT_DIR/gpu_e2e.json" <<JSON
{"cuda_backend_test_exit": $backend_rc, "cuda_greedy_test_exit": $greedy_rc,
 "cuda_graph_test_exit": $graph_rc, "cuda_tensor_parallel_test_exit": $tp_rc,
 "cuda_engine_test_exit": $engine_rc, "engine_overhead_bench_exit": $overhead_rc,
 "bench_8b_exit": $bench_rc, "decode_batch1_tok_s": $decode_tok_s, "weight_bytes": $weight_bytes,
 "bandwidth_floor_ms_per_token": $floor_ms, "step_over_floor": $ratio}
JSON
echo
echo "==== gpu_e2e ===="
echo "backend ops vs CPU: exit $backend_rc | greedy CUDA vs CPU: exit $greedy_rc |" \
     "graph replay: exit $graph_rc | tensor parallel: exit $tp_rc | engine: exit $engine_rc"
echo "8B bf16 batch-1 decode: ${decode_tok_s} tok/s; floor ${floor_ms} ms/token; step/floor ${ratio} (target <= 1.25)"
echo "result: $RESULT_DIR/gpu_e2e.json, logs in gpu_e2e_logs.tar.gz beside it"
[ $backend_rc -eq 0 ] && [ $greedy_rc -eq 0 ] && [ $graph_rc -eq 0 ] && [ $tp_rc -eq 0 ] &&
  [ $engine_rc -eq 0 ]
