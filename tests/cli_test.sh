#!/usr/bin/env bash
# End-to-end checks of the `glimpse` binary as a user runs it: generate reproduces llama.cpp's
# greedy continuation of a reference prompt (unsplit and over two tensor-parallel CPU ranks;
# an impossible split is refused), tokenize prints llama.cpp's ids, make-model
# writes a model that generate can load, and bad input fails with a clear message.
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

"$GLIMPSE" --help >/dev/null 2>&1
[[ $? -le 1 ]]
check "--help works" $?

exit $failures
