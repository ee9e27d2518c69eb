// `glimpse loadgen`: a closed-loop load generator for a running `glimpse serve`. For each
// concurrency level it keeps that many streaming Generate calls in flight (each client thread
// sends its next request as soon as the previous one ends) and reports aggregate output
// tokens per second and TTFT / TPOT / end-to-end latency percentiles, as a table and JSON.
// Prompts come from a JSONL file of {"prompt_tokens": [...]} lines (by default llama.cpp's
// reference prompts), so runs are comparable with ../shared/reference/peer_numbers.md.
// Issue #6 grows this into the full load-testing harness (HTTP targets, peers, scenarios).
#ifndef GLIMPSE_TOOLS_LOADGEN_LOADGEN_H_
#define GLIMPSE_TOOLS_LOADGEN_LOADGEN_H_

namespace glimpse::tools {

// Reads its flags (see --help); returns the process exit code.
int RunLoadgenCommand();

}  // namespace glimpse::tools

#endif  // GLIMPSE_TOOLS_LOADGEN_LOADGEN_H_
