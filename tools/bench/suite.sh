#!/usr/bin/env bash
# The serving benchmark suite: one command that starts a fresh `glimpse serve` on a model, runs
# the standard matrix with `glimpse loadgen`, optionally runs the same matrix against a peer
# OpenAI-compatible server, and writes a markdown report with tables and SVG plots.
#
#   tools/bench/suite.sh                                   # synthetic small-110m, full matrix
#   tools/bench/suite.sh --peer_url=http://127.0.0.1:8081/v1   # ... and the same against a peer
#   tools/bench/suite.sh --quick --model=models/tinycode-4m-f16.gguf   # a one-minute smoke run
#
# The matrix (each scenario is one loadgen run; see tools/bench/README.md):
#   concurrency  synthetic prompts (input uniform 64-256 tokens), 64 output tokens, EOS ignored,
#                closed loop at concurrency 1, 4, 16, 64
#   rate         the same prompts, open loop (Poisson) at --rates requests/s
#   prefix       shared-prefix: 4 groups of 512-token shared prefixes + 32-64 token suffixes,
#                concurrency 16; glimpse with the prefix cache on, then off (a second server)
#   repetitive   replay (4 distinct requests sent again and again) and code-edit prompts,
#                concurrency 4. Speculation on/off: glimpse does not speculate yet, so these run
#                once; pair them (speculation on, off) when glimpse speculates.
# Against a peer, glimpse is measured over its OpenAI HTTP API too (same prompts as text, same
# client path), and the peer's /metrics is read when it has one.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() {
  cat <<'EOF'
Usage: tools/bench/suite.sh [options]
  --model=PATH        GGUF to serve (default: a synthetic small-110m F16 made under $TMPDIR)
  --peer_url=URL      also measure this OpenAI-compatible server (http://HOST:PORT/v1)
  --peer_name=NAME    its name in the report (default: peer)
  --out=DIR           where report.md, JSON and plots go (default: bench-report-<date>)
  --threads=N         glimpse serve --threads (default: all cores)
  --rates=LIST        request rates of the rate sweep (default: 1,2,4)
  --quick             a small, fast matrix (smoke test; figures are not meaningful)
  --glimpse=PATH      use this glimpse binary instead of building one
  --allow_remote      let loadgen reach a peer that is not on this machine
  --serve_flag=FLAG   extra flag for glimpse serve (repeatable)
EOF
}

MODEL=""
PEER_URL=""
PEER_NAME="peer"
OUT=""
THREADS="$(nproc)"
RATES="1,2,4"
QUICK=0
GLIMPSE=""
ALLOW_REMOTE=""
SERVE_FLAGS=()
for arg in "$@"; do
  case "$arg" in
    --model=*) MODEL="${arg#*=}" ;;
    --peer_url=*) PEER_URL="${arg#*=}" ;;
    --peer_name=*) PEER_NAME="${arg#*=}" ;;
    --out=*) OUT="${arg#*=}" ;;
    --threads=*) THREADS="${arg#*=}" ;;
    --rates=*) RATES="${arg#*=}" ;;
    --quick) QUICK=1 ;;
    --glimpse=*) GLIMPSE="${arg#*=}" ;;
    --allow_remote) ALLOW_REMOTE="--allow_remote" ;;
    --serve_flag=*) SERVE_FLAGS+=("${arg#*=}") ;;
    -h|--help) usage; exit 0 ;;
    *) echo "suite.sh: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
  esac
done

if [[ -z "$GLIMPSE" ]]; then
  bazel build //server:glimpse >&2
  GLIMPSE="bazel-bin/server/glimpse"
fi
[[ -x "$GLIMPSE" ]] || { echo "suite.sh: $GLIMPSE is not an executable glimpse binary" >&2; exit 2; }
# bazel-bin is a symlink that the next bazel command in this tree may repoint: hold the file.
GLIMPSE="$(readlink -f "$GLIMPSE")"
if [[ -z "$MODEL" ]]; then
  MODEL="${TMPDIR:-/tmp}/glimpse-bench-small-110m-f16.gguf"
  if [[ ! -f "$MODEL" ]]; then
    echo "suite.sh: making the synthetic small-110m model at $MODEL" >&2
    "$GLIMPSE" make-model --shape=small-110m --type=f16 --out="$MODEL" >&2
  fi
fi
[[ -f "$MODEL" ]] || { echo "suite.sh: no model at $MODEL" >&2; exit 2; }
OUT="${OUT:-bench-report-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT/runs"
LOGS="$OUT/logs"
mkdir -p "$LOGS"

# free_ports N: N distinct free TCP ports on 127.0.0.1 (bound all at once, so that no two are
# the same; asking for one at a time could hand the same just-released port out twice).
free_ports() {
  python3 -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

SERVER_PIDS=()
cleanup() {
  for pid in "${SERVER_PIDS[@]:-}"; do
    [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
  done
  for pid in "${SERVER_PIDS[@]:-}"; do
    [[ -n "$pid" ]] && wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

# start_glimpse NAME [serve flags...]: starts a server; sets GRPC_PORT, HTTP_PORT, METRICS_PORT.
start_glimpse() {
  local name="$1"; shift
  read -r GRPC_PORT HTTP_PORT METRICS_PORT < <(free_ports 3)
  local log="$LOGS/$name.log"
  "$GLIMPSE" serve --model="$MODEL" --threads="$THREADS" --host=127.0.0.1 --port="$GRPC_PORT" \
      --http_port="$HTTP_PORT" --metrics_port="$METRICS_PORT" "${SERVE_FLAGS[@]}" "$@" \
      >"$log" 2>&1 &
  SERVER_PIDS+=("$!")
  local pid="$!"
  for _ in $(seq 1 600); do
    if grep -q "glimpse serve: listening on" "$log" && \
       python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
           "http://127.0.0.1:$HTTP_PORT/health" >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "suite.sh: glimpse serve exited; its log ($log):" >&2; tail -20 "$log" >&2; exit 1
    fi
    sleep 0.2
  done
  echo "suite.sh: glimpse serve did not start in 120 s; see $log" >&2
  exit 1
}

stop_glimpse() {
  local pid="${SERVER_PIDS[-1]}"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset 'SERVER_PIDS[-1]'
}

if [[ "$QUICK" == 1 ]]; then
  CONCURRENCY="1,4"; C_REQUESTS=8; RATES="4,8"; R_REQUESTS=8; OUT_TOKENS=16
  INPUT_LEN="uniform:16:64"; PREFIX_LEN=64; PREFIX_REQUESTS=16; REP_REQUESTS=8; CODE_LEN=64
else
  CONCURRENCY="1,4,16,64"; C_REQUESTS=0; R_REQUESTS=0; OUT_TOKENS=64
  INPUT_LEN="uniform:64:256"; PREFIX_LEN=512; PREFIX_REQUESTS=64; REP_REQUESTS=32; CODE_LEN=256
fi
COMMON=(--max_tokens="$OUT_TOKENS" --ignore_eos --progress=never --warmup_requests=2)
SECTIONS=()

# run NAME TITLE URL [loadgen flags...]: one loadgen run writing runs/NAME.{json,md} + plots.
# Each scenario has its own workload seed, so one scenario's prompts are not cached by another's
# (glimpse and a peer get the same prompts for the same scenario).
declare -A SEEDS=([concurrency]=1 [rate]=2 [prefix]=3 [replay]=4 [code-edit]=5 [prefix-nocache]=3)
run() {
  local name="$1" title="$2" url="$3"; shift 3
  local seed=0 key
  for key in "${!SEEDS[@]}"; do [[ "$name" == *"-$key" ]] && seed="${SEEDS[$key]}"; done
  set -- --workload_seed="$seed" "$@"
  echo "suite.sh: $title" >&2
  local cmd=("$GLIMPSE" loadgen --url="$url" "${COMMON[@]}" --json="$OUT/runs/$name.json"
             --markdown="$OUT/runs/$name.md" --plots_dir="$OUT/runs/$name" --title="$title"
             $ALLOW_REMOTE "$@")
  "${cmd[@]}" | tee "$LOGS/$name.txt" >&2
  {
    echo
    echo "Command: \`loadgen --url=$url ${COMMON[*]} $*\`"
    echo
  } >>"$OUT/runs/$name.md"
  SECTIONS+=("$name")
}

# matrix PREFIX URL METRICS_FLAG: the scenarios that both glimpse and a peer run.
matrix() {
  local who="$1" url="$2" metrics="$3"
  run "$who-concurrency" "$who: concurrency sweep" "$url" $metrics \
      --dataset=synthetic --input_len="$INPUT_LEN" --concurrency="$CONCURRENCY" --requests="$C_REQUESTS"
  run "$who-rate" "$who: rate sweep (Poisson arrivals)" "$url" $metrics \
      --dataset=synthetic --input_len="$INPUT_LEN" --rate="$RATES" --concurrency=256 \
      --requests="$R_REQUESTS"
  run "$who-prefix" "$who: shared prefixes" "$url" $metrics \
      --dataset=shared-prefix --prefix_groups=4 --prefix_len="$PREFIX_LEN" --input_len=uniform:32:64 \
      --concurrency=16 --requests="$PREFIX_REQUESTS"
  run "$who-replay" "$who: repetitive (replayed requests)" "$url" $metrics \
      --dataset=replay --replay_unique=4 --input_len="$INPUT_LEN" --concurrency=4 \
      --requests="$REP_REQUESTS"
  run "$who-code-edit" "$who: repetitive (code edits)" "$url" $metrics \
      --dataset=code-edit --input_len="$CODE_LEN" --output_len=fixed:"$OUT_TOKENS" --concurrency=4 \
      --requests="$REP_REQUESTS"
}

start_glimpse glimpse
if [[ -n "$PEER_URL" ]]; then
  GLIMPSE_URL="http://127.0.0.1:$HTTP_PORT/v1"   # The same client path as the peer's.
else
  GLIMPSE_URL="grpc://127.0.0.1:$GRPC_PORT"
fi
matrix glimpse "$GLIMPSE_URL" "--metrics_url=http://127.0.0.1:$METRICS_PORT/metrics"
stop_glimpse
start_glimpse glimpse-nocache --enable_prefix_caching=false
if [[ -n "$PEER_URL" ]]; then NOCACHE_URL="http://127.0.0.1:$HTTP_PORT/v1"; else NOCACHE_URL="grpc://127.0.0.1:$GRPC_PORT"; fi
run glimpse-prefix-nocache "glimpse: shared prefixes, prefix cache off" "$NOCACHE_URL" \
    --metrics_url="http://127.0.0.1:$METRICS_PORT/metrics" \
    --dataset=shared-prefix --prefix_groups=4 --prefix_len="$PREFIX_LEN" --input_len=uniform:32:64 \
    --concurrency=16 --requests="$PREFIX_REQUESTS"
stop_glimpse
if [[ -n "$PEER_URL" ]]; then
  matrix "$PEER_NAME" "$PEER_URL" ""
fi

# The report: what ran where, a summary, then every run's section (tables, counters, plots).
summary_row() {  # NAME -> "| name | ok | failed | output tok/s | TTFT p50 | TPOT p50 |" per level
  python3 - "$OUT/runs/$1.json" "$1" <<'EOF'
import json, sys
run = json.load(open(sys.argv[1]))
for level in run["levels"]:
    where = f"rate {level['rate']}/s" if "rate" in level else f"c={level['concurrency']}"
    server = level.get("server", {})
    hit = server.get("prefix_cache_hit_rate")
    print(f"| {sys.argv[2]} | {where} | {level['requests_ok']} | {level['requests_failed']} | "
          f"{level['output_tok_s']:.1f} | {level['ttft_ms']['p50']:.0f} | "
          f"{level['tpot_ms']['p50']:.1f} | {'n/a' if hit is None else f'{hit:.2f}'} |")
EOF
}

REPORT="$OUT/report.md"
{
  echo "# glimpse serving benchmark"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  if COMMIT="$(git rev-parse --short HEAD 2>/dev/null)"; then
    git diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT (with uncommitted changes)"
  else
    COMMIT="unknown (not a git checkout)"
  fi
  echo "- commit: $COMMIT"
  echo "- machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "- model: \`$MODEL\`"
  echo "- glimpse serve: \`--threads=$THREADS ${SERVE_FLAGS[*]:-}\` (defaults otherwise; prefix cache on unless said)"
  [[ -n "$PEER_URL" ]] && echo "- peer: $PEER_NAME at \`$PEER_URL\`"
  [[ "$QUICK" == 1 ]] && echo "- **quick mode**: a smoke run; the figures are not meaningful"
  echo "- speculation: glimpse does not speculate yet, so the repetitive scenarios ran once (no on/off pair)"
  echo
  echo "Shared machines are noisy: compare figures measured in one run, and read the server"
  echo "counters (tokens, prefix-cache hits, preemptions) for work done rather than time."
  echo
  echo "## Summary"
  echo
  echo "| run | level | ok | failed | output tok/s | TTFT p50 ms | TPOT p50 ms | prefix hit rate |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  for name in "${SECTIONS[@]}"; do summary_row "$name"; done
  echo
  echo "## Runs"
  echo
  for name in "${SECTIONS[@]}"; do
    # Each run's section, with its plot paths made relative to the report.
    sed -e "s#](\($name/[^)]*\.svg\))#](runs/\1)#" -e 's/^## /### /' "$OUT/runs/$name.md"
    echo
  done
} >"$REPORT"
echo "suite.sh: wrote $REPORT" >&2
