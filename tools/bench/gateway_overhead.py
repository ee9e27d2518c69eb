#!/usr/bin/env python3
"""Measures what the OpenAI gateway adds to a request and to each streamed token.

Starts a `glimpse serve` replica (with metrics) and a separate `glimpse gateway` on loopback,
then compares what an HTTP client sees with what the engine itself reports:
  * per request: client-observed latency of non-streamed 1-token completions minus the
    engine's mean end-to-end latency (glimpse_e2e_request_latency_seconds) for them;
  * per token: client-observed mean gap between streamed tokens minus the engine's mean
    inter-token latency (glimpse_inter_token_latency_seconds) over the same requests.
Prints a table and JSON. A benchmark: it never fails on time. Stdlib only.

  bazel build //server:glimpse && tools/bench/gateway_overhead.py
"""
import http.client
import json
import re
import subprocess
import sys
import tempfile
import time

GLIMPSE = "bazel-bin/server/glimpse"
MODEL = "models/tinycode-4m-f16.gguf"


def start(args, marker):
    out = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL, text=True)
    for _ in range(600):
        out.seek(0)
        m = re.search(marker + r"\S*:(\d+)", out.read())
        if m:
            return proc, int(m.group(1))
        time.sleep(0.05)
    proc.kill()
    sys.exit(f"{args[1]} did not start")


def metric_sum_count(port, name):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    s = re.search(rf"^{name}_sum(?:{{[^}}]*}})? (\S+)$", text, re.M)
    c = re.search(rf"^{name}_count(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(s.group(1)), float(c.group(1))


def main():
    metrics_port = 19400 + (int(time.time()) % 500)
    serve, grpc_port = start([GLIMPSE, "serve", "--port=0", "--threads=2", f"--model={MODEL}",
                              f"--metrics_port={metrics_port}"], "listening on ")
    gateway, http_port = start([GLIMPSE, "gateway", "--port=0",
                                f"--backends=127.0.0.1:{grpc_port}"], "listening on ")
    conn = http.client.HTTPConnection("127.0.0.1", http_port)

    def post(body):
        conn.request("POST", "/v1/completions", json.dumps(body),
                     {"Content-Type": "application/json"})
        return conn.getresponse()

    try:
        for _ in range(20):  # Warm-up.
            post({"prompt": "def f(x):", "max_tokens": 1}).read()
        n = 200
        s0, c0 = metric_sum_count(metrics_port, "glimpse_e2e_request_latency_seconds")
        t0 = time.perf_counter()
        for _ in range(n):
            post({"prompt": "def f(x):", "max_tokens": 1, "temperature": 0}).read()
        client_ms = (time.perf_counter() - t0) / n * 1e3
        s1, c1 = metric_sum_count(metrics_port, "glimpse_e2e_request_latency_seconds")
        engine_ms = (s1 - s0) / (c1 - c0) * 1e3

        streams, tokens = 20, 64
        gaps = []
        i0, j0 = metric_sum_count(metrics_port, "glimpse_inter_token_latency_seconds")
        for _ in range(streams):
            # Raw lines of the chunked SSE body, on a connection used for this stream only.
            stream_conn = http.client.HTTPConnection("127.0.0.1", http_port)
            stream_conn.request("POST", "/v1/completions", json.dumps(
                {"prompt": "import os\n", "max_tokens": tokens, "temperature": 0,
                 "ignore_eos": True, "stream": True}), {"Content-Type": "application/json"})
            resp = stream_conn.getresponse()
            last = None
            while True:
                line = resp.fp.readline()
                if not line or line.startswith(b"data: [DONE]"):
                    break
                if line.startswith(b"data: {") and b'"text":""' not in line:
                    now = time.perf_counter()
                    if last is not None:
                        gaps.append(now - last)
                    last = now
            stream_conn.close()
        i1, j1 = metric_sum_count(metrics_port, "glimpse_inter_token_latency_seconds")
        client_gap_ms = sum(gaps) / len(gaps) * 1e3
        engine_gap_ms = (i1 - i0) / (j1 - j0) * 1e3
    finally:
        gateway.kill()
        serve.kill()
    result = {
        "request_client_ms": client_ms, "request_engine_ms": engine_ms,
        "request_added_ms": client_ms - engine_ms,
        "token_client_ms": client_gap_ms, "token_engine_ms": engine_gap_ms,
        "token_added_ms": client_gap_ms - engine_gap_ms,
    }
    print("| what | client sees | engine reports | gateway adds |")
    print("|---|---:|---:|---:|")
    print(f"| 1-token completion, ms | {client_ms:.2f} | {engine_ms:.2f} | {client_ms - engine_ms:.2f} |")
    print(f"| gap between streamed tokens, ms | {client_gap_ms:.3f} | {engine_gap_ms:.3f} | "
          f"{client_gap_ms - engine_gap_ms:.3f} |")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
