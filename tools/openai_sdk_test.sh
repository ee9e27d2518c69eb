#!/usr/bin/env bash
# Runs tests/openai_sdk/sdk.test.mjs — the official OpenAI Node SDK against a real replica and
# gateway — outside Bazel (the SDK comes from the npm registry into tests/openai_sdk/
# node_modules). Needs bazel-bin/server/glimpse built. Prints node's own "# pass N" /
# "# fail N" lines; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "openai_sdk_test: node and npm are required (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
if [[ ! -d tests/openai_sdk/node_modules/openai ]]; then
  (cd tests/openai_sdk && npm ci --no-audit --no-fund >/dev/null) || {
    echo "openai_sdk_test: npm ci failed (is the npm registry reachable?)" >&2
    exit 1
  }
fi
work=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
echo "sdk-test-key" > "$work/keys"
GLIMPSE=bazel-bin/server/glimpse
"$GLIMPSE" serve --port=0 --threads=2 --model=models/tinycode-4m-f16.gguf >"$work/serve.out" 2>"$work/serve.err" &
for _ in $(seq 1 300); do grep -q "listening on" "$work/serve.out" && break; sleep 0.1; done
grpc=$(sed -n 's/.*listening on \(.*\)$/\1/p' "$work/serve.out" | head -1)
[[ -n "$grpc" ]] || { echo "openai_sdk_test: the replica did not start" >&2; cat "$work/serve.err" >&2; exit 1; }
"$GLIMPSE" gateway --port=0 --backends="$grpc" --api_keys_file="$work/keys" >"$work/gw.out" 2>"$work/gw.err" &
for _ in $(seq 1 300); do grep -q "listening on" "$work/gw.out" && break; sleep 0.1; done
http=$(sed -n 's/.*listening on \(.*\)$/\1/p' "$work/gw.out" | head -1)
[[ -n "$http" ]] || { echo "openai_sdk_test: the gateway did not start" >&2; cat "$work/gw.err" >&2; exit 1; }
GLIMPSE_GATEWAY_URL="http://$http/v1" GLIMPSE_API_KEY="sdk-test-key" \
  node --test --test-reporter=tap tests/openai_sdk/sdk.test.mjs
