// Engine requests for llama.cpp's greedy references, the tokens their streams produce, and the
// check that an engine reproduces them: the helpers the engine tests on every backend share
// (tests/engine_tp_test.cc, kernels/cuda/backend/cuda_engine_test.cc).
#ifndef GLIMPSE_TESTS_GREEDY_REQUESTS_H_
#define GLIMPSE_TESTS_GREEDY_REQUESTS_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "scheduler/engine.h"
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

// Submits refs[i] for every i in `which` at once (n greedy completions each), expects every
// completion to equal the reference's continuation, then the engine to go idle within
// `idle_timeout` with no KV block in use.
inline void ExpectGreedyReferences(scheduler::Engine& engine,
                                   const std::vector<LlamaCppReference>& refs,
                                   const std::vector<size_t>& which, int32_t n,
                                   absl::Duration idle_timeout) {
  std::vector<std::shared_ptr<scheduler::RequestStream>> streams;
  for (const size_t i : which) {
    ASSERT_LT(i, refs.size());
    auto s = engine.Submit(GreedyRequest("r" + std::to_string(i), refs[i], n));
    ASSERT_TRUE(s.ok()) << s.status();
    streams.push_back(*s);
  }
  for (size_t k = 0; k < which.size(); ++k) {
    const auto tokens = DrainTokens(*streams[k], n);
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    for (int32_t c = 0; c < n; ++c) {
      EXPECT_EQ((*tokens)[c], refs[which[k]].tokens)
          << "reference " << which[k] << " (" << refs[which[k]].id << ") completion " << c;
    }
  }
  ASSERT_TRUE(engine.WaitIdle(idle_timeout));
  EXPECT_EQ(engine.GetLoad().kv_blocks_used, 0);
}

// 0, 1, ..., count - 1: the first `count` references.
inline std::vector<size_t> FirstReferences(size_t count) {
  std::vector<size_t> which(count);
  for (size_t i = 0; i < count; ++i) which[i] = i;
  return which;
}

}  // namespace glimpse::testing

#endif  // GLIMPSE_TESTS_GREEDY_REQUESTS_H_
