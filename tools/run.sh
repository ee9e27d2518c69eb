#!/usr/bin/env bash
# The main job: install what is missing, build the `glimpse` binary, and serve the bundled
# model over gRPC on 127.0.0.1:50051 until Ctrl-C / SIGTERM. Extra arguments go to
# `glimpse serve` (e.g. --port=50052 --host=0.0.0.0).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
bazel build //server:glimpse
exec bazel-bin/server/glimpse serve --model=models/tinycode-4m-f16.gguf "$@"
