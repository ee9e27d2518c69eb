// The forward pass's input for one engine step: a flat ("ragged") batch in which prefill
// chunks and single decode tokens of many sequences run together. Plain data, built by the
// scheduler (or by hand in tests) and never mutated by the forward pass.
//
//   token rows:  [ seq 0: t t t t | seq 1: t | seq 2: t t | ... ]     (num_tokens rows)
//   query_start:   0               4         5             7  ...   (num_seqs + 1)
//
// Each sequence's rows are consecutive positions that end at its newest token; the KV for
// those positions is written into the blocks of its page table, which must already cover
// them. Page tables are CSR (FlashInfer's convention): sequence s owns blocks
// kv_indices[kv_indptr[s] .. kv_indptr[s+1]); its last block holds kv_last_page_len[s]
// valid slots after this step.
#ifndef GLIMPSE_MODEL_STEP_BATCH_H_
#define GLIMPSE_MODEL_STEP_BATCH_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"

namespace glimpse::model {

struct StepBatch {
  std::vector<int32_t> token_ids;         // [num_tokens]
  std::vector<int32_t> positions;         // [num_tokens]
  std::vector<int32_t> query_start;       // [num_seqs + 1]
  std::vector<int32_t> kv_indptr;         // [num_seqs + 1]
  std::vector<int32_t> kv_indices;        // [kv_indptr.back()]
  std::vector<int32_t> kv_last_page_len;  // [num_seqs]
  // Token rows whose logits the caller wants, in the order they are returned.
  std::vector<int32_t> logits_rows;

  int32_t num_tokens() const { return static_cast<int32_t>(token_ids.size()); }
  int32_t num_seqs() const { return static_cast<int32_t>(kv_last_page_len.size()); }

  // Appends one sequence: `tokens` at positions start_position.. onward, its whole page
  // table `blocks`, and (optionally) a logits request for its last row. Returns the row
  // index of its last token.
  int32_t AddSequence(std::span<const int32_t> tokens, int32_t start_position,
                      std::span<const int32_t> blocks, int32_t block_size, bool want_last_logits);
};

// Checks the batch's internal consistency against a KV pool of `num_blocks` blocks of
// `block_size` and a vocabulary of `vocab_size`; InvalidArgument describes the first problem.
absl::Status ValidateStepBatch(const StepBatch& batch, int32_t block_size, int32_t num_blocks,
                               int32_t vocab_size);

}  // namespace glimpse::model

#endif  // GLIMPSE_MODEL_STEP_BATCH_H_
