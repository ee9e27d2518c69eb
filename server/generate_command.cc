#include "server/generate_command.h"

#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "kvcache/block_pool.h"
#include "model/detokenizer.h"
#include "scheduler/offline_generator.h"
#include "server/common_flags.h"
#include "server/loaded_model.h"
#include "server/sampling_flags.h"

ABSL_FLAG(std::string, prompt, "def fibonacci(n):\n",
          "Prompt text (generate, tokenize). BOS is added when the model asks for it.");
ABSL_FLAG(int32_t, max_tokens, 64, "Maximum number of tokens to generate.");
ABSL_FLAG(bool, ignore_eos, false, "Keep generating past the end-of-sequence token.");
ABSL_FLAG(bool, echo, true, "Print the prompt before the generated text.");
ABSL_FLAG(int32_t, block_size, 16, "KV cache block size in tokens.");
ABSL_FLAG(int32_t, prefill_chunk, 512,
          "Prompt tokens run per forward step; longer prompts are prefilled in chunks.");

namespace glimpse::server {

int RunGenerateCommand() {
  auto loaded = LoadedModel::Load(absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_threads));
  if (!loaded.ok()) {
    std::fprintf(stderr, "glimpse generate: %s\n", std::string(loaded.status().message()).c_str());
    return 1;
  }
  auto sampling = SamplingParamsFromFlags();
  if (!sampling.ok()) {
    std::fprintf(stderr, "glimpse generate: %s\n", std::string(sampling.status().message()).c_str());
    return 2;
  }
  const model::Tokenizer& tokenizer = *loaded->tokenizer;
  scheduler::GenerationRequest request;
  request.prompt_tokens = tokenizer.Encode(absl::GetFlag(FLAGS_prompt), /*add_special=*/true);
  request.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  request.sampling = *sampling;
  request.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  request.report_logprobs = request.sampling.num_logprobs > 0;  // printed only then
  request.stop_token_ids = tokenizer.end_of_generation_ids();

  const int32_t block_size = absl::GetFlag(FLAGS_block_size);
  if (block_size < 1 || block_size > 1024) {
    std::fprintf(stderr, "glimpse generate: --block_size must be in 1..1024\n");
    return 2;
  }
  const int64_t total = static_cast<int64_t>(request.prompt_tokens.size()) + request.max_tokens;
  const int32_t num_blocks = static_cast<int32_t>((total + block_size - 1) / block_size);
  loaded->runner->AllocateKvCache(num_blocks, block_size, /*num_host_blocks=*/0);
  kvcache::BlockPool pool(num_blocks);
  scheduler::OfflineGeneratorOptions options;
  options.prefill_chunk_tokens = absl::GetFlag(FLAGS_prefill_chunk);
  options.seed = request.sampling.seed.value_or(0);
  scheduler::OfflineGenerator generator(*loaded->runner, pool, options);

  if (absl::GetFlag(FLAGS_echo)) {
    std::fputs(absl::GetFlag(FLAGS_prompt).c_str(), stdout);
    std::fflush(stdout);
  }
  model::StreamingDetokenizer detokenizer(tokenizer);
  const int32_t num_logprobs = request.sampling.num_logprobs;
  auto results = generator.Run({request}, [&](size_t, const model::Sampler::SampleResult& s) {
    if (tokenizer.IsEndOfGeneration(s.token) && !request.ignore_eos) return;
    std::fputs(detokenizer.Push(s.token).c_str(), stdout);
    std::fflush(stdout);
    if (num_logprobs > 0) {
      std::fprintf(stderr, "[token %d logprob %.4f top:", s.token, s.logprob);
      for (const auto& [id, lp] : s.top_logprobs) std::fprintf(stderr, " %d=%.4f", id, lp);
      std::fprintf(stderr, "]\n");
    }
  });
  std::fputs(detokenizer.Flush().c_str(), stdout);
  std::fputs("\n", stdout);
  // The text before the statistics on stderr, also when both go to one pipe (stdout is then
  // block-buffered and would land after them).
  std::fflush(stdout);
  if (!results.ok()) {
    std::fprintf(stderr, "glimpse generate: %s\n", std::string(results.status().message()).c_str());
    return 1;
  }
  const auto& c = generator.counters();
  std::fprintf(stderr,
               "glimpse generate: %zu prompt tokens in %.1f ms (%.1f tok/s), %zu generated in "
               "%.1f ms (%.1f tok/s), finish reason %s, %s\n",
               request.prompt_tokens.size(), c.prefill_seconds * 1e3,
               c.num_prefill_tokens / std::max(c.prefill_seconds, 1e-9),
               (*results)[0].tokens.size(), c.decode_seconds * 1e3,
               c.num_decode_tokens / std::max(c.decode_seconds, 1e-9),
               (*results)[0].finish_reason == scheduler::FinishReason::kStopToken ? "stop"
                                                                                  : "length",
               loaded->backend_name().c_str());
  return 0;
}

}  // namespace glimpse::server
