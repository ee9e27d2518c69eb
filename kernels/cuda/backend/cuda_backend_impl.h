// Private to //kernels/cuda/backend:cuda_backend (listed in its srcs, not hdrs): the CudaBackend
// class and the helpers its .cc files share. The public interface is cuda_backend.h, which has
// no CUDA types; this header has them.
#ifndef GLIMPSE_KERNELS_CUDA_BACKEND_CUDA_BACKEND_IMPL_H_
#define GLIMPSE_KERNELS_CUDA_BACKEND_CUDA_BACKEND_IMPL_H_

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "kernels/backend.h"
#include "kernels/cuda/argmax_rows.h"
#include "kernels/cuda/backend/cuda_backend.h"
#include "kernels/cuda/backend/decode_graphs.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/kv_append.h"
#include "kernels/cuda/paged_decode_attention.h"
#include "kernels/cuda/prefill_attention.h"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/cuda/rope.h"
#include "kernels/cuda/rope_table.h"
#include "kernels/cuda/topk_rows.h"
#include "kernels/cuda/weight_format.h"
#include "spdlog/spdlog.h"

namespace glimpse::kernels::cuda::internal {

// ---- Error handling -------------------------------------------------------------------------
// Backend ops return void: a failed CUDA call or launch in the middle of a forward pass cannot
// be recovered (the stream's work is lost and the context may be poisoned), so it is logged and
// the process aborts through the project's CHECK. Kernel execution errors surface at the next
// synchronizing call (CopyToHost, Free); run with CUDA_LAUNCH_BLOCKING=1 to pin them down.
inline void CheckCuda(cudaError_t err, const char* expr, const char* file, int line) {
  if (err == cudaSuccess) return;
  spdlog::critical("CUDA backend: {} failed at {}:{}: {} ({}); aborting", expr, file, line,
                   cudaGetErrorName(err), cudaGetErrorString(err));
  CHECK(err == cudaSuccess);
}

#define GLIMPSE_CUDA_CHECK(expr) CheckCuda((expr), #expr, __FILE__, __LINE__)

// Logs `message` and aborts: for violated preconditions of an op (a bug in the caller).
[[noreturn]] inline void Fail(const std::string& message) {
  spdlog::critical("CUDA backend: {}", message);
  CHECK(false);
  std::abort();  // CHECK(false) does not return; this tells the compiler.
}

// For creation and PackMatrix, which can report errors: ResourceExhausted for out of memory.
inline absl::Status CudaStatus(cudaError_t err, const std::string& what) {
  if (err == cudaSuccess) return absl::OkStatus();
  const std::string message =
      absl::StrCat(what, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")");
  if (err == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

inline WeightFormat ToFormat(WeightType type) {
  switch (type) {
    case WeightType::kF32:
      return WeightFormat::kF32;
    case WeightType::kF16:
      return WeightFormat::kF16;
    case WeightType::kBF16:
      return WeightFormat::kBF16;
    case WeightType::kQ8_0:
      return WeightFormat::kQ8_0;
  }
  return WeightFormat::kF32;
}

inline RopeStyle ToCudaRopeStyle(kernels::RopeStyle style) {
  switch (style) {
    case kernels::RopeStyle::kNormal:
      return RopeStyle::kNormal;
    case kernels::RopeStyle::kNeox:
      return RopeStyle::kNeox;
  }
  return RopeStyle::kNormal;
}

// ---- Op parameters shared by the eager launches (cuda_backend_ops.cc) and their recorded
// twins (cuda_backend_graphs.cc) -------------------------------------------------------------

// The host inputs a per-step table is built from (its memo key): every layer of a step passes
// the same ones, so equal keys reuse the table.
std::vector<int32_t> RopeKey(const kernels::RopeParams& p);
std::vector<int32_t> AttentionKey(const PagedAttentionParams& p, int32_t num_tokens);
// Rope's launch over `num_tokens` rows; cos_sin (device) is left to the caller.
RopeTableParams RopeLaunchParams(const kernels::RopeParams& params, int32_t num_tokens);
// AddRmsNorm's fused launch (x += y, then out = RmsNorm(x) * weight).
AddRmsNormParams AddRmsNormLaunchParams(float* x, const float* y, const float* weight,
                                        int64_t num_rows, int64_t dim, float eps, float* out);
// StoreKv's launch over `num_tokens` slots into a cache of `kv_dtype` (fp32 inputs, rounded
// when the cache is bf16); slot_mapping (device) is left to the caller.
KvAppendParams KvAppendLaunchParams(const KvStoreParams& params, int32_t num_tokens,
                                    DType kv_dtype);

// ---- Packed weights -------------------------------------------------------------------------
// A weight matrix on the device, row-major W[rows][cols] exactly as in the file (no
// re-tiling: cuBLAS reads it as the column-major K x N matrix Wᵀ; see MatMul), fp32 for F32
// weights and bf16 for every other format. Shares its device allocation with the matrices
// packed with it (PackMatrices: one allocation, rows adjacent); the last one freed frees it.
class CudaPackedMatrix final : public PackedMatrix {
 public:
  CudaPackedMatrix(std::shared_ptr<void> allocation, int64_t rows, int64_t cols, bool bf16,
                   const void* data)
      : allocation_(std::move(allocation)), rows_(rows), cols_(cols), bf16_(bf16), data_(data) {}
  CudaPackedMatrix(const CudaPackedMatrix&) = delete;
  CudaPackedMatrix& operator=(const CudaPackedMatrix&) = delete;

  int64_t rows() const override { return rows_; }
  int64_t cols() const override { return cols_; }
  size_t element_bytes() const { return bf16_ ? 2 : 4; }
  size_t num_bytes() const override { return static_cast<size_t>(rows_) * cols_ * element_bytes(); }
  bool bf16() const { return bf16_; }
  const void* data() const { return data_; }

 private:
  std::shared_ptr<void> allocation_;  // device; its deleter frees it (PackedAllocation)
  int64_t rows_;
  int64_t cols_;
  bool bf16_;
  const void* data_;  // within allocation_: [rows][cols], fp32 or bf16
};

// One cuBLAS call of a MatMuls (PlanProjectionGemms): y = x Wᵀ for `batch` problems of
// n_out x k weights, problem i reading w + i * w_stride and writing y + i * y_stride
// (elements; one GEMM when batch is 1). It computes `matrices` of the MatMuls' matrices: more
// than one joined either as one matrix (adjacent rows and, for one input row, adjacent
// outputs: n_out is their sum) or as a strided batch (same shape, evenly spaced).
struct ProjectionGemm {
  const void* w = nullptr;
  int n_out = 0;
  int k = 0;
  bool bf16 = false;
  float* y = nullptr;
  int batch = 1;
  int64_t w_stride = 0;
  int64_t y_stride = 0;
  int matrices = 1;

  // One matrix alone: y = x Wᵀ.
  static ProjectionGemm Of(const CudaPackedMatrix& m, float* y) {
    ProjectionGemm g;
    g.w = m.data();
    g.n_out = static_cast<int>(m.rows());
    g.k = static_cast<int>(m.cols());
    g.bf16 = m.bf16();
    g.y = y;
    return g;
  }
};
// The fewest such calls for ws[j] -> ys[j] over num_rows input rows, in order (a call joins a
// matrix only with the one before it). Every matrix of one width and dtype.
std::vector<ProjectionGemm> PlanProjectionGemms(std::span<const PackedMatrix* const> ws,
                                                std::span<float* const> ys, int64_t num_rows);

// ---- The backend ----------------------------------------------------------------------------
// kernels::Backend on one CUDA device (cuda_backend.h, CreateCudaBackend). Owns its stream,
// cuBLAS handle and workspace, staging buffers, scratch buffers, device copies of embedding
// tables and recorded decode graphs; memory from Allocate() and PackedMatrix objects must be
// released before it is destroyed. Thread-safety: one driving thread at a time (the Backend
// contract); any thread may drive it (every op selects the backend's device first, Bind()).
// Its definitions are split by concept:
//   cuda_backend.cc           creation, staging of host arrays, memory and copies
//   cuda_backend_matmul.cc    weight packing and MatMul (cuBLAS)
//   cuda_backend_ops.cc       the other ops' eager launches
//   cuda_backend_graphs.cc    decode-step CUDA graphs: Begin/EndForward and the recorded launches
// This backend's view of a PackedMatrix it made (every PackedMatrix it is handed is one).
inline const CudaPackedMatrix& AsCuda(const PackedMatrix& w) {
  return static_cast<const CudaPackedMatrix&>(w);
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, std::shared_ptr<TensorParallelGroup> tp_group, int tp_rank,
              const DecodeGraphRecorder::Options& graph_options, DType kv_dtype,
              PrefillKernel prefill_kernel, DecodeKernel decode_kernel)
      : device_(device),
        kv_dtype_(kv_dtype),
        prefill_kernel_(prefill_kernel),
        decode_kernel_(decode_kernel),
        tp_group_(std::move(tp_group)),
        tp_rank_(tp_rank),
        graphs_(graph_options) {}
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  absl::Status Init();

  std::string name() const override { return name_; }
  void* Allocate(size_t num_bytes) override;
  void Free(void* ptr) override;
  // Page-locked (cudaHostAlloc, portable: every device's copies reach it directly); null,
  // with a warning, when the host cannot page-lock that much.
  void* AllocateHost(size_t num_bytes) override;
  void FreeHost(void* ptr) override;
  // cudaMemcpyAsync on the stream; WaitForCopiesToHost synchronizes it (and recycles the
  // staging buffers, as CopyToHost).
  void CopyToHostAsync(void* host_dst, const void* src, size_t num_bytes) override;
  void WaitForCopiesToHost() override;
  void CopyToBackend(void* dst, const void* host_src, size_t num_bytes) override;
  // cudaMemcpyAsync on the stream straight from host_src, whatever its size: no staging
  // memcpy, no wait (staged copies of a few KiB each would also fill the staging buffer and
  // synchronize the stream every time it wraps).
  void CopyToBackendAsync(void* dst, const void* host_src, size_t num_bytes) override;
  void CopyToHost(void* host_dst, const void* src, size_t num_bytes) override;
  // LaunchArgMaxRows on the device, then 8 bytes a row to the host; like CopyToHost, the end of
  // a recorded step (EndStepForReduction: the reduction runs after its graph, not in it).
  void ArgMaxRows(const float* x, int64_t num_rows, int64_t cols, int32_t* host_index,
                  float* host_value) override;
  // LaunchTopKRows on the device, then the counts and k (column, value) pairs a row to the
  // host; like ArgMaxRows, the end of a recorded step, the selection launched after its graph.
  void TopKRows(const float* x, int64_t num_rows, int64_t cols, int32_t k, int32_t* host_count,
                int32_t* host_index, float* host_value, float* host_row_max,
                double* host_row_exp_sum, const float* host_temperature,
                double* host_row_exp_sum_t1) override;
  void CopyWithinBackend(void* dst, const void* src, size_t num_bytes) override;
  // Each batch one cudaMemcpyBatchAsync on the stream (sources read in stream order), after
  // the recorded launches as the single copies are.
  void BatchCopyToHostAsync(std::span<const CopyOp> copies) override;
  void BatchCopyToBackendAsync(std::span<const CopyOp> copies) override;
  void BatchCopyWithinBackend(std::span<const CopyOp> copies) override;
  size_t KvElementBytes() const override { return DTypeSize(kv_dtype_); }
  // The attention kernels' shapes: head_dim 32, 64 or 128, 1 to 8 query heads per KV head.
  absl::Status CheckAttentionShape(int32_t head_dim, int32_t num_heads,
                                   int32_t num_kv_heads) const override;
  absl::StatusOr<std::unique_ptr<PackedMatrix>> PackMatrix(const MatrixView& w) override;
  // One allocation, rows adjacent, when the views share a width and a packed dtype (so that
  // MatMuls joins their GEMMs); otherwise one PackMatrix each.
  absl::StatusOr<std::vector<std::unique_ptr<PackedMatrix>>> PackMatrices(
      std::span<const MatrixView> ws) override;
  void MatMul(const float* x, int64_t num_rows, const PackedMatrix& w, float* y) override;
  void MatMuls(const float* x, int64_t num_rows, std::span<const PackedMatrix* const> ws,
               std::span<float* const> ys) override;
  void EmbeddingLookup(const MatrixView& table, const int32_t* ids, int64_t num_ids,
                       float* out) override;
  void RmsNorm(const float* x, const float* weight, int64_t num_rows, int64_t dim, float eps,
               float* out) override;
  void Rope(const kernels::RopeParams& params) override;
  void StoreKv(const KvStoreParams& params) override;
  void PagedAttention(const PagedAttentionParams& params) override;
  void SiluMul(const float* gate, const float* up, int64_t n, float* out) override;
  void AddInPlace(float* x, const float* y, int64_t n) override;
  void AddRmsNorm(float* x, const float* y, const float* weight, int64_t num_rows, int64_t dim,
                  float eps, float* out) override;
  void GatherRows(const float* x, int64_t dim, const int32_t* rows, int64_t num_rows,
                  float* out) override;
  void AllReduceSum(float* x, int64_t n) override;
  // CUDA graphs of decode steps ("Decode graphs" in cuda_backend_graphs.cc, decode_graphs.h).
  ForwardPlan BeginForward(const ForwardShape& shape) override;
  // A decode step of up to kMaxGraphBatch rows is padded to its bucket (DecodeBucketFor).
  int64_t MaxPaddedRows(int64_t rows) const override;
  void EndForward() override;
  // Kept for the step's first host wait (RestartStaging), once its launches (its graph) are
  // enqueued; run at EndForward at the latest.
  void OverlapHostWork(HostWork* work) override;
  std::vector<BackendCounter> Counters() const override;
  // cudaMemGetInfo on this backend's device; nullopt (logged) if it fails.
  std::optional<DeviceMemoryInfo> DeviceMemory() override;

 private:
  // A device copy of an embedding table (MatrixView in host memory), in its stored format.
  struct DeviceTable {
    WeightFormat format = WeightFormat::kF32;
    int64_t rows = 0;
    int64_t cols = 0;
    size_t num_bytes = 0;
    uint64_t fingerprint = 0;
    void* data = nullptr;  // device, [rows][WeightRowBytes(format, cols)] bytes
  };
  // One paged-decode launch of PagedAttention (at most 65535 query tokens: grid.z).
  struct AttentionLaunch {
    int32_t first_token = 0;
    int32_t num_tokens = 0;
    PagedDecodePlan plan;
  };
  // PagedAttention's per-step device page tables, reused by every layer of a step.
  struct AttentionMemo {
    uint64_t generation = UINT64_MAX;
    std::vector<int32_t> key;  // the host inputs it was built from
    const int32_t* indptr = nullptr;    // device, [num_tokens + 1]
    const int32_t* last_len = nullptr;  // device, [num_tokens]
    const int32_t* indices = nullptr;   // device, [indptr[num_tokens]]
    std::vector<AttentionLaunch> launches;
    size_t workspace_bytes = 0;
  };
  // The tensor-core attention's per-step plan and device tables (bf16 KV, steps with a
  // multi-token sequence), reused by every layer of a step.
  struct PrefillMemo {
    uint64_t generation = UINT64_MAX;
    std::vector<int32_t> key;  // the host inputs it was built from
    PrefillPlan plan;
    const int32_t* qo_indptr = nullptr;         // device, [num_seqs + 1]
    const int32_t* kv_indptr = nullptr;         // device, [num_seqs + 1]
    const int32_t* kv_last_page_len = nullptr;  // device, [num_seqs]
    const int32_t* kv_indices = nullptr;        // device, [kv_indptr[num_seqs]]
    const int32_t* work_items = nullptr;        // device, [3 * plan.num_work_items()]
    size_t workspace_bytes = 0;
  };
  // Rope's per-step (cos, sin) table, reused by q and k of every layer.
  struct RopeMemo {
    uint64_t generation = UINT64_MAX;
    std::vector<int32_t> key;
    const float* table = nullptr;  // device, [num_tokens][rot_dim / 2][2]
  };
  struct UploadMemo {
    const void* host = nullptr;
    size_t num_bytes = 0;
    size_t offset = 0;
  };

  // Makes this backend's device current on the calling thread (the engine thread may not be
  // the thread that created the backend).
  void Bind() const { GLIMPSE_CUDA_CHECK(cudaSetDevice(device_)); }

  // Staging: per-step host arrays go through a pinned host buffer and an equally sized device
  // buffer, bump-allocated, one cudaMemcpyAsync per op on the stream. A region is never
  // rewritten before the stream has consumed it: the buffers restart only after a stream
  // synchronization (CopyToHost, or here when full). `generation_` counts restarts; device
  // pointers into staging (and the memos holding them) are valid within one generation.
  size_t ReserveStaging(size_t num_bytes);
  void RestartStaging(size_t min_capacity);
  // Uploads host bytes; returns their device copy (valid until the staging restarts). An
  // identical upload (same host pointer, size and bytes) in the same generation is reused:
  // the forward pass hands every layer the same per-step arrays.
  const void* Upload(const void* host, size_t num_bytes);
  // The Batch* copies: one cudaMemcpyBatchAsync of the copies' non-empty ones.
  void BatchCopy(std::span<const CopyOp> copies);
  // A host copy of device bytes [device, ...): Of(p) is where device pointer p into them
  // lies in it. Valid until the next staging use.
  struct HostCopy {
    const uint8_t* host;
    const uint8_t* device;
    template <typename T>
    const T* Of(const T* p) const {
      return reinterpret_cast<const T*>(host + (reinterpret_cast<const uint8_t*>(p) - device));
    }
  };
  // Copies device bytes [first, end) to the host in one copy through the pinned staging
  // buffer, and synchronizes (it ends the staging generation, as CopyToHost). Several small
  // copies to pageable memory would each wait for the stream in turn.
  HostCopy ReadBack(const void* first, const void* end);
  // Grows `buffer` to at least `num_bytes` (after draining the stream, which may still use it).
  void Reserve(DeviceBuffer<uint8_t>& buffer, size_t num_bytes);
  // Reserve for a buffer kept all zero between launches: zeroed (on the stream) when it grows.
  void ReserveZeroed(DeviceBuffer<uint8_t>& buffer, size_t num_bytes);

  const DeviceTable& TableFor(const MatrixView& table);
  const float* RopeTable(const kernels::RopeParams& p);
  const AttentionMemo& AttentionTables(const PagedAttentionParams& p, int32_t num_tokens);
  // PagedAttention per query token through the paged decode kernel (any KV dtype).
  void AttendPerToken(const PagedAttentionParams& params, int32_t num_tokens);
  // PagedAttention per sequence through the prefill attention kernel: the tensor-core kernel
  // over a bf16 cache, the fp32 CUDA-core kernel over an fp32 one; false, having done nothing,
  // when some sequence's KV length is not its last query position + 1.
  bool AttendPerSequence(const PagedAttentionParams& params, int32_t num_tokens);
  // x (rounded to bf16 into bf16_scratch, which must hold it) times W. The cast runs on
  // `stream`, the GEMM on the cuBLAS handle's stream: both are stream_.
  cudaError_t EnqueueMatMul(const float* x, int64_t num_rows, const CudaPackedMatrix& m,
                            float* y, uint8_t* bf16_scratch, cudaStream_t stream);
  // The GEMM alone: y = b Wᵀ with b = x as MatMul prepared it (fp32 x, or x rounded to bf16
  // for a bf16 W).
  cudaError_t EnqueueGemm(const void* b, int64_t num_rows, const CudaPackedMatrix& m, float* y);
  // One planned call of MatMuls (a GEMM or a strided-batched GEMM), b as for EnqueueGemm.
  cudaError_t EnqueueProjectionGemm(const void* b, int64_t num_rows, const ProjectionGemm& g);
  // Copies (F32, BF16) or converts (F16, Q8_0, on the device) `w` to `dst` as PackMatrix packs
  // it; synchronizes before returning.
  absl::Status PackInto(const MatrixView& w, void* dst);
  // merge_counters_ for a split attention launch that indexes `count` counters (decode:
  // sequences x kv heads; prefill: PrefillMergeCounters), or null (the chunks then merge in a
  // second launch) past its capacity.
  int32_t* MergeCounters(int64_t count) const {
    return count <= static_cast<int64_t>(merge_counters_.size()) ? merge_counters_.get() : nullptr;
  }
  // RmsNorm's launches; out == x normalizes a copy in norm_scratch (which must hold it).
  // out_bf16: null, or where the norm also writes out rounded to bf16.
  cudaError_t EnqueueRmsNorm(const float* x, const float* weight, int64_t num_rows, int64_t dim,
                             float eps, float* out, uint8_t* norm_scratch, cudaStream_t stream,
                             void* out_bf16 = nullptr);

  // ---- Decode graphs ("Decode graphs" in cuda_backend_graphs.cc). Record*: the op's launch in
  // a recorded step; false when the op does not fit the step (the recording is then abandoned
  // and the op, like the rest of the step, runs eagerly).
  bool RecordEmbedding(const DeviceTable& t, const int32_t* ids, int64_t num_ids, float* out);
  bool RecordRmsNorm(const float* x, const float* weight, int64_t num_rows, int64_t dim,
                     float eps, float* out);
  bool RecordMatMul(const float* x, int64_t num_rows, const CudaPackedMatrix& m, float* y);
  // MatMuls of matrices of one width and dtype (a bf16 MatMul too): for bf16 ones, one
  // recorded cast, unless it folds into x's producer (FoldCastIntoProducer); then the GEMMs as
  // PlanProjectionGemms joins them.
  bool RecordMatMuls(const float* x, int64_t num_rows, std::span<const PackedMatrix* const> ws,
                     std::span<float* const> ys);
  bool RecordRope(const kernels::RopeParams& params);
  bool RecordStoreKv(const KvStoreParams& params);
  bool RecordPagedAttention(const PagedAttentionParams& params);
  bool RecordSiluMul(const float* gate, const float* up, int64_t n, float* out);
  bool RecordAddInPlace(float* x, const float* y, int64_t n);
  bool RecordAddRmsNorm(float* x, const float* y, const float* weight, int64_t num_rows,
                        int64_t dim, float eps, float* out);
  bool RecordGatherRows(const float* x, int64_t dim, const int32_t* rows, int64_t num_rows,
                        float* out);
  bool RecordAllReduceSum(float* x, int64_t n);
  // The end of a step whose logits rows a reduction kernel brings back (ArgMaxRows,
  // TopKRows): a recording step's graph (or its recorded launches) runs now, as at
  // CopyToHost, and the caller launches the reduction after it, eagerly. Not in the graph: a
  // decode step's forward pass is the same whatever its rows ask of the logits (argmax; k,
  // normalizers and their temperatures), so one graph per (bucket, KV tier) serves every mix
  // of greedy, top-k, nucleus and logprob requests. Recorded into the graph, each mix was a
  // signature of its own and the cache (128 graphs) held several copies of every forward
  // pass, each captured after a warm-up step of its own. The cost is one eager launch a
  // step, queued behind the graph while it runs.
  void EndStepForReduction();
  // Bf16 copies (GraphStepState::bf16_producer). A producer op (RmsNorm, AddRmsNorm, SiluMul)
  // records its launch, then offers `with_copy`: the same launch, also writing its fp32
  // output `out` ([elements]) rounded to bf16 at the pointer it is given.
  using LaunchWithBf16Copy = std::function<cudaError_t(cudaStream_t stream, void* out_bf16)>;
  void OfferBf16Copy(const float* out, int64_t elements, LaunchWithBf16Copy with_copy);
  // A bf16 MatMul of x ([elements]) recorded right after the producer of x: amends the
  // producer's launch to write x's bf16 copy into graph_activations_bf16_, where the cast
  // would have put it, and returns true (the MatMul then records its GEMMs only).
  bool FoldCastIntoProducer(const float* x, int64_t elements);
  // Ends the recorded step: reserves what its launches need, then graphs_.Finish (a graph,
  // unless `eager_reason` is not kNumReasons).
  void FinishGraphStep(GraphEagerReason eager_reason);

  int device_;
  DType kv_dtype_;  // the KV cache's elements (CudaBackendOptions::kv_cache_dtype)
  // CudaBackendOptions::prefill_attention; AttendPerSequence runs it where the device,
  // head_dim and block size allow (PrefillKernelFor), else a fallback.
  PrefillKernel prefill_kernel_;
  bool prefill_fallback_logged_ = false;  // AttendPerSequence warned that it falls back
  // CudaBackendOptions::decode_attention over a bf16 cache, else kCudaCores: every
  // LaunchPagedDecode (AttendPerToken and the graphed decode step) runs it.
  DecodeKernel decode_kernel_;
  int compute_major_ = 0;                   // from Init
  size_t max_shared_memory_per_block_ = 0;  // sharedMemPerBlockOptin, from Init
  int64_t l2_cache_bytes_ = 0;              // l2CacheSize, from Init (prefill launch order)
  std::string name_;
  int num_sms_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;

  uint8_t* staging_host_ = nullptr;    // pinned, [staging_capacity_] bytes
  uint8_t* staging_device_ = nullptr;  // device, [staging_capacity_] bytes
  size_t staging_capacity_ = 0;
  size_t staging_used_ = 0;
  uint64_t generation_ = 0;
  std::vector<UploadMemo> upload_memos_;
  // BatchCopy's arrays, reused across calls.
  std::vector<void*> batch_dsts_;
  std::vector<const void*> batch_srcs_;
  std::vector<size_t> batch_sizes_;

  DeviceBuffer<uint8_t> activations_bf16_;  // MatMul: x rounded to bf16, [num_rows][cols]
  DeviceBuffer<uint8_t> attention_workspace_;  // split-KV partial states (paged decode)
  DeviceBuffer<uint8_t> norm_input_;        // RmsNorm in place: a copy of x
  DeviceBuffer<uint8_t> attention_bf16_;    // AttendPerSequence: bf16 q, then bf16 o
  // The same three for recorded (graph) steps only, so that an eager step that needs more
  // (a long prefill) never moves what captured graphs point at.
  DeviceBuffer<uint8_t> graph_activations_bf16_;
  DeviceBuffer<uint8_t> graph_attention_workspace_;
  DeviceBuffer<uint8_t> graph_norm_input_;
  // Split attention (decode, prefill) merges its chunks in the same launch (PagedDecodeParams::
  // merge_counters, PrefillAttentionParams::merge_counters): zeroed once at Init and left zero
  // by every launch, eager or graphed (which is why it never moves). MergeCounters.
  DeviceBuffer<int32_t> merge_counters_;
  // ArgMaxRows' device output: [rows] int32 columns, then [rows] fp32 values (ArgMaxOutput),
  // read back in one copy. Grown on demand.
  DeviceBuffer<uint8_t> argmax_rows_;
  // A split ArgMaxRows' partial maxima ([rows] uint64) and counters ([rows] uint32), all zero
  // between launches (each leaves them so). Grown on demand (ReserveZeroed).
  DeviceBuffer<uint8_t> argmax_split_;
  ArgMaxRowsParams ArgMaxOutput(const float* x, int64_t rows, int64_t cols) const {
    ArgMaxRowsParams p;
    p.x = x;
    p.num_rows = rows;
    p.cols = cols;
    p.index = reinterpret_cast<int32_t*>(argmax_rows_.get());
    p.value = reinterpret_cast<float*>(p.index + rows);
    return p;
  }
  // TopKRows' device output for k (TopKOutput): [rows] int32 counts, then [rows][k] int32
  // columns, [rows][k] fp32 values, [rows] fp32 row maxima, [rows] double exp sums (8-byte
  // aligned: they start at rows * 8 * (k + 1)) and [rows] double exp sums at temperature 1:
  // what a step asks for is one prefix, read back in one copy. Grown on demand; the
  // normalizers' temperatures are an input, staged.
  DeviceBuffer<uint8_t> topk_rows_;
  // A split TopKRows' chunk candidates and partial normalizers (TopKRowsWorkspaceBytes).
  DeviceBuffer<uint8_t> topk_workspace_;
  static size_t TopKRowBytes(int32_t k) { return 24 + size_t{8} * static_cast<size_t>(k); }
  // `normalizers`: the launch also writes the rows' softmax normalizers; `sums_t1` (only with
  // them) their exp sums at temperature 1 besides.
  TopKRowsParams TopKOutput(const float* x, int64_t rows, int64_t cols, int32_t k, bool normalizers,
                            bool sums_t1) const {
    const size_t pairs = static_cast<size_t>(rows) * static_cast<size_t>(k);
    TopKRowsParams p;
    p.x = x;
    p.num_rows = rows;
    p.cols = cols;
    p.k = k;
    p.count = reinterpret_cast<int32_t*>(topk_rows_.get());
    p.index = p.count + rows;
    p.value = reinterpret_cast<float*>(p.index + pairs);
    if (normalizers) {
      p.row_max = p.value + pairs;
      p.row_exp_sum = reinterpret_cast<double*>(p.row_max + rows);
      if (sums_t1) p.row_exp_sum_t1 = p.row_exp_sum + rows;
    }
    return p;
  }
  std::unordered_map<const void*, DeviceTable> tables_;  // key: MatrixView::data
  AttentionMemo attention_memo_;
  PrefillMemo prefill_memo_;
  int64_t tensor_core_attention_calls_ = 0;  // AttendPerSequence launches, bf16 (Counters())
  int64_t wide_attention_calls_ = 0;         // those on the 128-row mma.sync variant
  int64_t wgmma_attention_calls_ = 0;        // those on the wgmma variant
  int64_t pipelined_attention_calls_ = 0;    // those on the pipelined wgmma variant
  int64_t pipelined_128_attention_calls_ = 0;  // those on its 128-key-tile variant
  int64_t mma_decode_attention_calls_ = 0;   // PagedAttention calls on the mma decode kernel
  int64_t fp32_tiled_attention_calls_ = 0;   // AttendPerSequence launches over an fp32 cache
  int64_t bf16_casts_folded_ = 0;  // recorded MatMul casts folded into their input's producer
  int64_t rope_pairs_fused_ = 0;   // recorded RoPEs of k that joined q's launch
  int64_t kv_appends_fused_ = 0;   // recorded KV appends that joined q's and k's RoPE launch
  int64_t gemm_calls_joined_ = 0;  // cuBLAS calls MatMuls saved (PlanProjectionGemms)
  RopeMemo rope_memo_;
  // Tensor parallelism: this backend is rank tp_rank_ of tp_group_ (shared by the group's
  // backends; a group of one for a lone GPU). Destroyed after the stream is drained.
  std::shared_ptr<TensorParallelGroup> tp_group_;
  int tp_rank_ = 0;

  // CUDA graphs of decode steps.
  DecodeGraphRecorder graphs_;
  bool in_step_ = false;  // between BeginForward and EndForward
  HostWork* host_work_ = nullptr;  // OverlapHostWork's, until run or EndForward
  // cuBLAS's workspace, set explicitly: a captured GEMM must use memory that stays put, and
  // eager and captured GEMMs then choose their algorithms under the same workspace.
  DeviceBuffer<uint8_t> cublas_workspace_;
  // The recorded step: what its launches need of the buffers above (reserved before they run)
  // and the per-step tables every layer shares (arena offsets).
  struct GraphStepState {
    size_t bf16_bytes = 0;
    size_t norm_bytes = 0;
    size_t workspace_bytes = 0;
    std::vector<int32_t> rope_key;
    size_t rope_offset = 0;     // fp32 [bucket][rot_dim / 2][2]
    std::vector<int32_t> attention_key;
    size_t tables_offset = 0;   // int32 [bucket + 1] indptr, then [bucket] last page lengths
    size_t indices_offset = 0;  // int32 [bucket x capacity pages], the used prefix uploaded
    PagedDecodePlan attention_plan;
    // The last recorded launch when it can also write the bf16 rounding of its fp32 output
    // (OfferBf16Copy): a bf16 MatMul of that output recorded next folds its cast into it, one
    // launch fewer per norm and SiluMul of a decode step. Valid only while `launch` is the
    // last one recorded (any later op records a launch or ends the step).
    struct Bf16Producer {
      size_t launch = 0;  // its index among the step's launches, plus one; 0 = none
      const float* out = nullptr;
      int64_t elements = 0;
      LaunchWithBf16Copy with_copy;
    } bf16_producer;
    // The last recorded launch when it is a RoPE: of one tensor, a RoPE of another tensor of
    // the same tokens and table recorded next (k after q) joins it (x2); of q and k, the KV
    // append of k and v recorded next joins it (RopeKvAppend).
    struct RopeLaunch {
      size_t launch = 0;       // its index among the step's launches, plus one; 0 = none
      RopeTableParams params;  // cos_sin unset: the arena's address is resolved at run time
      size_t table_offset = 0;
    } last_rope;
  };
  GraphStepState graph_step_;
};

}  // namespace glimpse::kernels::cuda::internal

#endif  // GLIMPSE_KERNELS_CUDA_BACKEND_CUDA_BACKEND_IMPL_H_
