// What the serving engine and the offline generator run steps on: a model together with its
// paged KV cache, whether that is one LlamaModel on one backend (LlamaStepRunner, below) or a
// model split over the ranks of a tensor-parallel group (TensorParallelModel, one device per
// rank). The caller sees one cache of num_blocks blocks; a split runner keeps a same-shaped
// cache on every rank (each holding its KV heads only) and applies every block operation to
// all of them, so that block ids keep meaning the same thing everywhere.
//
//   engine ──StepBatch──▶ StepRunner::Forward ──▶ logits (host, rank 0's)
//          ──KvBlockMove─▶ StepRunner::MoveKvBlocks (copy-on-write, swap out, swap in)
#ifndef GLIMPSE_MODEL_STEP_RUNNER_H_
#define GLIMPSE_MODEL_STEP_RUNNER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "kernels/host_work.h"
#include "model/kv_cache_storage.h"
#include "model/llama_config.h"
#include "model/llama_model.h"
#include "model/step_batch.h"

namespace glimpse::model {

// A step's logits rows reduced to each row's k most likely tokens (StepRunner::ForwardTopK),
// what Sampler::SampleFromCandidates takes. Row r holds count[r] <= k entries: the ids in
// increasing order with their raw logits; with normalizers, also the row's softmax
// normalizer (Sampler::RowNormalizer), what logprobs need of the rest of the row.
struct TopTokens {
  int32_t k = 0;
  std::vector<int32_t> count;  // [rows]
  std::vector<int32_t> ids;    // [rows][k]; entries past count[r] unspecified
  std::vector<float> logits;   // [rows][k]
  std::vector<float> row_max;  // [rows] with normalizers, else empty
  std::vector<double> row_exp_sum;  // [rows] with normalizers, else empty
  // [rows]: the exp sums at temperature 1 besides, when asked for (sums_t1), else empty.
  std::vector<double> row_exp_sum_t1;
  // Sizes the arrays for `rows` rows of k entries, with or without normalizers (and their
  // sums at temperature 1, only with them).
  void Resize(size_t rows, int32_t new_k, bool normalizers, bool sums_t1 = false) {
    k = new_k;
    count.resize(rows);
    ids.resize(rows * static_cast<size_t>(k));
    logits.resize(rows * static_cast<size_t>(k));
    row_max.resize(normalizers ? rows : 0);
    row_exp_sum.resize(normalizers ? rows : 0);
    row_exp_sum_t1.resize(normalizers && sums_t1 ? rows : 0);
  }
  // The normalizer arrays, null without normalizers (as LlamaModel::ForwardTopK takes them).
  float* row_max_data() { return row_max.empty() ? nullptr : row_max.data(); }
  double* row_exp_sum_data() { return row_exp_sum.empty() ? nullptr : row_exp_sum.data(); }
  double* row_exp_sum_t1_data() { return row_exp_sum_t1.empty() ? nullptr : row_exp_sum_t1.data(); }
  std::span<const int32_t> Ids(size_t row) const {
    return std::span<const int32_t>(ids).subspan(row * static_cast<size_t>(k), count[row]);
  }
  std::span<const float> Logits(size_t row) const {
    return std::span<const float>(logits).subspan(row * static_cast<size_t>(k), count[row]);
  }
};

// Thread-safety: one driving thread at a time (the engine thread); implementations may use
// threads of their own inside a call.
class StepRunner {
 public:
  virtual ~StepRunner() = default;

  // The whole model's hyper-parameters.
  virtual const LlamaConfig& config() const = 0;
  // Devices (ranks) the model is split over; 1 when unsplit.
  virtual int tensor_parallel_size() const = 0;

  // (Re)allocates the KV cache: num_blocks device blocks of block_size slots (on every rank),
  // and room for num_host_blocks swapped-out blocks in host memory (taken on first swap-out).
  // Any previous cache is freed first.
  virtual void AllocateKvCache(int32_t num_blocks, int32_t block_size,
                               int32_t num_host_blocks) = 0;
  // Sizes the activation buffers (on every rank) for steps of up to max_step_tokens tokens and
  // max_logits_rows logits rows (LlamaModel::ReserveActivations): the serving engine does so for
  // its step budget once, so that no later step moves them (which would orphan CUDA graphs).
  virtual void ReserveActivations(int32_t max_step_tokens, int32_t max_logits_rows) = 0;
  // 0 until AllocateKvCache.
  virtual int32_t kv_num_blocks() const = 0;
  virtual int32_t kv_block_size() const = 0;

  // Runs the batch against the KV cache and fills logits[i][0..vocab) (host memory) for
  // batch.logits_rows[i]. InvalidArgument for a batch that does not fit the cache;
  // FailedPrecondition before AllocateKvCache.
  virtual absl::Status Forward(const StepBatch& batch, float* logits) = 0;
  // Forward for greedy decoding: tokens[i] (host) = the argmax of the logits of
  // batch.logits_rows[i] over the whole vocabulary (the host sampler's greedy rule: NaN never
  // chosen, ties to the lowest id, 0 when nothing is above -inf), without the logits leaving
  // the device: LlamaModel::ForwardArgMax per rank. Errors as Forward's.
  virtual absl::Status ForwardGreedy(const StepBatch& batch, int32_t* tokens) = 0;
  // Forward for top-k sampling: for batch.logits_rows[i], row i of `top` (resized to k) gets
  // the min(k, number above -inf) most likely tokens over the whole vocabulary by the
  // sampler's top-k order (logit descending, id ascending; NaN and -inf never chosen), without
  // the logits leaving the device: LlamaModel::ForwardTopK per rank; with
  // normalizer_temperatures (one per logits row; empty: none), also each row's softmax
  // normalizer over the whole vocabulary at its temperature (1 for logprobs, the sampling
  // temperature for a nucleus), and with sums_t1 (only with them) its exp sum at temperature
  // 1 besides (a nucleus row's logprobs at another temperature). k >= 1 (InvalidArgument
  // otherwise); other errors as Forward's.
  virtual absl::Status ForwardTopK(const StepBatch& batch, int32_t k,
                                   std::span<const float> normalizer_temperatures, bool sums_t1,
                                   TopTokens* top) = 0;
  // Host work for the next Forward, ForwardGreedy or ForwardTopK call to do while its device
  // work runs (kernels::HostWork; the engine emits the previous step's outputs there): that
  // call may run it, on the calling thread, where the host would otherwise only wait for the
  // device (a single model hands it to its backend: LlamaModel::OverlapNextForward); the
  // caller runs what it left once the call returns. Borrowed until then; null: none. A runner
  // that never runs it (the default) is correct, only without the overlap.
  void OverlapNextForward(kernels::HostWork* work) { overlap_work_ = work; }

  // After a ForwardGreedy or ForwardTopK step and before the next step: logits row `row` of
  // that step (an index into its batch.logits_rows), the whole vocabulary, into host `logits`
  // ([vocab] fp32). What a sample the reduction did not decide falls back to. OutOfRange past
  // the step's rows.
  virtual absl::Status CopyStepLogitsRow(size_t row, float* logits) = 0;
  // CopyStepLogitsRow for each of `rows`, into host `logits` ([rows.size()][vocab]), at once.
  // This default copies them one by one.
  virtual absl::Status CopyStepLogitsRows(std::span<const int32_t> rows, float* logits);
  // As CopyStepLogitsRow, but only the logits of tokens `ids[i]` (each in [0, vocab)) of
  // rows `rows[i]` of that step, into host `logits` ([ids.size()]), for every row at once: a
  // few tokens' raw logits that samples their candidates do not decide need (a biased
  // token's, say), without the rows. OutOfRange past the step's rows, InvalidArgument for an
  // id out of range or rows and ids of different sizes. This default copies each row whole.
  virtual absl::Status GatherStepLogits(std::span<const int32_t> rows, std::span<const int32_t> ids,
                                        float* logits);

  // Applies the moves in order (on every rank: KvCacheStorage::ApplyMoves). Block ids must be
  // in range of the cache and the host space. Swaps may still be under way on return, ordered
  // before the backend work enqueued after them.
  virtual void MoveKvBlocks(std::span<const KvBlockMove> moves) = 0;

  // The backend whose AllocateHost gives the host memory Forward's logits and
  // CopyStepLogitsRows' rows arrive in fastest (page-locked on a GPU): where the engine keeps
  // them (model::StepLogits). Null (this default): plain host memory will do.
  virtual kernels::Backend* host_memory_backend() { return nullptr; }

  // Bytes one KV block of block_size slots takes on each device: a rank's share of the KV
  // heads. What a per-device memory budget divides by.
  size_t KvBytesPerBlockPerDevice(int32_t block_size) const {
    return KvCacheStorage::BytesPerBlock(config(), block_size,
                                         TensorParallelRank{0, tensor_parallel_size()},
                                         kv_element_bytes());
  }
  // Bytes of one KV element on this runner's devices (Backend::KvElementBytes()).
  virtual size_t kv_element_bytes() const = 0;

 protected:
  // OverlapNextForward's work, for the forward call now running to take (null if none, or
  // taken): later calls see none.
  kernels::HostWork* TakeOverlapWork() { return std::exchange(overlap_work_, nullptr); }

 private:
  kernels::HostWork* overlap_work_ = nullptr;
};

// A StepRunner over one LlamaModel and one KvCacheStorage on the model's backend: the
// unsplit model, exactly as the engine drove it before tensor parallelism (Forward is
// LlamaModel::Forward, so outputs are bitwise unchanged).
//
// Ownership: borrows the model (must outlive this); owns the cache it allocates, or borrows
// one handed to the constructor (which must then outlive this, or until AllocateKvCache
// replaces it). Thread-safety: one thread at a time.
class LlamaStepRunner final : public StepRunner {
 public:
  // No cache until AllocateKvCache.
  explicit LlamaStepRunner(LlamaModel& model) : model_(model) {}
  // Runs against `kv`, which must have been built for `model` (its shard().tp).
  LlamaStepRunner(LlamaModel& model, KvCacheStorage& kv) : model_(model), kv_(&kv) {}
  LlamaStepRunner(const LlamaStepRunner&) = delete;
  LlamaStepRunner& operator=(const LlamaStepRunner&) = delete;

  const LlamaConfig& config() const override { return model_.config(); }
  int tensor_parallel_size() const override { return model_.shard().tp.size; }
  void AllocateKvCache(int32_t num_blocks, int32_t block_size, int32_t num_host_blocks) override;
  void ReserveActivations(int32_t max_step_tokens, int32_t max_logits_rows) override {
    model_.ReserveActivations(max_step_tokens, max_logits_rows);
  }
  int32_t kv_num_blocks() const override { return kv_ == nullptr ? 0 : kv_->num_blocks(); }
  int32_t kv_block_size() const override { return kv_ == nullptr ? 0 : kv_->block_size(); }
  size_t kv_element_bytes() const override { return model_.backend().KvElementBytes(); }
  absl::Status Forward(const StepBatch& batch, float* logits) override;
  absl::Status ForwardGreedy(const StepBatch& batch, int32_t* tokens) override;
  absl::Status ForwardTopK(const StepBatch& batch, int32_t k,
                           std::span<const float> normalizer_temperatures, bool sums_t1,
                           TopTokens* top) override;
  absl::Status CopyStepLogitsRow(size_t row, float* logits) override;
  absl::Status CopyStepLogitsRows(std::span<const int32_t> rows, float* logits) override;
  absl::Status GatherStepLogits(std::span<const int32_t> rows, std::span<const int32_t> ids,
                                float* logits) override;
  void MoveKvBlocks(std::span<const KvBlockMove> moves) override;
  kernels::Backend* host_memory_backend() override { return &model_.backend(); }

 private:
  // FailedPrecondition before AllocateKvCache, or for a tensor-parallel rank's model.
  absl::Status CheckRunnable() const;

  LlamaModel& model_;
  std::unique_ptr<KvCacheStorage> owned_kv_;
  KvCacheStorage* kv_ = nullptr;  // owned_kv_ or the borrowed cache
  std::vector<float> argmax_values_;  // ForwardGreedy's largest logits, reused across steps
};

}  // namespace glimpse::model

#endif  // GLIMPSE_MODEL_STEP_RUNNER_H_
