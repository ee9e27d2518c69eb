#include "model/llama_model.h"

#include <cmath>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace glimpse::model {
namespace {

absl::StatusOr<kernels::WeightType> ToWeightType(const GgufTensor& t) {
  switch (t.type) {
    case GgmlType::kF32: return kernels::WeightType::kF32;
    case GgmlType::kF16: return kernels::WeightType::kF16;
    case GgmlType::kBF16: return kernels::WeightType::kBF16;
    case GgmlType::kQ8_0: return kernels::WeightType::kQ8_0;
  }
  return absl::InvalidArgumentError("unsupported tensor type");
}

// Looks up a 2-D tensor of shape {cols, rows} (ggml order) as a matrix view.
absl::StatusOr<kernels::MatrixView> MatrixTensor(const GgufFile& file, const std::string& name,
                                                 int64_t rows, int64_t cols) {
  const GgufTensor* t = file.FindTensor(name);
  if (t == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", file.path(), "' has no tensor '", name, "'"));
  }
  if (t->dims.size() != 2 || t->dims[0] != static_cast<uint64_t>(cols) ||
      t->dims[1] != static_cast<uint64_t>(rows)) {
    return absl::InvalidArgumentError(absl::StrCat("model '", file.path(), "': tensor '", name,
                                                   "' should have shape [", cols, ", ", rows,
                                                   "]"));
  }
  ASSIGN_OR_RETURN(kernels::WeightType type, ToWeightType(*t));
  return kernels::MatrixView{type, t->data, rows, cols};
}

// Scratch buffer slots.
enum Buffer : size_t {
  kX, kXn, kQ, kK, kV, kAttn, kProj, kGate, kUp, kLogitsIn, kLogitsOut, kNumBuffers
};

}  // namespace

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const GgufFile& file,
                                                              kernels::Backend& backend) {
  ASSIGN_OR_RETURN(LlamaConfig config, LlamaConfigFromGguf(file));
  std::unique_ptr<LlamaModel> model(new LlamaModel(config, backend));
  LlamaWeights& w = model->weights_;
  const LlamaConfig& c = model->config_;

  auto pack = [&](const std::string& name, int64_t rows,
                  int64_t cols) -> absl::StatusOr<std::unique_ptr<kernels::PackedMatrix>> {
    ASSIGN_OR_RETURN(kernels::MatrixView view, MatrixTensor(file, name, rows, cols));
    auto packed = backend.PackMatrix(view);
    if (!packed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("model '", file.path(), "': tensor '", name,
                                                     "': ", packed.status().message()));
    }
    model->weight_bytes_ += (*packed)->num_bytes();
    return std::move(*packed);
  };
  auto norm = [&](const std::string& name) -> absl::StatusOr<float*> {
    const GgufTensor* t = file.FindTensor(name);
    if (t == nullptr || t->type != GgmlType::kF32 || t->dims.size() != 1 ||
        t->dims[0] != static_cast<uint64_t>(c.dim)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model '", file.path(), "': tensor '", name, "' is missing or not F32 [", c.dim, "]"));
    }
    auto* dst = static_cast<float*>(backend.Allocate(c.dim * sizeof(float)));
    backend.CopyToBackend(dst, t->data, c.dim * sizeof(float));
    return dst;
  };

  ASSIGN_OR_RETURN(w.token_embd, MatrixTensor(file, "token_embd.weight", c.vocab_size, c.dim));
  ASSIGN_OR_RETURN(w.output_norm, norm("output_norm.weight"));
  if (c.tied_embeddings) {
    ASSIGN_OR_RETURN(w.output, pack("token_embd.weight", c.vocab_size, c.dim));
  } else {
    ASSIGN_OR_RETURN(w.output, pack("output.weight", c.vocab_size, c.dim));
  }
  w.layers.resize(c.num_layers);
  for (int32_t i = 0; i < c.num_layers; ++i) {
    LlamaLayerWeights& l = w.layers[i];
    const std::string b = absl::StrCat("blk.", i, ".");
    ASSIGN_OR_RETURN(l.attn_norm, norm(b + "attn_norm.weight"));
    ASSIGN_OR_RETURN(l.ffn_norm, norm(b + "ffn_norm.weight"));
    ASSIGN_OR_RETURN(l.wq, pack(b + "attn_q.weight", c.dim, c.dim));
    ASSIGN_OR_RETURN(l.wk, pack(b + "attn_k.weight", c.kv_dim(), c.dim));
    ASSIGN_OR_RETURN(l.wv, pack(b + "attn_v.weight", c.kv_dim(), c.dim));
    ASSIGN_OR_RETURN(l.wo, pack(b + "attn_output.weight", c.dim, c.dim));
    ASSIGN_OR_RETURN(l.w_gate, pack(b + "ffn_gate.weight", c.ffn_dim, c.dim));
    ASSIGN_OR_RETURN(l.w_up, pack(b + "ffn_up.weight", c.ffn_dim, c.dim));
    ASSIGN_OR_RETURN(l.w_down, pack(b + "ffn_down.weight", c.dim, c.ffn_dim));
  }
  return model;
}

LlamaModel::~LlamaModel() {
  if (weights_.output_norm != nullptr) backend_.Free(weights_.output_norm);
  for (LlamaLayerWeights& l : weights_.layers) {
    if (l.attn_norm != nullptr) backend_.Free(l.attn_norm);
    if (l.ffn_norm != nullptr) backend_.Free(l.ffn_norm);
  }
  for (float* p : scratch_) {
    if (p != nullptr) backend_.Free(p);
  }
}

float* LlamaModel::Scratch(size_t index, size_t num_floats) {
  if (scratch_.size() <= index) {
    scratch_.resize(index + 1, nullptr);
    scratch_floats_.resize(index + 1, 0);
  }
  if (scratch_floats_[index] < num_floats) {
    if (scratch_[index] != nullptr) backend_.Free(scratch_[index]);
    // Grow geometrically so a slowly rising batch size does not reallocate every step.
    const size_t size = std::max(num_floats, scratch_floats_[index] * 3 / 2);
    scratch_[index] = static_cast<float*>(backend_.Allocate(size * sizeof(float)));
    scratch_floats_[index] = size;
  }
  return scratch_[index];
}

absl::Status LlamaModel::Forward(const StepBatch& batch, KvCacheStorage& kv, float* logits) {
  const LlamaConfig& c = config_;
  RETURN_IF_ERROR(ValidateStepBatch(batch, kv.block_size(), kv.num_blocks(), c.vocab_size));
  for (int32_t pos : batch.positions) {
    if (pos >= c.context_length) {
      return absl::InvalidArgumentError(absl::StrCat("position ", pos,
                                                     " exceeds the model's context of ",
                                                     c.context_length, " tokens"));
    }
  }
  kernels::Backend& be = backend_;
  const int64_t T = batch.num_tokens();
  float* x = Scratch(kX, T * c.dim);
  float* xn = Scratch(kXn, T * c.dim);
  float* q = Scratch(kQ, T * c.dim);
  float* k = Scratch(kK, T * c.kv_dim());
  float* v = Scratch(kV, T * c.kv_dim());
  float* attn = Scratch(kAttn, T * c.dim);
  float* proj = Scratch(kProj, T * c.dim);
  float* gate = Scratch(kGate, T * c.ffn_dim);
  float* up = Scratch(kUp, T * c.ffn_dim);

  // Host-side per-step index data: the KV slot of every new token.
  std::vector<int32_t> slots(T);
  for (int32_t s = 0; s < batch.num_seqs(); ++s) {
    const int32_t* blocks = batch.kv_indices.data() + batch.kv_indptr[s];
    for (int32_t t = batch.query_start[s]; t < batch.query_start[s + 1]; ++t) {
      const int32_t pos = batch.positions[t];
      slots[t] = blocks[pos / kv.block_size()] * kv.block_size() + pos % kv.block_size();
    }
  }

  be.EmbeddingLookup(weights_.token_embd, batch.token_ids.data(), T, x);
  kernels::RopeParams rope;
  rope.num_tokens = static_cast<int32_t>(T);
  rope.head_dim = c.head_dim;
  rope.rot_dim = c.rope_dim;
  rope.positions = batch.positions.data();
  rope.freq_base = c.rope_freq_base;
  rope.style = c.rope_style;

  for (int32_t i = 0; i < c.num_layers; ++i) {
    const LlamaLayerWeights& l = weights_.layers[i];
    be.RmsNorm(x, l.attn_norm, T, c.dim, c.rms_norm_eps, xn);
    be.MatMul(xn, T, *l.wq, q);
    be.MatMul(xn, T, *l.wk, k);
    be.MatMul(xn, T, *l.wv, v);
    rope.x = q;
    rope.num_heads = c.num_heads;
    be.Rope(rope);
    rope.x = k;
    rope.num_heads = c.num_kv_heads;
    be.Rope(rope);

    kernels::KvStoreParams store;
    store.k = k;
    store.v = v;
    store.kv = kv.layer(i);
    store.num_tokens = static_cast<int32_t>(T);
    store.slots = slots.data();
    be.StoreKv(store);

    kernels::PagedAttentionParams ap;
    ap.q = q;
    ap.out = attn;
    ap.kv = kv.layer(i);
    ap.num_seqs = batch.num_seqs();
    ap.num_heads = c.num_heads;
    ap.query_start = batch.query_start.data();
    ap.positions = batch.positions.data();
    ap.kv_indptr = batch.kv_indptr.data();
    ap.kv_indices = batch.kv_indices.data();
    ap.kv_last_page_len = batch.kv_last_page_len.data();
    ap.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    be.PagedAttention(ap);

    be.MatMul(attn, T, *l.wo, proj);
    be.AddInPlace(x, proj, T * c.dim);
    be.RmsNorm(x, l.ffn_norm, T, c.dim, c.rms_norm_eps, xn);
    be.MatMul(xn, T, *l.w_gate, gate);
    be.MatMul(xn, T, *l.w_up, up);
    be.SiluMul(gate, up, T * c.ffn_dim, gate);
    be.MatMul(gate, T, *l.w_down, proj);
    be.AddInPlace(x, proj, T * c.dim);
  }

  const int64_t R = static_cast<int64_t>(batch.logits_rows.size());
  if (R == 0) return absl::OkStatus();
  float* rows_in = Scratch(kLogitsIn, R * c.dim);
  float* rows_out = Scratch(kLogitsOut, R * c.vocab_size);
  be.GatherRows(x, c.dim, batch.logits_rows.data(), R, xn);
  be.RmsNorm(xn, weights_.output_norm, R, c.dim, c.rms_norm_eps, rows_in);
  be.MatMul(rows_in, R, *weights_.output, rows_out);
  be.CopyToHost(logits, rows_out, R * c.vocab_size * sizeof(float));
  return absl::OkStatus();
}

}  // namespace glimpse::model
