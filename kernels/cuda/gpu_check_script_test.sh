#!/usr/bin/env bash
# gpu_check.sh as the bare GPU machine runs it — nvcc straight from the sources, no Bazel —
# here, where there is no GPU: the build must succeed, the tests must skip cleanly, and the
# result folder must hold exactly the two files the device tool brings back (the summary
# JSON and the logs tarball). The benchmarks are skipped (SKIP_BENCH=1): they need a device.
set -uo pipefail
script="$1"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

SKIP_BENCH=1 JOBS="${JOBS:-2}" "$script" "$out/check/gpu_check.json" >"$out/log" 2>&1
code=$?
tail -30 "$out/log"
[[ $code -eq 0 ]] || fail "exit status $code"
files=$(ls "$out/check" | sort | tr '\n' ' ')
[[ $files == "gpu_check.json gpu_check_logs.tar.gz " ]] || fail "the result folder holds: $files"
python3 - "$out/check/gpu_check.json" <<'PY' || fail "gpu_check.json is not the summary"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["build_ok"] is True and d["tests_exit"] == 0, d
assert d["tests"]["skipped"] is True, d["tests"]  # no device here
PY
listing=$(tar -tzf "$out/check/gpu_check_logs.tar.gz")
for f in build.log tests.json tests.log; do
  grep -q "$f" <<<"$listing" || fail "the logs lack $f"
done
echo PASS
