// Engine requests for llama.cpp's greedy references and the tokens their streams produce: the
// helpers the engine tests on every backend share (tests/engine_tp_test.cc,
// kernels/cuda/backend/cuda_engine_test.cc).
#ifndef GLIMPSE_TESTS_GREEDY_REQUESTS_H_
#define GLIMPSE_TESTS_GREEDY_REQUESTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "scheduler/request.h"
#include "scheduler/request_stream.h"
#include "tests/llama_cpp_refs.h"

namespace glimpse::testing {

// `ref`'s prompt, greedy, for as many tokens as the reference continues, ignoring EOS; n
// completions.
inline scheduler::EngineRequest GreedyRequest(const std::string& id, const LlamaCppReference& ref,
                                              int32_t n = 1) {
  scheduler::EngineRequest r;
  r.request_id = id;
  r.prompt_tokens = ref.prompt;
  r.n = n;
  r.sampling.temperature = 0.0f;
  r.stopping.max_tokens = static_cast<int32_t>(ref.tokens.size());
  r.stopping.ignore_eos = true;
  return r;
}

// Every completion's tokens once the stream ends, or the stream's error.
inline absl::StatusOr<std::vector<std::vector<int32_t>>> DrainTokens(
    scheduler::RequestStream& stream, int n) {
  std::vector<std::vector<int32_t>> tokens(n);
  while (true) {
    scheduler::RequestOutput out = stream.Next();
    for (const scheduler::SequenceDelta& d : out.deltas) {
      tokens[d.index].insert(tokens[d.index].end(), d.token_ids.begin(), d.token_ids.end());
    }
    if (out.done) {
      if (!out.status.ok()) return out.status;
      return tokens;
    }
  }
}

}  // namespace glimpse::testing

#endif  // GLIMPSE_TESTS_GREEDY_REQUESTS_H_
