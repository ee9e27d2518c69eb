// The command line and table shared by the host-overhead benches (engine_overhead_bench,
// grpc_overhead_bench): each runs an engine over an InstantStepRunner for every sampling mode
// and batch size asked for, and this prints the engine's time per full-batch decode step.
//
// Flags (defined here): --steps, --batch_sizes, --modes, --forward_us, --sampling_threads,
// --overlap_outputs, --overhead_model.
#ifndef GLIMPSE_TOOLS_BENCH_OVERHEAD_BENCH_MAIN_H_
#define GLIMPSE_TOOLS_BENCH_OVERHEAD_BENCH_MAIN_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "scheduler/engine.h"
#include "server/loaded_model.h"

namespace glimpse::bench {

// One sampling mode every request of a run uses.
struct OverheadMode {
  const char* flag;  // its --modes name
  const char* name;  // its name in the table
  float temperature;
  int32_t top_k;
  int32_t num_logprobs;  // -1: none
  // The engine's step_logits.max_device_top_k; -1: its default. 0: every logits row comes
  // back whole and is sampled on the host, on the sampling pool once rows x vocabulary
  // reach EngineOptions::parallel_sampling_min_elements.
  int32_t max_device_top_k = -1;
};

// What one run of a bench does.
struct OverheadRunSpec {
  const server::LoadedModel* loaded;
  OverheadMode mode;
  int32_t batch;                           // requests, all running together
  int32_t steps;                           // tokens each generates
  std::chrono::microseconds forward_time;  // the InstantStepRunner's
};

// Submits `spec.batch` requests to the running `engine` (each `spec.steps` tokens in
// `spec.mode`, prompts OverheadPrompt(i)) and returns once all of them ended. The bench's
// main made the engine over an InstantStepRunner and stops it afterwards.
using OverheadRun = std::function<void(const OverheadRunSpec& spec, scheduler::Engine& engine)>;

// The 16-token prompt of a run's `i`th request.
std::vector<int32_t> OverheadPrompt(int32_t i);

// Parses the flags, loads --overhead_model and prints the table (`title` heads it); returns
// main's exit status.
int OverheadBenchMain(int argc, char** argv, const char* program, const char* title,
                      const OverheadRun& run);

}  // namespace glimpse::bench

#endif  // GLIMPSE_TOOLS_BENCH_OVERHEAD_BENCH_MAIN_H_
