#!/usr/bin/env bash
# The main job: install what is missing, build the `glimpse` binary, and generate from the
# bundled model. Extra arguments go to `glimpse generate` (e.g. --prompt='def f(x):').
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
bazel build //server:glimpse
exec bazel-bin/server/glimpse generate --model=models/tinycode-4m-f16.gguf \
  --prompt=$'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n' --max_tokens=96 "$@"
