#!/usr/bin/env bash
# End-to-end checks of the `glimpse` binary as a user runs it: generate reproduces llama.cpp's
# greedy continuation of a reference prompt (unsplit, over an fp16 KV cache and over two
# tensor-parallel CPU ranks; an impossible split is refused), tokenize prints llama.cpp's ids,
# make-model writes a model that generate can load, bench reports its figures, and bad input
# fails with a clear message.
set -uo pipefail
GLIMPSE="$1"
REFS="tests/data/refs/greedy_short.jsonl"
failures=0
check() {  # check NAME CONDITION-EXIT-CODE
  if [[ "$2" -eq 0 ]]; then echo "PASS: $1"; else echo "FAIL: $1"; failures=$((failures + 1)); fi
}

# The first reference line: prompt text, llama.cpp's prompt ids and greedy continuation text.
line=$(head -n 1 "$REFS")
field() { python3 -c 'import json,sys; v=json.loads(sys.argv[1])[sys.argv[2]]; print(" ".join(map(str,v)) if isinstance(v,list) else v, end="")' "$line" "$1"; }
# Command substitution drops trailing newlines; a sentinel '.' keeps them.
prompt=$(field prompt; echo .); prompt=${prompt%.}
want_ids=$(field prompt_tokens)
want_text=$(field text; echo .); want_text=${want_text%.}
max_tokens=$(python3 -c 'import json,sys; print(len(json.loads(sys.argv[1])["tokens"]))' "$line")

out=$("$GLIMPSE" generate --prompt="$prompt" --max_tokens="$max_tokens" --ignore_eos --echo=false --threads=2 2>/dev/null; code=$?; echo .; exit $code)
check "generate exits 0" $?
out=${out%.}
# generate prints the continuation, then one newline.
[[ "$out" == "$want_text"$'\n' ]]
check "generate reproduces llama.cpp's greedy text" $?

# An fp16 KV cache (llama.cpp's default) reproduces the same text.
out=$("$GLIMPSE" generate --prompt="$prompt" --max_tokens="$max_tokens" --ignore_eos --echo=false --threads=2 --kv_cache_dtype=f16 2>/dev/null; code=$?; echo .; exit $code)
check "generate --kv_cache_dtype=f16 exits 0" $?
out=${out%.}
[[ "$out" == "$want_text"$'\n' ]]
check "generate --kv_cache_dtype=f16 reproduces llama.cpp's greedy text" $?

# Text and statistics on one pipe: the whole text and its newline come first.
out=$("$GLIMPSE" generate --prompt="$prompt" --max_tokens="$max_tokens" --ignore_eos --echo=false --threads=2 2>&1)
[[ "$out" == "$want_text"$'\n'"glimpse generate: "* ]]
check "generate's statistics follow the text on their own line" $?

# Split over two in-process CPU tensor-parallel ranks: the same greedy text.
out=$("$GLIMPSE" generate --prompt="$prompt" --max_tokens="$max_tokens" --ignore_eos --echo=false --threads=2 --tensor_parallel_size=2 2>/dev/null; code=$?; echo .; exit $code)
check "generate --tensor_parallel_size=2 exits 0" $?
out=${out%.}
[[ "$out" == "$want_text"$'\n' ]]
check "generate --tensor_parallel_size=2 reproduces llama.cpp's greedy text" $?

# The bundled model's 2 KV heads cannot split over 3 ranks: refused at startup, saying why.
err=$("$GLIMPSE" generate --prompt="$prompt" --max_tokens=2 --tensor_parallel_size=3 2>&1 >/dev/null)
code=$?
[[ $code -ne 0 && "$err" == *"2 KV heads do not split evenly over 3"* ]]
check "generate --tensor_parallel_size=3 fails with the head-split reason" $?

ids=$("$GLIMPSE" tokenize --prompt="$prompt" --ids_only --parse_special)
[[ "$ids" == "$want_ids" ]]
check "tokenize prints llama.cpp's ids" $?

tmp=$(mktemp -d)
"$GLIMPSE" make-model --shape=small-110m --type=q8_0 --out="$tmp/small.gguf" 2>/dev/null
check "make-model exits 0" $?
"$GLIMPSE" generate --model="$tmp/small.gguf" --prompt="hello" --max_tokens=3 --threads=2 >/dev/null 2>&1
check "generate runs a make-model model" $?
rm -rf "$tmp"

# bench over an fp16 cache: the bundled model's KV per token is 6 layers x (K + V) x 2 KV heads
# x 32 dims x 2 bytes = 1536 bytes, and the table's bandwidths are the bytes a decode step reads
# (the weights; plus every sequence's KV at the mean decode context) times steps per second.
# 400-token prompts make the KV some 15% of a step's bytes, so a column without it is caught.
tmp=$(mktemp -d)
table=$("$GLIMPSE" bench --bench_model=models/tinycode-4m-f16.gguf --threads=2 --prompt_tokens=400 \
    --gen_tokens=8 --batch_sizes=2 --repetitions=1 --kv_cache_dtype=f16 --json_out="$tmp/b.json" 2>/dev/null)
check "bench exits 0" $?
python3 - "$tmp/b.json" "$table" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
assert b["kv_cache_dtype"] == "f16", b["kv_cache_dtype"]
assert b["kv_bytes_per_token"] == 1536, b["kv_bytes_per_token"]
row = [l for l in sys.argv[2].splitlines() if l.startswith("| 2 |")][0]
cells = [c.strip() for c in row.strip("|").split("|")]
weights, with_kv = float(cells[4]), float(cells[5])
r = b["results"][0]
steps_per_s = r["decode_tok_s"] / 2
want_weights = steps_per_s * b["weight_bytes"] / 1e9
want_with_kv = steps_per_s * (b["weight_bytes"] + 2 * (400 + 8 / 2) * 1536) / 1e9
# The table prints one decimal.
assert abs(weights - want_weights) <= 0.051 + 0.01 * want_weights, (weights, want_weights)
assert abs(with_kv - want_with_kv) <= 0.051 + 0.01 * want_with_kv, (with_kv, want_with_kv)
PY
check "bench reports the fp16 cache's bytes per token and bandwidth with KV" $?
rm -rf "$tmp"

err=$("$GLIMPSE" generate --model=/no/such/model.gguf 2>&1 >/dev/null)
code=$?
[[ $code -ne 0 && "$err" == *"/no/such/model.gguf"* ]]
check "missing model fails naming the path" $?

err=$("$GLIMPSE" frobnicate 2>&1)
[[ $? -eq 2 && "$err" == *"unknown command"* ]]
check "unknown command fails with usage" $?

err=$("$GLIMPSE" generate --temperature=-1 --max_tokens=2 2>&1)
[[ $? -ne 0 && "$err" == *"temperature"* ]]
check "bad sampling flag names the field" $?

err=$("$GLIMPSE" serve --adjusted_extra_candidates=-1 2>&1)
[[ $? -eq 2 && "$err" == *"--adjusted_extra_candidates must be in 0..32768"* ]]
check "bad serve flag names the flag and its range" $?

err=$("$GLIMPSE" serve --write_threads=65 2>&1)
[[ $? -eq 2 && "$err" == *"--write_threads must be in 0..64"* ]]
check "serve refuses too many write threads" $?

# The engine's outputs are allocated on its thread and freed on the front end's: glimpse
# allocates with tcmalloc (tools/bench/README.md), not glibc's malloc.
# (ldd's output taken whole: `ldd | grep -q` under pipefail fails whenever grep's early exit
# cuts ldd off with SIGPIPE.)
libs=$(ldd "$GLIMPSE")
[[ "$libs" == *libtcmalloc_minimal* ]]
check "glimpse links tcmalloc" $?

"$GLIMPSE" --help >/dev/null 2>&1
[[ $? -le 1 ]]
check "--help works" $?

exit $failures
