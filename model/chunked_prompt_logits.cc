#include "model/chunked_prompt_logits.h"

#include <algorithm>
#include <span>

namespace glimpse::model {

absl::StatusOr<std::vector<std::vector<float>>> ChunkedPromptLogits(
    const StepForwardFn& forward, int32_t vocab, const std::vector<std::vector<int32_t>>& prompts,
    int32_t chunk, int32_t block_size, int32_t blocks_per_seq) {
  std::vector<std::vector<float>> out(prompts.size());
  std::vector<int32_t> done(prompts.size(), 0);
  while (true) {
    StepBatch batch;
    std::vector<size_t> row_seq;  // Sequence of each logits row.
    for (size_t s = 0; s < prompts.size(); ++s) {
      const int32_t n =
          std::min<int32_t>(chunk, static_cast<int32_t>(prompts[s].size()) - done[s]);
      if (n == 0) continue;
      std::vector<int32_t> blocks((done[s] + n + block_size - 1) / block_size);
      for (size_t b = 0; b < blocks.size(); ++b) {
        blocks[b] = static_cast<int32_t>(s) * blocks_per_seq + static_cast<int32_t>(b);
      }
      batch.AddSequence(std::span<const int32_t>(prompts[s]).subspan(done[s], n), done[s],
                        blocks, block_size, false);
      for (int32_t i = 0; i < n; ++i) {
        batch.logits_rows.push_back(batch.num_tokens() - n + i);
        row_seq.push_back(s);
      }
      done[s] += n;
    }
    if (batch.num_tokens() == 0) break;
    std::vector<float> logits(row_seq.size() * static_cast<size_t>(vocab));
    if (absl::Status s = forward(batch, logits.data()); !s.ok()) return s;
    for (size_t r = 0; r < row_seq.size(); ++r) {
      out[row_seq[r]].insert(out[row_seq[r]].end(), logits.begin() + r * vocab,
                             logits.begin() + (r + 1) * vocab);
    }
  }
  return out;
}

}  // namespace glimpse::model
