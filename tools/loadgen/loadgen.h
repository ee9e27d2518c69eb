// `glimpse loadgen`: the load-testing harness. It measures glimpse (grpc://HOST:PORT) or any
// OpenAI-compatible HTTP server (http://HOST:PORT/v1, /completions or /chat/completions with
// SSE) the same way: a workload (workload.h: synthetic lengths, JSONL or ShareGPT datasets,
// shared-prefix / replay / code-edit scenarios) sent closed loop at each --concurrency or open
// loop at each --rate, each level bounded in requests and time; then vLLM-defined statistics
// (stats.h) as a table, server-side counters read before and after each level
// (server_counters.h), and optionally JSON with every request's timings, SVG plots and a
// markdown report (report.h). Runs target loopback unless --allow_remote.
#ifndef GLIMPSE_TOOLS_LOADGEN_LOADGEN_H_
#define GLIMPSE_TOOLS_LOADGEN_LOADGEN_H_

namespace glimpse::tools {

// Reads its flags (see --help); returns the process exit code.
int RunLoadgenCommand();

}  // namespace glimpse::tools

#endif  // GLIMPSE_TOOLS_LOADGEN_LOADGEN_H_
