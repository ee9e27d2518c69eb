// CudaBackend (cuda_backend_impl.h): the eager launches of the ops other than MatMul
// (embedding, norm, RoPE, element-wise, all-reduce, KV store and paged attention), with the
// per-step device tables they share across layers. A recorded decode step routes each op to
// its Record* twin in cuda_backend_graphs.cc instead.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/backend/cuda_backend_impl.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/kv_append.h"
#include "kernels/cuda/paged_decode_attention.h"
#include "kernels/cuda/prefill_attention.h"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/cuda/rope_table.h"
#include "kernels/cuda/tensor_parallel.h"
#include "kernels/cuda/weight_convert.h"

namespace glimpse::kernels::cuda::internal {
namespace {

// FNV-1a over the first and last (up to) 4 KiB of a host buffer: detects an embedding table
// whose memory was reused for something else while its device copy is cached.
uint64_t Fingerprint(const void* data, size_t num_bytes) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  uint64_t hash = 1469598103934665603ull;
  auto mix = [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) hash = (hash ^ bytes[i]) * 1099511628211ull;
  };
  const size_t span = std::min<size_t>(num_bytes, 4096);
  mix(0, span);
  mix(num_bytes - span, num_bytes);
  return hash ^ num_bytes;
}

}  // namespace

// ---- Op parameters shared with the recorded launches ----------------------------------------

std::vector<int32_t> RopeKey(const kernels::RopeParams& p) {
  std::vector<int32_t> key(p.positions, p.positions + p.num_tokens);
  key.push_back(p.rot_dim);
  key.push_back(static_cast<int32_t>(std::bit_cast<uint32_t>(p.freq_base)));
  return key;
}

std::vector<int32_t> AttentionKey(const PagedAttentionParams& p, int32_t num_tokens) {
  const int32_t num_pages = p.kv_indptr[p.num_seqs];
  std::vector<int32_t> key;
  key.reserve(5 + 2 * (p.num_seqs + 1) + num_tokens + num_pages);
  key.push_back(p.num_seqs);
  key.push_back(p.kv.block_size);
  key.push_back(p.kv.num_kv_heads);
  key.push_back(p.num_heads);  // the plan's workspace size depends on the heads and head_dim
  key.push_back(p.kv.head_dim);
  key.insert(key.end(), p.query_start, p.query_start + p.num_seqs + 1);
  key.insert(key.end(), p.kv_indptr, p.kv_indptr + p.num_seqs + 1);
  key.insert(key.end(), p.positions, p.positions + num_tokens);
  key.insert(key.end(), p.kv_indices, p.kv_indices + num_pages);
  return key;
}

RopeTableParams RopeLaunchParams(const kernels::RopeParams& params, int32_t num_tokens) {
  RopeTableParams p;
  p.x = params.x;
  p.num_tokens = num_tokens;
  p.num_heads = params.num_heads;
  p.head_dim = params.head_dim;
  p.rot_dim = params.rot_dim;
  p.style = ToCudaRopeStyle(params.style);
  return p;
}

KvAppendParams KvAppendLaunchParams(const KvStoreParams& params, int32_t num_tokens,
                                    DType kv_dtype) {
  const KvLayerView& kv = params.kv;
  KvAppendParams p;
  p.dtype = kv_dtype;
  p.fp32_input = kv_dtype == DType::kBF16;
  p.k = params.k;
  p.v = params.v;
  p.token_stride = static_cast<int64_t>(kv.num_kv_heads) * kv.head_dim;
  p.k_cache = kv.k;
  p.v_cache = kv.v;
  p.num_tokens = num_tokens;
  p.num_kv_heads = kv.num_kv_heads;
  p.page_size = kv.block_size;
  p.head_dim = kv.head_dim;
  return p;
}

// ---- Embedding ------------------------------------------------------------------------------

const CudaBackend::DeviceTable& CudaBackend::TableFor(const MatrixView& view) {
  const WeightFormat format = ToFormat(view.type);
  const size_t num_bytes = static_cast<size_t>(view.rows) * WeightRowBytes(format, view.cols);
  auto it = tables_.find(view.data);
  if (it != tables_.end()) {
    const DeviceTable& t = it->second;
    if (t.format != format || t.rows != view.rows || t.cols != view.cols ||
        t.fingerprint != Fingerprint(view.data, num_bytes)) {
      Fail("the embedding table's host memory changed after its device copy was made; "
           "tables passed to EmbeddingLookup must stay unchanged while the backend lives");
    }
    return t;
  }
  // First use: one device copy in the stored format, kept for the backend's lifetime.
  DeviceTable t;
  t.format = format;
  t.rows = view.rows;
  t.cols = view.cols;
  t.num_bytes = num_bytes;
  t.fingerprint = Fingerprint(view.data, num_bytes);
  t.data = Allocate(num_bytes);
  GLIMPSE_CUDA_CHECK(
      cudaMemcpyAsync(t.data, view.data, num_bytes, cudaMemcpyHostToDevice, stream_));
  GLIMPSE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return tables_.emplace(view.data, t).first->second;
}

void CudaBackend::EmbeddingLookup(const MatrixView& table, const int32_t* ids, int64_t num_ids,
                                  float* out) {
  if (num_ids == 0) return;
  Bind();
  if (table.type == WeightType::kQ8_0 && table.cols % kQ8_0BlockElements != 0) {
    Fail(absl::StrCat("Q8_0 embedding table with ", table.cols, " columns"));
  }
  for (int64_t i = 0; i < num_ids; ++i) {
    if (ids[i] < 0 || ids[i] >= table.rows) {
      Fail(absl::StrCat("EmbeddingLookup: token id ", ids[i], " outside [0, ", table.rows, ")"));
    }
  }
  const DeviceTable& t = TableFor(table);
  if (graphs_.recording() && RecordEmbedding(t, ids, num_ids, out)) return;
  EmbeddingParams p;
  p.format = t.format;
  p.table = t.data;
  p.num_rows = t.rows;
  p.cols = t.cols;
  p.ids = static_cast<const int32_t*>(Upload(ids, num_ids * sizeof(int32_t)));
  p.num_ids = num_ids;
  p.out = out;
  GLIMPSE_CUDA_CHECK(LaunchEmbedding(p, stream_));
}

// ---- Norm, RoPE, element-wise ---------------------------------------------------------------

void CudaBackend::RmsNorm(const float* x, const float* weight, int64_t num_rows, int64_t dim,
                          float eps, float* out) {
  if (num_rows == 0) return;
  Bind();
  if (num_rows > INT_MAX || dim <= 0 || dim > INT_MAX) {
    Fail(absl::StrCat("RmsNorm of [", num_rows, " x ", dim, "]"));
  }
  if (graphs_.recording() && RecordRmsNorm(x, weight, num_rows, dim, eps, out)) return;
  if (out == x) Reserve(norm_input_, static_cast<size_t>(num_rows) * static_cast<size_t>(dim) * 4);
  GLIMPSE_CUDA_CHECK(
      EnqueueRmsNorm(x, weight, num_rows, dim, eps, out, norm_input_.get(), stream_));
}

cudaError_t CudaBackend::EnqueueRmsNorm(const float* x, const float* weight, int64_t num_rows,
                                        int64_t dim, float eps, float* out, uint8_t* norm_scratch,
                                        cudaStream_t stream, void* out_bf16) {
  const size_t num_bytes = static_cast<size_t>(num_rows) * static_cast<size_t>(dim) * 4;
  const float* input = x;
  if (out == x) {
    // The fused kernel's out may not alias its input (it re-reads the input after the
    // reduction): normalize a copy.
    const cudaError_t err =
        cudaMemcpyAsync(norm_scratch, x, num_bytes, cudaMemcpyDeviceToDevice, stream);
    if (err != cudaSuccess) return err;
    input = reinterpret_cast<const float*>(norm_scratch);
  }
  AddRmsNormParams p;
  p.dtype = DType::kF32;
  p.x = nullptr;  // no residual add: the kernel then only reads `residual`
  p.residual = const_cast<float*>(input);
  p.weight = weight;
  p.out = out;
  p.out_bf16 = out_bf16;
  p.num_rows = static_cast<int32_t>(num_rows);
  p.dim = static_cast<int32_t>(dim);
  p.eps = eps;
  return LaunchAddRmsNorm(p, stream);
}

const float* CudaBackend::RopeTable(const kernels::RopeParams& p) {
  std::vector<int32_t> key = RopeKey(p);
  if (rope_memo_.generation == generation_ && rope_memo_.key == key) return rope_memo_.table;
  std::vector<float> table(static_cast<size_t>(p.num_tokens) * (p.rot_dim / 2) * 2);
  FillRopeCosSinTable(p.positions, p.num_tokens, p.rot_dim, p.freq_base, table.data());
  const float* device =
      static_cast<const float*>(Upload(table.data(), table.size() * sizeof(float)));
  // Read the generation after the upload: a staging restart inside it starts a new one.
  rope_memo_.generation = generation_;
  rope_memo_.key = std::move(key);
  rope_memo_.table = device;
  return device;
}

void CudaBackend::Rope(const kernels::RopeParams& params) {
  if (params.num_tokens == 0) return;
  Bind();
  if (params.rot_dim <= 0 || params.rot_dim % 2 != 0 || params.rot_dim > params.head_dim) {
    Fail(absl::StrCat("Rope with rot_dim ", params.rot_dim, " and head_dim ", params.head_dim));
  }
  if (graphs_.recording() && RecordRope(params)) return;
  RopeTableParams p = RopeLaunchParams(params, params.num_tokens);
  p.cos_sin = RopeTable(params);
  GLIMPSE_CUDA_CHECK(LaunchRopeWithTable(p, stream_));
}

void CudaBackend::SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  if (n == 0) return;
  Bind();
  if (graphs_.recording() && RecordSiluMul(gate, up, n, out)) return;
  GLIMPSE_CUDA_CHECK(LaunchSiluMulFlat(gate, up, n, out, stream_));
}

void CudaBackend::AddInPlace(float* x, const float* y, int64_t n) {
  if (n == 0) return;
  Bind();
  if (graphs_.recording() && RecordAddInPlace(x, y, n)) return;
  GLIMPSE_CUDA_CHECK(LaunchAddInPlace(x, y, n, stream_));
}

// One launch of the fused kernel: x += y (one fp32 add per element, as AddInPlace), then the
// norm of the updated x, as RmsNorm computes it.
AddRmsNormParams AddRmsNormLaunchParams(float* x, const float* y, const float* weight,
                                        int64_t num_rows, int64_t dim, float eps, float* out) {
  AddRmsNormParams p;
  p.dtype = DType::kF32;
  p.x = y;
  p.residual = x;
  p.weight = weight;
  p.out = out;
  p.num_rows = static_cast<int32_t>(num_rows);
  p.dim = static_cast<int32_t>(dim);
  p.eps = eps;
  return p;
}

void CudaBackend::AddRmsNorm(float* x, const float* y, const float* weight, int64_t num_rows,
                             int64_t dim, float eps, float* out) {
  if (num_rows == 0) return;
  if (out == x || out == y || num_rows > INT_MAX || dim > INT_MAX) {
    Backend::AddRmsNorm(x, y, weight, num_rows, dim, eps, out);  // the two ops
    return;
  }
  Bind();
  if (graphs_.recording() && RecordAddRmsNorm(x, y, weight, num_rows, dim, eps, out)) return;
  GLIMPSE_CUDA_CHECK(
      LaunchAddRmsNorm(AddRmsNormLaunchParams(x, y, weight, num_rows, dim, eps, out), stream_));
}

void CudaBackend::GatherRows(const float* x, int64_t dim, const int32_t* rows, int64_t num_rows,
                             float* out) {
  if (num_rows == 0) return;
  Bind();
  for (int64_t i = 0; i < num_rows; ++i) {
    if (rows[i] < 0) Fail(absl::StrCat("GatherRows: row ", rows[i]));
  }
  if (graphs_.recording() && RecordGatherRows(x, dim, rows, num_rows, out)) return;
  GatherRowsParams p;
  p.x = x;
  p.dim = dim;
  p.rows = static_cast<const int32_t*>(Upload(rows, num_rows * sizeof(int32_t)));
  p.num_rows = num_rows;
  p.out = out;
  GLIMPSE_CUDA_CHECK(LaunchGatherRows(p, stream_));
}

// ---- Tensor parallelism ---------------------------------------------------------------------

void CudaBackend::AllReduceSum(float* x, int64_t n) {
  // Every rank passes the same n, so every rank skips an empty one alike.
  if (n == 0) return;
  Bind();
  if (graphs_.recording() && RecordAllReduceSum(x, n)) return;
  // Enqueued on the backend's stream like any op (ordered after the projection that wrote x);
  // with one rank NCCL copies in place, so one GPU runs the same path as several.
  const ncclResult_t r =
      tp_group_->AllReduceSumRank(tp_rank_, x, static_cast<size_t>(n), DType::kF32, stream_);
  if (r != ncclSuccess) {
    Fail(absl::StrCat("ncclAllReduce of ", n, " floats on tensor-parallel rank ", tp_rank_,
                      " of ", tp_group_->size(), " failed: ", ncclGetErrorString(r)));
  }
}

// ---- KV cache and attention -----------------------------------------------------------------

void CudaBackend::StoreKv(const KvStoreParams& params) {
  if (params.num_tokens == 0) return;
  Bind();
  if (graphs_.recording() && RecordStoreKv(params)) return;
  KvAppendParams p = KvAppendLaunchParams(params, params.num_tokens, kv_dtype_);
  p.slot_mapping =
      static_cast<const int32_t*>(Upload(params.slots, params.num_tokens * sizeof(int32_t)));
  GLIMPSE_CUDA_CHECK(LaunchKvAppend(p, stream_));
}

// Causal attention through the paged decode kernel: query token t of sequence s, at position
// pos, attends to keys 0..pos, which is exactly a decode step of a sequence made of the first
// pos / B + 1 pages of s with pos % B + 1 slots in the last. So every query token becomes one
// "decode sequence" with its own (prefix) page table:
//
//   seq s: pages [p0 p1 p2 p3], B = 4, query tokens at positions 9, 10
//     token @9  -> pages [p0 p1 p2], last page len 2  (keys 0..9)
//     token @10 -> pages [p0 p1 p2], last page len 3  (keys 0..10)
//
// which handles prefill chunks, decode tokens and mixed batches alike, on either KV dtype. A
// prefill chunk of T tokens re-reads its prefix T times: fine for decode steps, slow for long
// prompts, so steps with a multi-token sequence go to AttendPerSequence where they can.
const CudaBackend::AttentionMemo& CudaBackend::AttentionTables(const PagedAttentionParams& p,
                                                               int32_t num_tokens) {
  const int32_t block_size = p.kv.block_size;
  std::vector<int32_t> key = AttentionKey(p, num_tokens);
  AttentionMemo& memo = attention_memo_;
  if (memo.generation == generation_ && memo.key == key) return memo;

  // Host tables, uploaded as one block: [indptr: T + 1 | last_len: T | indices].
  std::vector<int32_t> indptr(num_tokens + 1, 0);
  std::vector<int32_t> last_len(num_tokens);
  std::vector<int32_t> indices;
  for (int32_t s = 0; s < p.num_seqs; ++s) {
    const int32_t seq_pages = p.kv_indptr[s + 1] - p.kv_indptr[s];
    for (int32_t t = p.query_start[s]; t < p.query_start[s + 1]; ++t) {
      const int32_t pos = p.positions[t];
      const int32_t pages = pos / block_size + 1;
      if (pos < 0 || pages > seq_pages) {
        Fail(absl::StrCat("PagedAttention: token ", t, " at position ", pos,
                          " is outside its sequence's ", seq_pages, " blocks of ", block_size));
      }
      indices.insert(indices.end(), p.kv_indices + p.kv_indptr[s],
                     p.kv_indices + p.kv_indptr[s] + pages);
      indptr[t + 1] = static_cast<int32_t>(indices.size());
      last_len[t] = pos % block_size + 1;
    }
  }
  std::vector<int32_t> packed;
  packed.reserve(indptr.size() + last_len.size() + indices.size());
  packed.insert(packed.end(), indptr.begin(), indptr.end());
  packed.insert(packed.end(), last_len.begin(), last_len.end());
  packed.insert(packed.end(), indices.begin(), indices.end());
  const auto* device =
      static_cast<const int32_t*>(Upload(packed.data(), packed.size() * sizeof(int32_t)));
  memo.generation = generation_;  // after the upload, which may have restarted staging
  memo.key = std::move(key);
  memo.indptr = device;
  memo.last_len = device + indptr.size();
  memo.indices = device + indptr.size() + last_len.size();
  memo.launches.clear();
  memo.workspace_bytes = 0;
  constexpr int32_t kMaxTokensPerLaunch = 65535;  // grid.z of the decode kernel
  for (int32_t first = 0; first < num_tokens; first += kMaxTokensPerLaunch) {
    AttentionLaunch launch;
    launch.first_token = first;
    launch.num_tokens = std::min(kMaxTokensPerLaunch, num_tokens - first);
    launch.plan = PlanPagedDecode(indptr.data() + first, launch.num_tokens, p.kv.num_kv_heads,
                                  block_size, num_sms_);
    memo.workspace_bytes = std::max(
        memo.workspace_bytes, PagedDecodeWorkspaceBytes(launch.plan, launch.num_tokens,
                                                        p.num_heads, p.kv.head_dim));
    memo.launches.push_back(launch);
  }
  return memo;
}

void CudaBackend::PagedAttention(const PagedAttentionParams& params) {
  const int32_t num_tokens = params.query_start[params.num_seqs];
  if (num_tokens == 0) return;
  Bind();
  // LlamaModel::Load has asked already; this guards other callers.
  if (absl::Status shape =
          CheckAttentionShape(params.kv.head_dim, params.num_heads, params.kv.num_kv_heads);
      !shape.ok()) {
    Fail(absl::StrCat("PagedAttention: ", shape.message()));
  }
  if (graphs_.recording() && RecordPagedAttention(params)) return;
  const bool decode_only = num_tokens == params.num_seqs;
  if (!decode_only && AttendPerSequence(params, num_tokens)) return;
  AttendPerToken(params, num_tokens);
}

absl::Status CudaBackend::CheckAttentionShape(int32_t head_dim, int32_t num_heads,
                                              int32_t num_kv_heads) const {
  const bool head_dim_ok = head_dim == 32 || head_dim == 64 || head_dim == 128;
  const bool group_ok = num_kv_heads > 0 && num_heads % num_kv_heads == 0 &&
                        num_heads / num_kv_heads >= 1 && num_heads / num_kv_heads <= 8;
  if (head_dim_ok && group_ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "the CUDA attention kernels run head_dim 32, 64 or 128 with 1 to 8 query heads per KV "
      "head; this model has head_dim ",
      head_dim, ", ", num_heads, " query heads and ", num_kv_heads, " KV heads",
      num_kv_heads > 0 && num_heads % num_kv_heads == 0
          ? absl::StrCat(" (", num_heads / num_kv_heads, " per KV head)")
          : std::string(),
      ". Run it with --device=cpu"));
}

void CudaBackend::AttendPerToken(const PagedAttentionParams& params, int32_t num_tokens) {
  const KvLayerView& kv = params.kv;
  const AttentionMemo& memo = AttentionTables(params, num_tokens);
  Reserve(attention_workspace_, memo.workspace_bytes);
  if (decode_kernel_ == DecodeKernel::kMmaSync) ++mma_decode_attention_calls_;
  const int64_t row_floats = static_cast<int64_t>(params.num_heads) * kv.head_dim;
  for (const AttentionLaunch& launch : memo.launches) {
    PagedDecodeParams p;
    p.kernel = decode_kernel_;
    p.dtype = kv_dtype_;
    p.fp32_q_and_o = kv_dtype_ == DType::kBF16;
    p.q = params.q + launch.first_token * row_floats;
    p.o = params.out + launch.first_token * row_floats;
    p.lse = nullptr;
    p.kv.k_cache = kv.k;
    p.kv.v_cache = kv.v;
    p.kv.kv_indptr = memo.indptr + launch.first_token;  // absolute offsets into indices
    p.kv.kv_indices = memo.indices;
    p.kv.kv_last_page_len = memo.last_len + launch.first_token;
    p.kv.num_kv_heads = kv.num_kv_heads;
    p.kv.page_size = kv.block_size;
    p.kv.head_dim = kv.head_dim;
    p.batch = launch.num_tokens;
    p.num_qo_heads = params.num_heads;
    p.sm_scale = params.scale;
    p.plan = launch.plan;
    p.workspace = attention_workspace_.get();
    p.workspace_bytes = attention_workspace_.size();
    p.merge_counters = MergeCounters(static_cast<int64_t>(p.batch) * p.kv.num_kv_heads);
    GLIMPSE_CUDA_CHECK(LaunchPagedDecode(p, stream_));
  }
}

// The prefill kernel's causal mask puts a sequence's qo_len query tokens at its last qo_len
// KV indices, which is the Backend contract (consecutive positions ending at the last cached
// one) exactly when every sequence's page table holds last position + 1 keys; a step that
// breaks it is left to AttendPerToken, which reads each token's position.
//
//   bf16 cache:  q (fp32) --cast--> q_bf16 --tensor-core kernel--> o_bf16 --cast (exact)--> out
//   fp32 cache:  q (fp32) --fp32 CUDA-core kernel (same plan, 64-row tiles)--> out (fp32)
bool CudaBackend::AttendPerSequence(const PagedAttentionParams& params, int32_t num_tokens) {
  const KvLayerView& kv = params.kv;
  const int32_t block_size = kv.block_size;
  std::vector<int32_t> key = AttentionKey(params, num_tokens);
  // The memo's plan is for this kernel: head_dim is the model's, the same on every call. The
  // fp32 kernel takes kMmaSync's plan.
  const bool fp32 = kv_dtype_ == DType::kF32;
  // The reason for a fallback is asked for (a string built) only until it has been logged:
  // this runs per layer and step.
  std::string fallback_reason;
  const PrefillKernel kernel =
      fp32 ? PrefillKernel::kMmaSync
           : PrefillKernelFor(prefill_kernel_, kv.head_dim, block_size, compute_major_,
                              max_shared_memory_per_block_,
                              prefill_fallback_logged_ ? nullptr : &fallback_reason);
  if (!fp32 && kernel != prefill_kernel_ && !prefill_fallback_logged_) {
    // The device, head_dim and block size are the same on every call: once is enough.
    spdlog::warn(
        "CUDA backend: --cuda_prefill_attention={} cannot run here: {}; prefill "
        "attention runs {} instead",
        PrefillKernelName(prefill_kernel_), fallback_reason, PrefillKernelName(kernel));
    prefill_fallback_logged_ = true;
  }
  PrefillMemo& memo = prefill_memo_;
  if (memo.generation != generation_ || memo.key != key) {
    for (int32_t s = 0; s < params.num_seqs; ++s) {
      const int32_t first = params.query_start[s];
      const int32_t last = params.query_start[s + 1] - 1;
      if (last < first) continue;
      const int32_t kv_len = KvLength(params.kv_indptr[s + 1] - params.kv_indptr[s],
                                      params.kv_last_page_len[s], block_size);
      if (params.positions[last] + 1 != kv_len ||
          params.positions[last] - params.positions[first] != last - first) {
        return false;
      }
    }
    PrefillPlanInput input;
    input.qo_indptr = params.query_start;
    input.kv_indptr = params.kv_indptr;
    input.kv_last_page_len = params.kv_last_page_len;
    input.num_seqs = params.num_seqs;
    input.num_qo_heads = params.num_heads;
    input.num_kv_heads = kv.num_kv_heads;
    input.page_size = block_size;
    input.mask_mode = AttentionMaskMode::kCausal;
    input.num_sms = num_sms_;
    input.kernel = kernel;
    input.kv_bytes_per_key = 2 * static_cast<int64_t>(kv.head_dim) * DTypeSize(kv_dtype_);
    input.l2_cache_bytes = l2_cache_bytes_;
    PrefillPlan plan;
    GLIMPSE_CUDA_CHECK(PlanPrefillAttention(input, &plan));
    // One upload: [qo_indptr: S + 1 | kv_indptr: S + 1 | last_len: S | indices | work items].
    const int32_t num_seqs = params.num_seqs;
    const int32_t num_pages = params.kv_indptr[num_seqs];
    std::vector<int32_t> packed;
    packed.reserve(3 * num_seqs + 2 + num_pages + plan.work_items.size());
    packed.insert(packed.end(), params.query_start, params.query_start + num_seqs + 1);
    packed.insert(packed.end(), params.kv_indptr, params.kv_indptr + num_seqs + 1);
    packed.insert(packed.end(), params.kv_last_page_len, params.kv_last_page_len + num_seqs);
    packed.insert(packed.end(), params.kv_indices, params.kv_indices + num_pages);
    packed.insert(packed.end(), plan.work_items.begin(), plan.work_items.end());
    const auto* device =
        static_cast<const int32_t*>(Upload(packed.data(), packed.size() * sizeof(int32_t)));
    memo.generation = generation_;  // after the upload, which may have restarted staging
    memo.key = std::move(key);
    memo.qo_indptr = device;
    memo.kv_indptr = device + num_seqs + 1;
    memo.kv_last_page_len = device + 2 * (num_seqs + 1);
    memo.kv_indices = device + 3 * num_seqs + 2;
    memo.work_items = memo.kv_indices + num_pages;
    memo.workspace_bytes = PrefillWorkspaceBytes(plan, params.num_heads, kv.head_dim);
    memo.plan = std::move(plan);
  }
  const int64_t elements = static_cast<int64_t>(num_tokens) * params.num_heads * kv.head_dim;
  const size_t bf16_bytes = static_cast<size_t>(elements) * 2;
  Reserve(attention_workspace_, memo.workspace_bytes);
  PrefillAttentionParams p;
  if (fp32) {
    p.dtype = DType::kF32;
    p.q = params.q;
    p.o = params.out;
  } else {
    Reserve(attention_bf16_, 2 * bf16_bytes);
    GLIMPSE_CUDA_CHECK(LaunchCastF32ToBf16(params.q, attention_bf16_.get(), elements, stream_));
    p.q = attention_bf16_.get();
    p.o = attention_bf16_.get() + bf16_bytes;
  }
  p.lse = nullptr;
  p.kv.k_cache = kv.k;
  p.kv.v_cache = kv.v;
  p.kv.kv_indptr = memo.kv_indptr;
  p.kv.kv_indices = memo.kv_indices;
  p.kv.kv_last_page_len = memo.kv_last_page_len;
  p.kv.num_kv_heads = kv.num_kv_heads;
  p.kv.page_size = block_size;
  p.kv.head_dim = kv.head_dim;
  p.qo_indptr = memo.qo_indptr;
  p.num_seqs = params.num_seqs;
  p.num_qo_heads = params.num_heads;
  p.sm_scale = params.scale;
  p.mask_mode = AttentionMaskMode::kCausal;
  p.kernel = kernel;
  ApplyPrefillPlan(memo.plan, &p);
  p.work_items = memo.work_items;
  p.workspace = attention_workspace_.get();
  p.workspace_bytes = attention_workspace_.size();
  if (memo.plan.num_chunks > 1) {
    p.num_merge_counters = PrefillMergeCounters(p.total_q, p.num_qo_heads);
    p.merge_counters = MergeCounters(p.num_merge_counters);
  }
  GLIMPSE_CUDA_CHECK(LaunchPrefillAttention(p, stream_));
  if (fp32) {
    ++fp32_tiled_attention_calls_;
    return true;
  }
  GLIMPSE_CUDA_CHECK(LaunchCastBf16ToF32(p.o, params.out, elements, stream_));
  ++tensor_core_attention_calls_;
  if (kernel == PrefillKernel::kWgmma) ++wgmma_attention_calls_;
  if (kernel == PrefillKernel::kMmaSyncWide) ++wide_attention_calls_;
  if (kernel == PrefillKernel::kWgmmaPipelined) ++pipelined_attention_calls_;
  if (kernel == PrefillKernel::kWgmmaPipelined128) ++pipelined_128_attention_calls_;
  return true;
}

}  // namespace glimpse::kernels::cuda::internal
