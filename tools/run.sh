#!/usr/bin/env bash
# The main job: install what is missing, build the `glimpse` binary, and serve the bundled
# model until Ctrl-C / SIGTERM: gRPC (glimpse.v1) on 127.0.0.1:50051 and the OpenAI-compatible
# HTTP API on http://127.0.0.1:8080/v1. Extra arguments go to `glimpse serve`
# (e.g. --port=50052 --http_port=8081 --host=0.0.0.0).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
bazel build //server:glimpse
exec bazel-bin/server/glimpse serve --model=models/tinycode-4m-f16.gguf --http_port=8080 "$@"
