#!/usr/bin/env bash
# tools/bench/suite.sh --quick end to end on the bundled model: it starts its own servers, runs
# every scenario, and writes a report whose runs all succeeded, whose plots exist and are
# well-formed SVG, and whose token counts agree with the server's own counters.
set -euo pipefail
OUT="${TEST_TMPDIR:-/tmp}/suite"
tools/bench/suite.sh --quick --glimpse=server/glimpse --model=models/tinycode-4m-f16.gguf \
    --threads=2 --out="$OUT" 2>"$OUT.log" || { cat "$OUT.log"; exit 1; }
python3 - "$OUT" <<'PY'
import json, os, re, sys
import xml.etree.ElementTree as ET
out = sys.argv[1]
report = open(os.path.join(out, "report.md")).read()
failures = []
def check(cond, what):
    if not cond:
        failures.append(what)
expected = ["glimpse-concurrency", "glimpse-rate", "glimpse-prefix", "glimpse-replay",
            "glimpse-code-edit", "glimpse-prefix-nocache"]
for name in expected:
    check(f"| {name} |" in report, f"summary row for {name}")
    run = json.load(open(os.path.join(out, "runs", name + ".json")))
    for level in run["levels"]:
        where = f"{name} {level.get('rate', level['concurrency'])}"
        check(level["requests_failed"] == 0, f"{where}: failures {level['errors']}")
        check(level["requests_ok"] == level["requests_planned"], f"{where}: all requests ran")
        check(len(level["requests"]) == level["requests_planned"], f"{where}: per-request JSON")
        check(level["output_tokens"] == 16 * level["requests_ok"], f"{where}: 16 tokens each")
        server = level["server"]
        check(server.get("generation_tokens") == level["output_tokens"],
              f"{where}: server generation_tokens {server.get('generation_tokens')} "
              f"!= client {level['output_tokens']}")
# Shared prefixes hit the cache when it is on.
prefix = json.load(open(os.path.join(out, "runs", "glimpse-prefix.json")))
check(prefix["server"].get("prefix_cache_hits", 0) > 0, "prefix scenario has cache hits")
plots = re.findall(r"\]\((runs/[^)]+\.svg)\)", report)
check(len(plots) >= 6 * 4, f"plots referenced: {len(plots)}")
for plot in plots:
    path = os.path.join(out, plot)
    try:
        root = ET.parse(path).getroot()
        check(root.tag.endswith("svg"), f"{plot} is an svg document")
    except Exception as e:  # Missing or malformed.
        failures.append(f"{plot}: {e}")
if failures:
    print("FAILED:\n  " + "\n  ".join(failures))
    sys.exit(1)
print(f"ok: {len(expected)} runs, {len(plots)} plots")
PY
