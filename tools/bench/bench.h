// `glimpse bench`: llama-bench-style engine throughput. For each batch size B it prefills B
// prompts of --prompt_tokens random tokens, then decodes --gen_tokens tokens for each, and
// reports prefill and decode tokens per second together with the work done (forward steps,
// tokens through the model, weight bytes per step). Prints a table and, with --json_out,
// writes the same figures as JSON. Never fails on time: it measures, it does not judge.
#ifndef GLIMPSE_TOOLS_BENCH_BENCH_H_
#define GLIMPSE_TOOLS_BENCH_BENCH_H_

namespace glimpse::tools {

// Reads its flags (see --help); returns the process exit code.
int RunBenchCommand();

}  // namespace glimpse::tools

#endif  // GLIMPSE_TOOLS_BENCH_BENCH_H_
