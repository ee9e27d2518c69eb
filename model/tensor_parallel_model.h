// A Llama model split over the ranks of one tensor-parallel group (model/tensor_parallel.h):
// one LlamaModel and one KvCacheStorage per rank, each rank on its own backend (one GPU each,
// or in-process CPU ranks in tests), and one host thread per rank so that each backend's
// AllReduceSum (a collective: NCCL, or the CPU group's barrier) meets its peers.
//
// Forward runs the same StepBatch on every rank at once; each rank computes the logits of its
// slice of the vocabulary (the output head is split by rows) and Forward places the slices
// side by side into the caller's [rows][vocab]. Block ids mean the same on every
// rank; MoveKvBlocks applies block copies and swaps to every rank's cache at once. As a
// StepRunner it is what the engine runs on with --tensor_parallel_size > 1.
//
// Ownership: owns the backends, the rank models, their KV caches and the rank threads; borrows
// the GgufFile (must outlive this). Thread-safety: one driving thread at a time, like
// LlamaModel; rank 0 runs on the calling thread, ranks 1..N-1 on threads owned here.
#ifndef GLIMPSE_MODEL_TENSOR_PARALLEL_MODEL_H_
#define GLIMPSE_MODEL_TENSOR_PARALLEL_MODEL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/host_buffer.h"
#include "model/gguf.h"
#include "model/kv_cache_storage.h"
#include "model/llama_config.h"
#include "model/llama_model.h"
#include "model/step_batch.h"
#include "model/step_runner.h"

namespace glimpse::model {

class TensorParallelModel final : public StepRunner {
 public:
  // backends[r] must be rank r of one tensor-parallel group of exactly backends.size() ranks
  // (its AllReduceSum sums over these backends and no others). Loads every rank's shard
  // concurrently. InvalidArgument when the model does not split over that many ranks.
  static absl::StatusOr<std::unique_ptr<TensorParallelModel>> Load(
      const GgufFile& file, std::vector<std::unique_ptr<kernels::Backend>> backends);
  ~TensorParallelModel();
  TensorParallelModel(const TensorParallelModel&) = delete;
  TensorParallelModel& operator=(const TensorParallelModel&) = delete;

  int size() const { return static_cast<int>(ranks_.size()); }
  const LlamaConfig& config() const override { return ranks_[0].model->config(); }
  int tensor_parallel_size() const override { return size(); }
  LlamaModel& rank_model(int rank) { return *ranks_[rank].model; }
  // Null until AllocateKvCache.
  KvCacheStorage* kv_cache(int rank) { return ranks_[rank].kv.get(); }
  // Bytes of packed weights over all ranks.
  size_t weight_bytes() const;

  // (Re)allocates every rank's KV cache: num_blocks blocks of block_size slots, each rank
  // holding its own KV heads (KvCacheStorage::BytesPerBlock(config, block_size, tp) bytes per
  // block on each device), and host swap space for num_host_blocks blocks per rank.
  void AllocateKvCache(int32_t num_blocks, int32_t block_size, int32_t num_host_blocks) override;
  void ReserveActivations(int32_t max_step_tokens, int32_t max_logits_rows) override;
  void AllocateKvCache(int32_t num_blocks, int32_t block_size) {
    AllocateKvCache(num_blocks, block_size, /*num_host_blocks=*/0);
  }
  int32_t kv_num_blocks() const override {
    return ranks_[0].kv == nullptr ? 0 : ranks_[0].kv->num_blocks();
  }
  int32_t kv_block_size() const override {
    return ranks_[0].kv == nullptr ? 0 : ranks_[0].kv->block_size();
  }

  size_t kv_element_bytes() const override { return ranks_[0].backend->KvElementBytes(); }

  // LlamaModel::Forward on every rank, concurrently, against the rank's KV cache; `logits`
  // (host) receives rank 0's. FailedPrecondition before AllocateKvCache.
  absl::Status Forward(const StepBatch& batch, float* logits) override;
  // LlamaModel::ForwardArgMax on every rank (its vocabulary slice's argmax and value per
  // row), then per row the rank with the largest value, the lowest rank on ties (slices are in
  // id order, so ties still go to the lowest id).
  absl::Status ForwardGreedy(const StepBatch& batch, int32_t* tokens) override;
  // LlamaModel::ForwardTopK on every rank (its vocabulary slice's k most likely per row), then
  // per row the k most likely of the ranks' candidates (the whole vocabulary's top k is among
  // them), back in id order; the normalizers merged (MergeRowNormalizers).
  absl::Status ForwardTopK(const StepBatch& batch, int32_t k,
                           std::span<const float> normalizer_temperatures, bool sums_t1,
                           TopTokens* top) override;
  // Every rank's slice of the row (LlamaModel::CopyStepLogitsRow), side by side.
  absl::Status CopyStepLogitsRow(size_t row, float* logits) override;
  // Each id from the rank whose vocabulary slice holds it (LlamaModel::GatherStepLogits), the
  // ranks concurrently.
  absl::Status GatherStepLogits(std::span<const int32_t> rows, std::span<const int32_t> ids,
                                float* logits) override;

  // The moves on every rank's cache, the ranks concurrently (each on its own device).
  void MoveKvBlocks(std::span<const KvBlockMove> moves) override;
  // Rank 0's: every rank's copies reach its memory (page-locked memory is the process's),
  // CopyStepLogitsRow(s) fill it from each rank, and one rank's Forward too.
  kernels::Backend* host_memory_backend() override { return ranks_[0].backend.get(); }

 private:
  class RankThreads;
  struct Rank {
    std::unique_ptr<kernels::Backend> backend;
    std::unique_ptr<LlamaModel> model;
    std::unique_ptr<KvCacheStorage> kv;
    // Host, [rows][vocab slice]: this rank's logits of a step, in its backend's host memory.
    kernels::HostBuffer<float> logits;
    std::vector<int32_t> argmax_index;  // host, [rows]: ForwardGreedy's, within the slice
    std::vector<float> argmax_value;    // host, [rows]
    TopTokens top;                      // ForwardTopK's, ids within the slice
  };
  // Runs `forward` on every rank concurrently; the first rank's error, naming the rank when
  // split. Every rank sees the same batch and same-shaped caches, so all validate alike.
  absl::Status OnEveryRank(const std::function<absl::Status(Rank&)>& forward);
  // Row `row` of top's normalizer over the whole vocabulary from the ranks' over their slices:
  // the largest maximum; with it +inf, the ranks' counts of +inf added; else each rank's sum
  // rescaled to it by exp((max_r - max) / temperature) in double and added in rank order
  // (split, the terms were rounded around the rank's maximum rather than the row's: last-bit
  // differences); the sums at temperature 1 alike, when top has them.
  void MergeRowNormalizers(size_t row, float temperature, TopTokens* top) const;

  TensorParallelModel() = default;

  // Members of a Rank are destroyed cache, model, backend (both free through the backend).
  std::vector<Rank> ranks_;
  // Declared last so that it is destroyed first: the rank threads stop before any rank's
  // model or backend goes away.
  std::unique_ptr<RankThreads> threads_;
};

}  // namespace glimpse::model

#endif  // GLIMPSE_MODEL_TENSOR_PARALLEL_MODEL_H_
