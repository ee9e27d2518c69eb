#include "model/llama_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/check.h"
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

// Bytes of `cols` consecutive elements of a row (cols a multiple of 32 for Q8_0).
int64_t RowBytes(kernels::WeightType type, int64_t cols) {
  switch (type) {
    case kernels::WeightType::kF32: return cols * 4;
    case kernels::WeightType::kF16: return cols * 2;
    case kernels::WeightType::kBF16: return cols * 2;
    case kernels::WeightType::kQ8_0: return cols / 32 * 34;  // fp16 scale + 32 int8 per block
  }
  return 0;
}

// The block rows [rows.begin, rows.end) x columns [cols.begin, cols.end) of `w`, as a view a
// backend can pack. A full-width row range is a contiguous part of the file and is returned in
// place; a column range is gathered row by row into `host_copy` (which must outlive the
// view), since MatrixView has no row stride. Q8_0 columns must start and end on 32-column block
// boundaries (a block shares one scale); InvalidArgument otherwise, naming `what`.
absl::StatusOr<kernels::MatrixView> SliceMatrix(const kernels::MatrixView& w,
                                                kernels::ShardRange rows,
                                                kernels::ShardRange cols,
                                                const std::string& what,
                                                std::vector<uint8_t>& host_copy) {
  if (w.type == kernels::WeightType::kQ8_0 && (cols.begin % 32 != 0 || cols.end % 32 != 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " is Q8_0 (blocks of 32 columns) and this tensor-parallel rank would own columns ",
        cols.begin, "..", cols.end, ", which splits a block; use a tensor-parallel size that "
        "divides its ", w.cols, " columns into multiples of 32"));
  }
  const int64_t row_bytes = RowBytes(w.type, w.cols);
  const auto* base = static_cast<const uint8_t*>(w.data) + rows.begin * row_bytes;
  kernels::MatrixView slice{w.type, base, rows.size(), cols.size()};
  if (cols.begin == 0 && cols.end == w.cols) return slice;
  const int64_t offset = RowBytes(w.type, cols.begin);
  const int64_t slice_bytes = RowBytes(w.type, cols.size());
  host_copy.resize(static_cast<size_t>(rows.size() * slice_bytes));
  for (int64_t r = 0; r < rows.size(); ++r) {
    std::memcpy(host_copy.data() + r * slice_bytes, base + r * row_bytes + offset, slice_bytes);
  }
  slice.data = host_copy.data();
  return slice;
}

// Scratch buffer slots.
// kQkv holds q, k and v of a step one after the other ([rows][q], then [rows][kv] twice), and
// kGateUp gate then up: outputs of one MatMuls, adjacent so that a backend can join the
// products (Backend::MatMuls; the CUDA backend's one-row steps run one GEMM for each).
// kGathered holds logits gathered from kLogitsOut after a step (GatherStepLogits), one float
// each; kFetched whole rows of it side by side (CopyStepLogitsRows).
enum Buffer : size_t {
  kX,
  kXn,
  kQkv,
  kAttn,
  kProj,
  kGateUp,
  kLogitsIn,
  kLogitsOut,
  kGathered,
  kFetched,
  kNumBuffers
};

// What the backend learns about a step before its ops (CUDA graphs, issue #5).
kernels::ForwardShape StepShape(const StepBatch& batch) {
  kernels::ForwardShape shape;
  shape.num_tokens = batch.num_tokens();
  shape.num_seqs = batch.num_seqs();
  shape.num_logits_rows = static_cast<int64_t>(batch.logits_rows.size());
  shape.decode_only = batch.num_tokens() == batch.num_seqs();  // every sequence has >= 1 token
  for (int32_t pos : batch.positions) shape.max_kv_len = std::max(shape.max_kv_len, pos + 1);
  return shape;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const GgufFile& file,
                                                              kernels::Backend& backend,
                                                              TensorParallelRank tp) {
  ASSIGN_OR_RETURN(LlamaConfig config, LlamaConfigFromGguf(file));
  ASSIGN_OR_RETURN(LlamaShard shard, LlamaShardOf(config, tp));
  if (absl::Status shape =
          backend.CheckAttentionShape(config.head_dim, static_cast<int32_t>(shard.q_heads.size()),
                                      static_cast<int32_t>(shard.kv_heads.size()));
      !shape.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", file.path(), "' on ", backend.name(), ": ", shape.message()));
  }
  std::unique_ptr<LlamaModel> model(new LlamaModel(config, shard, backend));
  LlamaWeights& w = model->weights_;
  const LlamaConfig& c = model->config_;

  // The rows x cols shard of the [full_rows][full_cols] tensor `name` (SliceMatrix).
  struct Shard {
    std::string name;
    int64_t full_rows = 0;
    int64_t full_cols = 0;
    kernels::ShardRange rows;
    kernels::ShardRange cols;
  };
  // Packs shards multiplied together (q/k/v, gate/up; or one alone) with one PackMatrices,
  // which may place them for joined products (Backend::MatMuls).
  auto pack_shards = [&](std::initializer_list<Shard> shards)
      -> absl::StatusOr<std::vector<std::unique_ptr<kernels::PackedMatrix>>> {
    std::vector<std::vector<uint8_t>> host_copies(shards.size());  // column shards, until packed
    std::vector<kernels::MatrixView> views;
    for (const Shard& shard : shards) {
      ASSIGN_OR_RETURN(kernels::MatrixView full,
                       MatrixTensor(file, shard.name, shard.full_rows, shard.full_cols));
      ASSIGN_OR_RETURN(
          kernels::MatrixView view,
          SliceMatrix(full, shard.rows, shard.cols,
                      absl::StrCat("model '", file.path(), "': tensor '", shard.name, "'"),
                      host_copies[views.size()]));
      views.push_back(view);
    }
    auto packed = backend.PackMatrices(views);
    if (!packed.ok()) {
      std::vector<std::string> names;
      for (const Shard& shard : shards) names.push_back(absl::StrCat("'", shard.name, "'"));
      return absl::InvalidArgumentError(
          absl::StrCat("model '", file.path(), "': tensor", names.size() > 1 ? "s " : " ",
                       absl::StrJoin(names, ", "), ": ", packed.status().message()));
    }
    for (const auto& m : *packed) model->weight_bytes_ += m->num_bytes();
    return std::move(*packed);
  };
  auto pack_shard =
      [&](const std::string& name, int64_t full_rows, int64_t full_cols, kernels::ShardRange rows,
          kernels::ShardRange cols) -> absl::StatusOr<std::unique_ptr<kernels::PackedMatrix>> {
    ASSIGN_OR_RETURN(auto packed, pack_shards({{name, full_rows, full_cols, rows, cols}}));
    return std::move(packed[0]);
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
  // The output head's rows for this rank's vocabulary range (all of them unsplit).
  ASSIGN_OR_RETURN(w.output,
                   pack_shard(c.tied_embeddings ? "token_embd.weight" : "output.weight",
                              c.vocab_size, c.dim, shard.vocab, {0, c.dim}));
  // The rank's shard (model/tensor_parallel.h): rows of q/k/v and gate/up, columns of the
  // output and down projections. Unsplit, every range is the whole tensor.
  const kernels::ShardRange q{shard.q_heads.begin * c.head_dim, shard.q_heads.end * c.head_dim};
  const kernels::ShardRange kv{shard.kv_heads.begin * c.head_dim,
                               shard.kv_heads.end * c.head_dim};
  const kernels::ShardRange& ffn = shard.ffn;
  const kernels::ShardRange dim{0, c.dim};
  w.layers.resize(c.num_layers);
  for (int32_t i = 0; i < c.num_layers; ++i) {
    LlamaLayerWeights& l = w.layers[i];
    const std::string b = absl::StrCat("blk.", i, ".");
    ASSIGN_OR_RETURN(l.attn_norm, norm(b + "attn_norm.weight"));
    ASSIGN_OR_RETURN(l.ffn_norm, norm(b + "ffn_norm.weight"));
    ASSIGN_OR_RETURN(auto qkv, pack_shards({{b + "attn_q.weight", c.dim, c.dim, q, dim},
                                            {b + "attn_k.weight", c.kv_dim(), c.dim, kv, dim},
                                            {b + "attn_v.weight", c.kv_dim(), c.dim, kv, dim}}));
    l.wq = std::move(qkv[0]);
    l.wk = std::move(qkv[1]);
    l.wv = std::move(qkv[2]);
    ASSIGN_OR_RETURN(l.wo, pack_shard(b + "attn_output.weight", c.dim, c.dim, dim, q));
    ASSIGN_OR_RETURN(auto gate_up,
                     pack_shards({{b + "ffn_gate.weight", c.ffn_dim, c.dim, ffn, dim},
                                  {b + "ffn_up.weight", c.ffn_dim, c.dim, ffn, dim}}));
    l.w_gate = std::move(gate_up[0]);
    l.w_up = std::move(gate_up[1]);
    ASSIGN_OR_RETURN(l.w_down, pack_shard(b + "ffn_down.weight", c.dim, c.ffn_dim, dim, ffn));
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

void LlamaModel::ReserveActivations(int64_t max_tokens, int64_t max_logits_rows) {
  // As many rows as the backend may pad such steps to (a CUDA decode step to its bucket).
  const int64_t token_rows = backend_.MaxPaddedRows(std::max<int64_t>(max_tokens, 1));
  const int64_t logits_rows = backend_.MaxPaddedRows(std::max<int64_t>(max_logits_rows, 1));
  for (size_t b = kX; b < kLogitsIn; ++b) Scratch(b, token_rows);
  for (size_t b : {kLogitsIn, kLogitsOut}) Scratch(b, logits_rows);
}

int64_t LlamaModel::ScratchWidth(size_t index) const {
  switch (index) {
    case kQkv:
      return static_cast<int64_t>(shard_.num_heads() + 2 * shard_.num_kv_heads()) *
             config_.head_dim;
    case kAttn:
      return static_cast<int64_t>(shard_.num_heads()) * config_.head_dim;
    case kGateUp:
      return 2 * shard_.ffn_dim();
    case kLogitsOut:
    case kFetched:
      return shard_.vocab.size();
    case kGathered:
      return 1;
    default:  // kX, kXn, kProj, kLogitsIn
      return config_.dim;
  }
}

float* LlamaModel::Scratch(size_t index, int64_t rows) {
  const size_t num_floats = static_cast<size_t>(rows * ScratchWidth(index));
  if (scratch_.size() <= index) {
    scratch_.resize(index + 1, nullptr);
    scratch_floats_.resize(index + 1, 0);
  }
  if (scratch_floats_[index] < num_floats) {
    if (scratch_[index] != nullptr) {
      backend_.Free(scratch_[index]);
      // No step's graph holds kGathered or kFetched.
      if (index != kGathered && index != kFetched) ++activation_moves_;
    }
    // Grow geometrically so a slowly rising batch size does not reallocate every step.
    const size_t size = std::max(num_floats, scratch_floats_[index] * 3 / 2);
    scratch_[index] = static_cast<float*>(backend_.Allocate(size * sizeof(float)));
    scratch_floats_[index] = size;
  }
  return scratch_[index];
}

absl::Status LlamaModel::Forward(const StepBatch& batch, KvCacheStorage& kv, float* logits) {
  return Run(batch, kv, LogitsOutput{.logits = logits}, std::exchange(overlap_work_, nullptr));
}

absl::Status LlamaModel::ForwardTopK(const StepBatch& batch, KvCacheStorage& kv, int32_t k,
                                     int32_t* count, int32_t* index, float* value, float* row_max,
                                     double* row_exp_sum, const float* temperature,
                                     double* row_exp_sum_t1) {
  kernels::HostWork* const host_work = std::exchange(overlap_work_, nullptr);
  if (k < 1) return absl::InvalidArgumentError(absl::StrCat("top-k of ", k, " tokens"));
  CHECK((row_max == nullptr) == (row_exp_sum == nullptr));
  CHECK(temperature == nullptr || row_max != nullptr);
  CHECK(row_exp_sum_t1 == nullptr || row_max != nullptr);
  return Run(batch, kv,
             LogitsOutput{.top_k = k,
                          .top_count = count,
                          .top_index = index,
                          .top_value = value,
                          .top_row_max = row_max,
                          .top_row_exp_sum = row_exp_sum,
                          .top_temperature = temperature,
                          .top_row_exp_sum_t1 = row_exp_sum_t1},
             host_work);
}

absl::Status LlamaModel::CopyStepLogitsRow(int64_t row, float* logits) {
  if (row < 0 || row >= step_logits_rows_) {
    return absl::OutOfRangeError(absl::StrCat("logits row ", row, " of a step that had ",
                                              step_logits_rows_, " (none after a failed step)"));
  }
  const int64_t width = shard_.vocab.size();
  backend_.CopyToHost(logits, scratch_[kLogitsOut] + row * width, width * sizeof(float));
  return absl::OkStatus();
}

absl::Status LlamaModel::CopyStepLogitsRows(std::span<const int32_t> rows, float* logits) {
  for (int32_t row : rows) {
    if (row < 0 || row >= step_logits_rows_) {
      return absl::OutOfRangeError(absl::StrCat("logits row ", row, " of a step that had ",
                                                step_logits_rows_, " (none after a failed step)"));
    }
  }
  if (rows.size() <= 1) return rows.empty() ? absl::OkStatus() : CopyStepLogitsRow(rows[0], logits);
  const int64_t width = shard_.vocab.size();
  const int64_t n = static_cast<int64_t>(rows.size());
  float* fetched = Scratch(kFetched, n);
  backend_.GatherRows(scratch_[kLogitsOut], width, rows.data(), n, fetched);
  backend_.CopyToHost(logits, fetched, static_cast<size_t>(n * width) * sizeof(float));
  return absl::OkStatus();
}

absl::Status LlamaModel::GatherStepLogits(std::span<const int32_t> rows,
                                          std::span<const int32_t> ids, float* logits) {
  if (rows.size() != ids.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("logits to gather: ", rows.size(), " rows for ", ids.size(), " token ids"));
  }
  if (ids.empty()) return absl::OkStatus();
  const int64_t width = shard_.vocab.size();
  // Each id's element of the [rows][width] logits, as a row of width 1 for GatherRows.
  std::vector<int32_t> elements(ids.size());
  bool fits = true;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (rows[i] < 0 || rows[i] >= step_logits_rows_) {
      return absl::OutOfRangeError(absl::StrCat("logits row ", rows[i], " of a step that had ",
                                                step_logits_rows_, " (none after a failed step)"));
    }
    if (ids[i] < 0 || ids[i] >= width) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token id ", ids[i], " to gather is outside the logits row [0, ", width, ")"));
    }
    const int64_t element = int64_t{rows[i]} * width + ids[i];
    fits = fits && element <= std::numeric_limits<int32_t>::max();
    elements[i] = static_cast<int32_t>(element);
  }
  if (!fits) {
    // Past GatherRows' int32 rows (a step of more than 2^31 logits): the rows themselves.
    std::vector<float> whole(static_cast<size_t>(width));
    for (size_t i = 0; i < ids.size(); ++i) {
      RETURN_IF_ERROR(CopyStepLogitsRow(rows[i], whole.data()));
      logits[i] = whole[ids[i]];
    }
    return absl::OkStatus();
  }
  const int64_t n = static_cast<int64_t>(ids.size());
  float* gathered = Scratch(kGathered, n);
  backend_.GatherRows(scratch_[kLogitsOut], /*dim=*/1, elements.data(), n, gathered);
  backend_.CopyToHost(logits, gathered, ids.size() * sizeof(float));
  return absl::OkStatus();
}

absl::Status LlamaModel::ForwardArgMax(const StepBatch& batch, KvCacheStorage& kv, int32_t* index,
                                       float* value) {
  return Run(batch, kv, LogitsOutput{.argmax_index = index, .argmax_value = value},
             std::exchange(overlap_work_, nullptr));
}

absl::Status LlamaModel::Run(const StepBatch& batch, KvCacheStorage& kv, LogitsOutput out,
                             kernels::HostWork* host_work) {
  const LlamaConfig& c = config_;
  step_logits_rows_ = 0;
  RETURN_IF_ERROR(ValidateStepBatch(batch, kv.block_size(), kv.num_blocks(), c.vocab_size));
  for (int32_t pos : batch.positions) {
    if (pos >= c.context_length) {
      return absl::InvalidArgumentError(absl::StrCat("position ", pos,
                                                     " exceeds the model's context of ",
                                                     c.context_length, " tokens"));
    }
  }
  // This rank's heads and FFN features (all of them unsplit).
  const int32_t num_heads = shard_.num_heads();
  const int32_t num_kv_heads = shard_.num_kv_heads();
  const int64_t ffn_dim = shard_.ffn_dim();
  if (kv.layer(0).num_kv_heads != num_kv_heads || kv.layer(0).head_dim != c.head_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the KV cache holds ", kv.layer(0).num_kv_heads, " KV heads of dimension ",
        kv.layer(0).head_dim, " per layer, but tensor-parallel rank ", shard_.tp.rank, " of ",
        shard_.tp.size, " has ", num_kv_heads, " of dimension ", c.head_dim,
        "; build the cache with the model's shard().tp"));
  }
  kernels::Backend& be = backend_;
  const int64_t T = batch.num_tokens();
  // CUDA graphs (issue #5): the backend may run this step padded to `rows` rows (a graph
  // bucket). Every activation, the logits rows included, is sized for that before the first
  // op, so that nothing reallocates mid-step; the scope ends the step on every return path.
  const kernels::ForwardScope step_scope(be, StepShape(batch), host_work);
  const int64_t rows = std::max(T, step_scope.plan().padded_rows);
  float* x = Scratch(kX, rows);
  float* xn = Scratch(kXn, rows);
  float* q = Scratch(kQkv, rows);
  float* k = q + rows * num_heads * c.head_dim;
  float* v = k + rows * num_kv_heads * c.head_dim;
  float* attn = Scratch(kAttn, rows);
  float* proj = Scratch(kProj, rows);
  float* gate = Scratch(kGateUp, rows);
  float* up = gate + rows * ffn_dim;
  if (step_scope.plan().padded_rows > 0) {
    Scratch(kLogitsIn, rows);
    Scratch(kLogitsOut, rows);
  }

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

  // The FFN output of the layer before, not yet added to x: each layer's first norm adds it
  // (AddRmsNorm: one pass on backends that fuse the two), the last one's is added after the loop.
  const float* pending_residual = nullptr;
  for (int32_t i = 0; i < c.num_layers; ++i) {
    const LlamaLayerWeights& l = weights_.layers[i];
    if (pending_residual != nullptr) {
      be.AddRmsNorm(x, pending_residual, l.attn_norm, T, c.dim, c.rms_norm_eps, xn);
    } else {
      be.RmsNorm(x, l.attn_norm, T, c.dim, c.rms_norm_eps, xn);
    }
    {
      const kernels::PackedMatrix* qkv_w[] = {l.wq.get(), l.wk.get(), l.wv.get()};
      float* const qkv[] = {q, k, v};
      be.MatMuls(xn, T, qkv_w, qkv);
    }
    rope.x = q;
    rope.num_heads = num_heads;
    be.Rope(rope);
    rope.x = k;
    rope.num_heads = num_kv_heads;
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
    ap.num_heads = num_heads;
    ap.query_start = batch.query_start.data();
    ap.positions = batch.positions.data();
    ap.kv_indptr = batch.kv_indptr.data();
    ap.kv_indices = batch.kv_indices.data();
    ap.kv_last_page_len = batch.kv_last_page_len.data();
    ap.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    be.PagedAttention(ap);

    // Row-parallel projections: each rank's proj is its heads' (features') share of the sum;
    // the all-reduce completes it before the residual add, so x stays replicated.
    be.MatMul(attn, T, *l.wo, proj);
    be.AllReduceSum(proj, T * c.dim);
    be.AddRmsNorm(x, proj, l.ffn_norm, T, c.dim, c.rms_norm_eps, xn);
    {
      const kernels::PackedMatrix* gate_up_w[] = {l.w_gate.get(), l.w_up.get()};
      float* const gate_up[] = {gate, up};
      be.MatMuls(xn, T, gate_up_w, gate_up);
    }
    be.SiluMul(gate, up, T * ffn_dim, gate);
    be.MatMul(gate, T, *l.w_down, proj);
    be.AllReduceSum(proj, T * c.dim);
    pending_residual = proj;
  }
  if (pending_residual != nullptr) be.AddInPlace(x, pending_residual, T * c.dim);

  const int64_t R = static_cast<int64_t>(batch.logits_rows.size());
  if (R == 0) return absl::OkStatus();
  float* rows_in = Scratch(kLogitsIn, R);
  float* rows_out = Scratch(kLogitsOut, R);
  be.GatherRows(x, c.dim, batch.logits_rows.data(), R, xn);
  be.RmsNorm(xn, weights_.output_norm, R, c.dim, c.rms_norm_eps, rows_in);
  be.MatMul(rows_in, R, *weights_.output, rows_out);
  step_logits_rows_ = R;
  if (out.logits != nullptr) {
    be.CopyToHost(out.logits, rows_out, R * shard_.vocab.size() * sizeof(float));
  } else if (out.top_k > 0) {
    be.TopKRows(rows_out, R, shard_.vocab.size(), out.top_k, out.top_count, out.top_index,
                out.top_value, out.top_row_max, out.top_row_exp_sum, out.top_temperature,
                out.top_row_exp_sum_t1);
  } else {
    be.ArgMaxRows(rows_out, R, shard_.vocab.size(), out.argmax_index, out.argmax_value);
  }
  return absl::OkStatus();
}

}  // namespace glimpse::model
