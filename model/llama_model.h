// The Llama-family transformer (RMSNorm, RoPE, grouped-query attention, SwiGLU MLP, tied or
// untied output) written against kernels::Backend. One Forward() runs a whole StepBatch —
// prefill chunks and decode tokens of many sequences — and returns logits only for the rows
// the batch asks for.
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

namespace glimpse::model {

// The weights of one transformer block, packed for the backend.
struct LlamaLayerWeights {
  float* attn_norm = nullptr;  // backend memory, fp32 [dim]
  float* ffn_norm = nullptr;   // backend memory, fp32 [dim]
  std::unique_ptr<kernels::PackedMatrix> wq, wk, wv, wo;  // [dim|kv_dim][dim], [dim][dim]
  std::unique_ptr<kernels::PackedMatrix> w_gate, w_up;    // [ffn][dim]
  std::unique_ptr<kernels::PackedMatrix> w_down;          // [dim][ffn]
};

struct LlamaWeights {
  kernels::MatrixView token_embd;  // [vocab][dim], in the file's mapping
  float* output_norm = nullptr;    // backend memory, fp32 [dim]
  std::unique_ptr<kernels::PackedMatrix> output;  // [vocab][dim] (token_embd when tied)
  std::vector<LlamaLayerWeights> layers;
};

class LlamaModel {
 public:
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const GgufFile& file,
                                                          kernels::Backend& backend);
  ~LlamaModel();
  LlamaModel(const LlamaModel&) = delete;
  LlamaModel& operator=(const LlamaModel&) = delete;

  const LlamaConfig& config() const { return config_; }
  kernels::Backend& backend() const { return backend_; }
  // Bytes of packed weights (what one decode step streams).
  size_t weight_bytes() const { return weight_bytes_; }

  // Runs the batch, writing its tokens' keys and values into `kv`, and fills
  // logits[i][0..vocab) (host memory) for batch.logits_rows[i]. The batch must be valid for
  // `kv` (ValidateStepBatch); InvalidArgument otherwise.
  absl::Status Forward(const StepBatch& batch, KvCacheStorage& kv, float* logits);

 private:
  LlamaModel(const LlamaConfig& config, kernels::Backend& backend)
      : config_(config), backend_(backend) {}
  float* Scratch(size_t index, size_t num_floats);

  LlamaConfig config_;
  kernels::Backend& backend_;
  LlamaWeights weights_;
  size_t weight_bytes_ = 0;
  // Activation buffers in backend memory, grown on demand and reused across steps.
  std::vector<float*> scratch_;
  std::vector<size_t> scratch_floats_;
};

}  // namespace glimpse::model

#endif  // GLIMPSE_MODEL_LLAMA_MODEL_H_
