// llama.cpp's greedy references for the bundled model (tests/data/refs/, produced by
// llama-server at temperature 0 on the F32 file), one JSON object a line, for the tests that
// check glimpse against them or feed their prompts to a model.
#ifndef GLIMPSE_TESTS_LLAMA_CPP_REFS_H_
#define GLIMPSE_TESTS_LLAMA_CPP_REFS_H_

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace glimpse::testing {

struct LlamaCppReference {
  std::string id;
  std::vector<int32_t> prompt;  // prompt_tokens
  std::vector<int32_t> tokens;  // llama.cpp's greedy continuation
  std::string text;             // its text as llama.cpp's server returned it ("" if absent)
};

// The 40 short references (48 tokens each), as a runfiles path.
inline constexpr char kGreedyShortRefs[] = "tests/data/refs/greedy_short.jsonl";

// The first `max_count` references of the JSON-lines file at `path`. Records a gtest failure
// when the file yields none, so that a missing data dependency cannot pass as "all agree".
std::vector<LlamaCppReference> LoadLlamaCppReferences(
    const std::string& path = kGreedyShortRefs,
    size_t max_count = std::numeric_limits<size_t>::max());

}  // namespace glimpse::testing

#endif  // GLIMPSE_TESTS_LLAMA_CPP_REFS_H_
