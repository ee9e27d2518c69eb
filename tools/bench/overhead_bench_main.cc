#include "tools/bench/overhead_bench_main.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "kernels/cpu/thread_pool.h"
#include "tools/bench/instant_step_runner.h"

ABSL_FLAG(int32_t, steps, 200, "decode steps per request (each request's max_tokens)");
ABSL_FLAG(std::vector<std::string>, batch_sizes, std::vector<std::string>({"1", "16", "64", "256"}),
          "decode batch sizes (requests run together)");
ABSL_FLAG(std::vector<std::string>, modes,
          std::vector<std::string>({"greedy", "top_k", "logprobs", "top_k_rows"}),
          "sampling modes: greedy, top_k (top-k 50 at T 0.8), logprobs (greedy + 5 logprobs), "
          "top_k_rows (top_k with every logits row sampled whole on the host, on the sampling "
          "threads from 256 rows of the bundled model's vocabulary)");
ABSL_FLAG(int32_t, forward_us, 0,
          "how long each forward pass takes, sleeping (0: none). Set a GPU step's time "
          "(e.g. 5000) to see the work that waits for a step to end, such as starting the "
          "gRPC writes of its outputs");
ABSL_FLAG(int32_t, sampling_threads, 0,
          "threads that sample a step's rows, the engine thread included, as glimpse serve's "
          "flag; 0: as serve's default, the CPUs this process may use, at most 8");
ABSL_FLAG(bool, overlap_outputs, true,
          "emit a step's outputs while the next step computes, as glimpse serve does "
          "(EngineOptions::overlap_outputs); false: before it is scheduled (for comparison)");
ABSL_FLAG(std::string, overhead_model, "models/tinycode-4m-f16.gguf",
          "model whose tokenizer and config the engine uses (its weights are not run)");

namespace glimpse::bench {
namespace {

// Creates and starts the engine of a run over `runner`: room for `spec.batch` sequences of a
// 16-token prompt and `spec.steps` tokens, all running together. Exits the process with a
// message naming `program` if it cannot.
std::unique_ptr<scheduler::Engine> StartOverheadEngine(InstantStepRunner& runner,
                                                       const OverheadRunSpec& spec,
                                                       const char* program) {
  scheduler::EngineOptions options;
  options.scheduler.max_running_sequences = spec.batch;
  options.scheduler.max_step_tokens = std::max(512, spec.batch);
  options.num_kv_blocks = spec.batch * ((16 + spec.steps) / 16 + 2);
  options.max_waiting_requests = spec.batch;
  options.seed = 1;
  options.overlap_outputs = absl::GetFlag(FLAGS_overlap_outputs);
  if (spec.mode.max_device_top_k >= 0) {
    options.step_logits.max_device_top_k = spec.mode.max_device_top_k;
  }
  const int32_t sampling_threads = absl::GetFlag(FLAGS_sampling_threads);
  options.sampling_threads =
      sampling_threads > 0 ? sampling_threads : std::min(8, kernels::cpu::DefaultNumThreads());
  auto engine = scheduler::Engine::Create(runner, *spec.loaded->tokenizer, options);
  if (!engine.ok()) {
    std::fprintf(stderr, "%s: %s\n", program, engine.status().ToString().c_str());
    std::exit(1);
  }
  (*engine)->Start();
  return *std::move(engine);
}

// One run: a fresh runner and engine, `run`'s requests to their end, the full-batch intervals.
StepIntervals RunOnce(const OverheadRunSpec& spec, const OverheadRun& run, const char* program) {
  InstantStepRunner runner(spec.loaded->model->config(), spec.forward_time);
  std::unique_ptr<scheduler::Engine> engine = StartOverheadEngine(runner, spec, program);
  run(spec, *engine);
  engine->Stop();
  return runner.Intervals(static_cast<size_t>(spec.batch));
}

}  // namespace

std::vector<int32_t> OverheadPrompt(int32_t i) {
  std::vector<int32_t> prompt;
  for (int32_t t = 0; t < 16; ++t) prompt.push_back(400 + (i * 7 + t) % 1000);
  return prompt;
}

int OverheadBenchMain(int argc, char** argv, const char* program, const char* title,
                      const OverheadRun& run) {
  absl::SetProgramUsageMessage(title);
  absl::ParseCommandLine(argc, argv);
  const int32_t steps = absl::GetFlag(FLAGS_steps);
  if (steps < 2) {
    std::fprintf(stderr, "%s: --steps wants at least 2 (intervals between steps), not %d\n",
                 program, steps);
    return 2;
  }
  const int32_t forward_us = absl::GetFlag(FLAGS_forward_us);
  if (forward_us < 0 || forward_us > 1000000) {
    std::fprintf(stderr, "%s: --forward_us wants 0..1000000, not %d\n", program, forward_us);
    return 2;
  }
  if (const int32_t t = absl::GetFlag(FLAGS_sampling_threads); t < 0 || t > 256) {
    std::fprintf(stderr, "%s: --sampling_threads wants 0..256, not %d\n", program, t);
    return 2;
  }
  const OverheadMode modes[] = {{"greedy", "greedy", 0.0f, 0, -1},
                                {"top_k", "top-k 50, T 0.8", 0.8f, 50, -1},
                                {"logprobs", "greedy + 5 logprobs", 0.0f, 0, 5},
                                {"top_k_rows", "top-k 50, whole rows", 0.8f, 50, -1, 0}};
  std::vector<int32_t> batches;
  for (const std::string& b : absl::GetFlag(FLAGS_batch_sizes)) {
    int32_t v = 0;
    if (!absl::SimpleAtoi(b, &v) || v < 1 || v > 4096) {
      std::fprintf(stderr, "%s: --batch_sizes wants numbers in 1..4096, not '%s'\n", program,
                   b.c_str());
      return 2;
    }
    batches.push_back(v);
  }
  const std::vector<std::string> wanted = absl::GetFlag(FLAGS_modes);
  for (const std::string& m : wanted) {
    if (std::none_of(std::begin(modes), std::end(modes),
                     [&](const OverheadMode& mode) { return m == mode.flag; })) {
      std::fprintf(stderr, "%s: unknown mode '%s' (greedy, top_k, logprobs, top_k_rows)\n", program,
                   m.c_str());
      return 2;
    }
  }
  auto loaded = server::LoadedModel::Load(absl::GetFlag(FLAGS_overhead_model), /*num_threads=*/1,
                                          server::Device::kCpu, 1, server::KvCacheDType::kAuto);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s: %s\n", program, loaded.status().ToString().c_str());
    return 1;
  }
  std::printf("%s (forward pass of %d us, %d steps a request, outputs %s)\n", title, forward_us,
              steps,
              absl::GetFlag(FLAGS_overlap_outputs) ? "overlapped with the next step"
                                                   : "before the next step");
  std::printf("%-22s %6s %12s %12s %14s %16s %16s %12s %12s\n", "mode", "batch", "median us",
              "p90 us", "us / sequence", "engine cpu us", "process cpu us", "gap us", "gap cpu us");
  for (const OverheadMode& mode : modes) {
    if (std::find(wanted.begin(), wanted.end(), mode.flag) == wanted.end()) continue;
    for (const int32_t batch : batches) {
      const StepIntervals intervals = RunOnce(
          {&*loaded, mode, batch, steps, std::chrono::microseconds(forward_us)}, run, program);
      const double median = Percentile(intervals.wall_us, 0.5);
      std::printf("%-22s %6d %12.1f %12.1f %14.2f %16.1f %16.1f %12.1f %12.1f\n", mode.name, batch,
                  median, Percentile(intervals.wall_us, 0.9), median / batch,
                  Percentile(intervals.engine_cpu_us, 0.5),
                  Percentile(intervals.process_cpu_us, 0.5), Percentile(intervals.gap_us, 0.5),
                  Percentile(intervals.gap_cpu_us, 0.5));
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace glimpse::bench
