// The Llama-family transformer (RMSNorm, RoPE, grouped-query attention, SwiGLU MLP, tied or
// untied output) written against kernels::Backend. One Forward() runs a whole StepBatch —
// prefill chunks and decode tokens of many sequences — and returns logits only for the rows
// the batch asks for.
//
// Tensor parallelism (model/tensor_parallel.h draws the split): a model loaded as rank r of N
// holds only its shard of the attention heads and FFN features, and Forward all-reduces the
// attention output and MLP down projections over the backend's tensor-parallel group. Every
// rank must run Forward on the same batch at the same time, each on its own thread with its
// own KvCacheStorage (TensorParallelModel drives that). Rank 0 of 1 is the unsplit model.
//
// Ownership: borrows the GgufFile (its mapping backs the embedding table; must outlive the
// model) and the Backend (must outlive the model); owns the packed weights and a growing
// activation workspace. Thread-safety: Forward is called by one thread at a time.
#ifndef GLIMPSE_MODEL_LLAMA_MODEL_H_
#define GLIMPSE_MODEL_LLAMA_MODEL_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "model/gguf.h"
#include "model/kv_cache_storage.h"
#include "model/llama_config.h"
#include "model/step_batch.h"
#include "model/tensor_parallel.h"

namespace glimpse::model {

// The weights of one transformer block, packed for the backend: the rank's shard of them.
// Unsplit, q = dim, kv = kv_dim and f = ffn_dim; on a rank, q = its query heads * head_dim,
// kv = its KV heads * head_dim, f = its FFN features (LlamaShard).
struct LlamaLayerWeights {
  float* attn_norm = nullptr;  // backend memory, fp32 [dim]
  float* ffn_norm = nullptr;   // backend memory, fp32 [dim]
  std::unique_ptr<kernels::PackedMatrix> wq, wk, wv;    // [q][dim], [kv][dim], [kv][dim]
  std::unique_ptr<kernels::PackedMatrix> wo;            // [dim][q]
  std::unique_ptr<kernels::PackedMatrix> w_gate, w_up;  // [f][dim]
  std::unique_ptr<kernels::PackedMatrix> w_down;        // [dim][f]
};

struct LlamaWeights {
  kernels::MatrixView token_embd;  // [vocab][dim], in the file's mapping
  float* output_norm = nullptr;    // backend memory, fp32 [dim]
  std::unique_ptr<kernels::PackedMatrix> output;  // [vocab][dim] (token_embd when tied)
  std::vector<LlamaLayerWeights> layers;
};

class LlamaModel {
 public:
  // Loads rank `tp.rank` of a model split over `tp.size` ranks (default: the whole model);
  // `backend` must be that rank of a tensor-parallel group of tp.size. InvalidArgument when the
  // model does not split that way (LlamaShardOf; a Q8_0 column split inside a 32-column block).
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const GgufFile& file,
                                                          kernels::Backend& backend,
                                                          TensorParallelRank tp = {});
  ~LlamaModel();
  LlamaModel(const LlamaModel&) = delete;
  LlamaModel& operator=(const LlamaModel&) = delete;

  // The whole model's hyper-parameters (not the rank's share).
  const LlamaConfig& config() const { return config_; }
  // What this rank holds; its tp is what KvCacheStorage needs for this model.
  const LlamaShard& shard() const { return shard_; }
  kernels::Backend& backend() const { return backend_; }
  // Bytes of packed weights on this rank (what one decode step streams).
  size_t weight_bytes() const { return weight_bytes_; }

  // Runs the batch, writing its tokens' keys and values into `kv`, and fills
  // logits[i][0..V) (host memory) for batch.logits_rows[i], V = shard().vocab.size(): the
  // logits of vocabulary entries shard().vocab.begin.. (the whole vocabulary unsplit; a split
  // rank computes its slice, see model/tensor_parallel.h). The batch must be valid for `kv`
  // (ValidateStepBatch) and `kv` must hold this rank's KV heads (built with shard().tp);
  // InvalidArgument otherwise.
  absl::Status Forward(const StepBatch& batch, KvCacheStorage& kv, float* logits);
  // Forward for greedy decoding: instead of the logits, each logits row's largest value and
  // its column within this rank's vocabulary slice (Backend::ArgMaxRows: NaN never chosen,
  // ties to the lowest column), into host index[i] and value[i] for batch.logits_rows[i].
  absl::Status ForwardArgMax(const StepBatch& batch, KvCacheStorage& kv, int32_t* index,
                             float* value);
  // Forward for top-k sampling: instead of the logits, each logits row's k most likely columns
  // within this rank's vocabulary slice (Backend::TopKRows: value descending, column
  // ascending, NaN and -inf never chosen) as count[i] and, for j < count[i], index[i * k + j]
  // (increasing) and value[i * k + j], host arrays, for batch.logits_rows[i]. k >= 1. With
  // row_max and row_exp_sum (both or neither), also each row's softmax normalizer over this
  // rank's slice at temperature[i] (null: 1) (Backend::TopKRows), what logprobs or a nucleus
  // need of the rest of the row, and with row_exp_sum_t1 (only with them) the exp sums at
  // temperature 1 besides.
  absl::Status ForwardTopK(const StepBatch& batch, KvCacheStorage& kv, int32_t k, int32_t* count,
                           int32_t* index, float* value, float* row_max, double* row_exp_sum,
                           const float* temperature, double* row_exp_sum_t1);

  // Host work for the next Forward, ForwardArgMax or ForwardTopK to hand its backend
  // (Backend::OverlapHostWork): run while the step's device work computes. That call takes it
  // (a later one sees none); one that fails before its step begins leaves it unrun, for the
  // caller to run. Borrowed until that call returns; null: none.
  void OverlapNextForward(kernels::HostWork* work) { overlap_work_ = work; }

  // Logits row `row` (this rank's vocabulary slice, fp32) of the last step, into host `logits`:
  // the rows a ForwardArgMax or ForwardTopK step left on the device, until the next step —
  // what a sample its reduction did not decide falls back to. OutOfRange past the step's rows
  // (or after a failed step).
  absl::Status CopyStepLogitsRow(int64_t row, float* logits);
  // Those rows, into host `logits` ([rows.size()][vocab slice]): gathered side by side where
  // they are (one Backend::GatherRows) and copied back in one copy. Errors as
  // CopyStepLogitsRow's.
  absl::Status CopyStepLogitsRows(std::span<const int32_t> rows, float* logits);
  // The logits of tokens `ids[i]` (each in this rank's vocabulary slice, as offsets into it)
  // of rows `rows[i]`, into host `logits` ([ids.size()]): gathered where they are in one
  // Backend::GatherRows, so only ids.size() floats come back. Errors as CopyStepLogitsRow's,
  // InvalidArgument for an id out of range or rows and ids of different sizes.
  absl::Status GatherStepLogits(std::span<const int32_t> rows, std::span<const int32_t> ids,
                                float* logits);

  // Sizes the activation buffers for steps of up to max_tokens tokens and max_logits_rows
  // logits rows now, instead of growing them on the steps that first need more. A buffer that
  // grows moves, and every CUDA graph captured before with its address never replays again;
  // a server that reserves its step budget up front keeps its graphs. Reserves as many rows
  // as the backend may pad such steps to (Backend::MaxPaddedRows).
  void ReserveActivations(int64_t max_tokens, int64_t max_logits_rows);
  // How many times an activation buffer grew, and so moved, after it was first allocated (by
  // a step or a later ReserveActivations): 0 for a model whose steps stay within its
  // reservation.
  int64_t activation_moves() const { return activation_moves_; }

 private:
  LlamaModel(const LlamaConfig& config, const LlamaShard& shard, kernels::Backend& backend)
      : config_(config), shard_(shard), backend_(backend) {}
  // Activation buffer `index` (kX, kQ, ... in llama_model.cc) for at least `rows` rows of its
  // width on this rank, grown (and so moved) when too small.
  float* Scratch(size_t index, int64_t rows);
  // Where a step's logits go: the rows (logits, host [R][V]), their argmax only, or their
  // top_k most likely entries only (top_k > 0).
  struct LogitsOutput {
    float* logits = nullptr;
    int32_t* argmax_index = nullptr;
    float* argmax_value = nullptr;
    int32_t top_k = 0;
    int32_t* top_count = nullptr;
    int32_t* top_index = nullptr;
    float* top_value = nullptr;
    float* top_row_max = nullptr;
    double* top_row_exp_sum = nullptr;
    const float* top_temperature = nullptr;
    double* top_row_exp_sum_t1 = nullptr;
  };
  // The step, handing `host_work` (may be null) to the backend for it (OverlapNextForward).
  absl::Status Run(const StepBatch& batch, KvCacheStorage& kv, LogitsOutput out,
                   kernels::HostWork* host_work);
  int64_t ScratchWidth(size_t index) const;

  LlamaConfig config_;
  LlamaShard shard_;
  kernels::Backend& backend_;
  LlamaWeights weights_;
  size_t weight_bytes_ = 0;
  // Activation buffers in backend memory, grown on demand and reused across steps.
  std::vector<float*> scratch_;
  std::vector<size_t> scratch_floats_;
  int64_t activation_moves_ = 0;  // activation_moves()
  int64_t step_logits_rows_ = 0;  // logits rows of the last step (CopyStepLogitsRow)
  kernels::HostWork* overlap_work_ = nullptr;  // OverlapNextForward's, until a step takes it
};

}  // namespace glimpse::model

#endif  // GLIMPSE_MODEL_LLAMA_MODEL_H_
