#include "model/step_batch.h"

#include "absl/strings/str_cat.h"

namespace glimpse::model {

int32_t StepBatch::AddSequence(std::span<const int32_t> tokens, int32_t start_position,
                               std::span<const int32_t> blocks, int32_t block_size,
                               bool want_last_logits) {
  if (query_start.empty()) query_start.push_back(0);
  if (kv_indptr.empty()) kv_indptr.push_back(0);
  for (size_t i = 0; i < tokens.size(); ++i) {
    token_ids.push_back(tokens[i]);
    positions.push_back(start_position + static_cast<int32_t>(i));
  }
  query_start.push_back(static_cast<int32_t>(token_ids.size()));
  const int32_t kv_len = start_position + static_cast<int32_t>(tokens.size());
  const int32_t num_pages = (kv_len + block_size - 1) / block_size;
  kv_indices.insert(kv_indices.end(), blocks.begin(), blocks.begin() + num_pages);
  kv_indptr.push_back(static_cast<int32_t>(kv_indices.size()));
  kv_last_page_len.push_back(kv_len - (num_pages - 1) * block_size);
  const int32_t last_row = static_cast<int32_t>(token_ids.size()) - 1;
  if (want_last_logits) logits_rows.push_back(last_row);
  return last_row;
}

absl::Status ValidateStepBatch(const StepBatch& b, int32_t block_size, int32_t num_blocks,
                               int32_t vocab_size) {
  auto bad = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("invalid StepBatch: ", parts...));
  };
  const int32_t num_seqs = b.num_seqs();
  if (b.positions.size() != b.token_ids.size()) return bad("positions and token_ids differ in length");
  if (b.query_start.size() != static_cast<size_t>(num_seqs) + 1 ||
      b.kv_indptr.size() != static_cast<size_t>(num_seqs) + 1) {
    return bad("query_start/kv_indptr must have num_seqs + 1 entries");
  }
  if (num_seqs == 0 || b.query_start[0] != 0 || b.kv_indptr[0] != 0 ||
      b.query_start[num_seqs] != b.num_tokens() ||
      b.kv_indptr[num_seqs] != static_cast<int32_t>(b.kv_indices.size())) {
    return bad("empty batch or CSR offsets do not start at 0 and end at the array sizes");
  }
  for (int32_t t = 0; t < b.num_tokens(); ++t) {
    if (b.token_ids[t] < 0 || b.token_ids[t] >= vocab_size) {
      return bad("token id ", b.token_ids[t], " at row ", t, " is outside the vocabulary");
    }
  }
  for (int32_t s = 0; s < num_seqs; ++s) {
    const int32_t q0 = b.query_start[s], q1 = b.query_start[s + 1];
    const int32_t p0 = b.kv_indptr[s], p1 = b.kv_indptr[s + 1];
    if (q1 <= q0 || p1 <= p0) return bad("sequence ", s, " has no tokens or no blocks");
    const int32_t last = b.kv_last_page_len[s];
    if (last < 1 || last > block_size) return bad("sequence ", s, " last page length ", last);
    const int32_t kv_len = (p1 - p0 - 1) * block_size + last;
    for (int32_t t = q0; t < q1; ++t) {
      if (b.positions[t] != kv_len - (q1 - t)) {
        return bad("sequence ", s, " row ", t, " has position ", b.positions[t],
                   " but its rows must end at position ", kv_len - 1);
      }
    }
    for (int32_t i = p0; i < p1; ++i) {
      if (b.kv_indices[i] < 0 || b.kv_indices[i] >= num_blocks) {
        return bad("sequence ", s, " uses block ", b.kv_indices[i], " outside the pool");
      }
    }
  }
  for (int32_t row : b.logits_rows) {
    if (row < 0 || row >= b.num_tokens()) return bad("logits row ", row, " out of range");
  }
  return absl::OkStatus();
}

}  // namespace glimpse::model
