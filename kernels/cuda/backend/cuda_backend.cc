#include "kernels/cuda/backend/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/status_macros.h"
#include "kernels/cuda/backend/decode_graphs.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/kv_append.h"
#include "kernels/cuda/paged_decode_attention.h"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/cuda/rope_table.h"
#include "kernels/cuda/tensor_parallel.h"
#include "kernels/cuda/weight_convert.h"
#include "spdlog/spdlog.h"

namespace glimpse::kernels::cuda {
namespace {

// ---- Error handling -------------------------------------------------------------------------
// Backend ops return void: a failed CUDA call or launch in the middle of a forward pass cannot
// be recovered (the stream's work is lost and the context may be poisoned), so it is logged and
// the process aborts through the project's CHECK. Kernel execution errors surface at the next
// synchronizing call (CopyToHost, Free); run with CUDA_LAUNCH_BLOCKING=1 to pin them down.
void CheckCuda(cudaError_t err, const char* expr, const char* file, int line) {
  if (err == cudaSuccess) return;
  spdlog::critical("CUDA backend: {} failed at {}:{}: {} ({}); aborting", expr, file, line,
                   cudaGetErrorName(err), cudaGetErrorString(err));
  CHECK(err == cudaSuccess);
}

#define GLIMPSE_CUDA_CHECK(expr) CheckCuda((expr), #expr, __FILE__, __LINE__)

// Logs `message` and aborts: for violated preconditions of an op (a bug in the caller).
[[noreturn]] void Fail(const std::string& message) {
  spdlog::critical("CUDA backend: {}", message);
  CHECK(false);
  std::abort();  // CHECK(false) does not return; this tells the compiler.
}

// For creation and PackMatrix, which can report errors: ResourceExhausted for out of memory.
absl::Status CudaStatus(cudaError_t err, const std::string& what) {
  if (err == cudaSuccess) return absl::OkStatus();
  const std::string message =
      absl::StrCat(what, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")");
  if (err == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

constexpr size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

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

WeightFormat ToFormat(WeightType type) {
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

RopeStyle ToCudaRopeStyle(kernels::RopeStyle style) {
  switch (style) {
    case kernels::RopeStyle::kNormal:
      return RopeStyle::kNormal;
    case kernels::RopeStyle::kNeox:
      return RopeStyle::kNeox;
  }
  return RopeStyle::kNormal;
}

// ---- Packed weights -------------------------------------------------------------------------
// A weight matrix on the device, row-major W[rows][cols] exactly as in the file (no
// re-tiling: cuBLAS reads it as the column-major K x N matrix Wᵀ; see MatMul), fp32 for F32
// weights and bf16 for every other format. Owns its device allocation.
class CudaPackedMatrix final : public PackedMatrix {
 public:
  CudaPackedMatrix(int device, int64_t rows, int64_t cols, bool bf16, void* data)
      : device_(device), rows_(rows), cols_(cols), bf16_(bf16), data_(data) {}
  ~CudaPackedMatrix() override {
    // cudaFree synchronizes the device, so no enqueued matmul still reads the weights.
    if (cudaSetDevice(device_) != cudaSuccess || cudaFree(data_) != cudaSuccess) {
      spdlog::error("CUDA backend: freeing a packed [{} x {}] matrix failed", rows_, cols_);
    }
  }
  CudaPackedMatrix(const CudaPackedMatrix&) = delete;
  CudaPackedMatrix& operator=(const CudaPackedMatrix&) = delete;

  int64_t rows() const override { return rows_; }
  int64_t cols() const override { return cols_; }
  size_t num_bytes() const override {
    return static_cast<size_t>(rows_) * cols_ * (bf16_ ? 2 : 4);
  }
  bool bf16() const { return bf16_; }
  const void* data() const { return data_; }

 private:
  int device_;
  int64_t rows_;
  int64_t cols_;
  bool bf16_;
  void* data_;  // device, [rows][cols], fp32 or bf16
};

// ---- The backend ----------------------------------------------------------------------------
class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, std::shared_ptr<TensorParallelGroup> tp_group, int tp_rank,
              const DecodeGraphRecorder::Options& graph_options)
      : device_(device),
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
  void CopyToBackend(void* dst, const void* host_src, size_t num_bytes) override;
  void CopyToHost(void* host_dst, const void* src, size_t num_bytes) override;
  absl::StatusOr<std::unique_ptr<PackedMatrix>> PackMatrix(const MatrixView& w) override;
  void MatMul(const float* x, int64_t num_rows, const PackedMatrix& w, float* y) override;
  void EmbeddingLookup(const MatrixView& table, const int32_t* ids, int64_t num_ids,
                       float* out) override;
  void RmsNorm(const float* x, const float* weight, int64_t num_rows, int64_t dim, float eps,
               float* out) override;
  void Rope(const kernels::RopeParams& params) override;
  void StoreKv(const KvStoreParams& params) override;
  void PagedAttention(const PagedAttentionParams& params) override;
  void SiluMul(const float* gate, const float* up, int64_t n, float* out) override;
  void AddInPlace(float* x, const float* y, int64_t n) override;
  void GatherRows(const float* x, int64_t dim, const int32_t* rows, int64_t num_rows,
                  float* out) override;
  void AllReduceSum(float* x, int64_t n) override;
  // CUDA graphs of decode steps ("Decode graphs" below, decode_graphs.h).
  ForwardPlan BeginForward(const ForwardShape& shape) override;
  void EndForward() override;
  std::vector<BackendCounter> Counters() const override;

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
  // Grows `buffer` to at least `num_bytes` (after draining the stream, which may still use it).
  void Reserve(DeviceBuffer<uint8_t>& buffer, size_t num_bytes);

  const DeviceTable& TableFor(const MatrixView& table);
  const float* RopeTable(const kernels::RopeParams& p);
  const AttentionMemo& AttentionTables(const PagedAttentionParams& p, int32_t num_tokens);
  // x (rounded to bf16 into activations_bf16_, which must hold it) times W. The cast runs on
  // `stream`, the GEMM on the cuBLAS handle's stream: both are stream_.
  cudaError_t EnqueueMatMul(const float* x, int64_t num_rows, const CudaPackedMatrix& m,
                            float* y, cudaStream_t stream);
  // RmsNorm's launches; out == x normalizes a copy in norm_input_ (which must hold it).
  cudaError_t EnqueueRmsNorm(const float* x, const float* weight, int64_t num_rows,
                             int64_t dim, float eps, float* out, cudaStream_t stream);

  // ---- Decode graphs ("Decode graphs" below). Record*: the op's launch in a recorded step;
  // false when the op does not fit the step (the recording is then abandoned and the op, like
  // the rest of the step, runs eagerly).
  bool RecordEmbedding(const DeviceTable& t, const int32_t* ids, int64_t num_ids, float* out);
  bool RecordRmsNorm(const float* x, const float* weight, int64_t num_rows, int64_t dim,
                     float eps, float* out);
  bool RecordMatMul(const float* x, int64_t num_rows, const CudaPackedMatrix& m, float* y);
  bool RecordRope(const kernels::RopeParams& params);
  bool RecordStoreKv(const KvStoreParams& params);
  bool RecordPagedAttention(const PagedAttentionParams& params);
  bool RecordSiluMul(const float* gate, const float* up, int64_t n, float* out);
  bool RecordAddInPlace(float* x, const float* y, int64_t n);
  bool RecordGatherRows(const float* x, int64_t dim, const int32_t* rows, int64_t num_rows,
                        float* out);
  bool RecordAllReduceSum(float* x, int64_t n);
  // Ends the recorded step: reserves what its launches need, then graphs_.Finish (a graph,
  // unless `eager_reason` is not kNumReasons).
  void FinishGraphStep(GraphEagerReason eager_reason);

  int device_;
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

  DeviceBuffer<uint8_t> activations_bf16_;  // MatMul: x rounded to bf16, [num_rows][cols]
  DeviceBuffer<uint8_t> attention_workspace_;  // split-KV partial states (paged decode)
  DeviceBuffer<uint8_t> norm_input_;        // RmsNorm in place: a copy of x
  std::unordered_map<const void*, DeviceTable> tables_;  // key: MatrixView::data
  AttentionMemo attention_memo_;
  RopeMemo rope_memo_;
  // Tensor parallelism: this backend is rank tp_rank_ of tp_group_ (shared by the group's
  // backends; a group of one for a lone GPU). Destroyed after the stream is drained.
  std::shared_ptr<TensorParallelGroup> tp_group_;
  int tp_rank_ = 0;

  // CUDA graphs of decode steps.
  DecodeGraphRecorder graphs_;
  bool in_step_ = false;  // between BeginForward and EndForward
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
  };
  GraphStepState graph_step_;
};

constexpr size_t kInitialStagingBytes = size_t{1} << 20;
constexpr size_t kStagingAlign = 256;
// Host -> device copies up to this size go through staging (no wait); larger ones wait.
constexpr size_t kStagedCopyLimit = size_t{256} << 10;
constexpr size_t kMaxUploadMemos = 16;
// cuBLAS's recommended workspace on Hopper (4 MiB suffices before it).
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;

absl::Status CudaBackend::Init() {
  RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
  cudaDeviceProp prop;
  RETURN_IF_ERROR(CudaStatus(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties"));
  if (prop.major < 8) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no CUDA device: device ", device_, " (", prop.name, ") has compute capability ",
        prop.major, ".", prop.minor, ", but glimpse's kernels are built for sm_80 and sm_90a "
        "(8.0 or newer); use --device=cpu"));
  }
  num_sms_ = prop.multiProcessorCount;
  name_ = absl::StrCat("cuda (", prop.name, ", device ", device_, ", sm_", prop.major,
                       prop.minor, ", ", num_sms_, " SMs, ",
                       prop.totalGlobalMem / (size_t{1} << 30), " GiB)");
  RETURN_IF_ERROR(CudaStatus(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
                             "cudaStreamCreateWithFlags"));
  if (cublasCreate(&cublas_) != CUBLAS_STATUS_SUCCESS) {
    cublas_ = nullptr;
    return absl::InternalError("CUDA backend: cublasCreate failed");
  }
  if (cublasSetStream(cublas_, stream_) != CUBLAS_STATUS_SUCCESS ||
      cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH) != CUBLAS_STATUS_SUCCESS) {
    return absl::InternalError("CUDA backend: configuring the cuBLAS handle failed");
  }
  // After cublasSetStream, which resets the workspace to cuBLAS's own pool.
  RETURN_IF_ERROR(CudaStatus(cublas_workspace_.Allocate(kCublasWorkspaceBytes),
                             "allocating the cuBLAS workspace"));
  if (cublasSetWorkspace(cublas_, cublas_workspace_.get(), cublas_workspace_.size()) !=
      CUBLAS_STATUS_SUCCESS) {
    return absl::InternalError("CUDA backend: cublasSetWorkspace failed");
  }
  RETURN_IF_ERROR(CudaStatus(cudaHostAlloc(reinterpret_cast<void**>(&staging_host_),
                                           kInitialStagingBytes, cudaHostAllocDefault),
                             "allocating pinned staging memory"));
  RETURN_IF_ERROR(CudaStatus(cudaMalloc(reinterpret_cast<void**>(&staging_device_),
                                        kInitialStagingBytes),
                             "allocating device staging memory"));
  staging_capacity_ = kInitialStagingBytes;
  // Prove that this binary's kernels run here (an architecture without a matching cubin fails
  // with cudaErrorNoKernelImageForDevice at the first launch, better now than mid-forward).
  const cudaError_t probe = LaunchCastF32ToBf16(reinterpret_cast<const float*>(staging_device_),
                                                staging_device_ + 256, 2, stream_);
  const cudaError_t sync = cudaStreamSynchronize(stream_);
  if (probe != cudaSuccess || sync != cudaSuccess) {
    const cudaError_t err = probe != cudaSuccess ? probe : sync;
    return absl::FailedPreconditionError(absl::StrCat(
        "no CUDA device: glimpse's kernels cannot run on device ", device_, " (", prop.name,
        ", sm_", prop.major, prop.minor, "): ", cudaGetErrorName(err), " (",
        cudaGetErrorString(err), "); use --device=cpu"));
  }
  return absl::OkStatus();
}

CudaBackend::~CudaBackend() {
  if (const std::string graphs = graphs_.Summary(); !graphs.empty()) {
    spdlog::info("CUDA backend: decode graphs: {}", graphs);
  }
  if (cudaSetDevice(device_) != cudaSuccess) return;
  if (stream_ != nullptr && cudaStreamSynchronize(stream_) != cudaSuccess) {
    spdlog::error("CUDA backend: the stream failed while shutting down");
  }
  for (auto& [host, table] : tables_) (void)cudaFree(table.data);
  activations_bf16_.Reset();
  attention_workspace_.Reset();
  norm_input_.Reset();
  if (staging_host_ != nullptr) (void)cudaFreeHost(staging_host_);
  if (staging_device_ != nullptr) (void)cudaFree(staging_device_);
  if (cublas_ != nullptr) (void)cublasDestroy(cublas_);
  if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
}

// ---- Staging --------------------------------------------------------------------------------

void CudaBackend::RestartStaging(size_t min_capacity) {
  GLIMPSE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  staging_used_ = 0;
  ++generation_;
  upload_memos_.clear();
  if (min_capacity <= staging_capacity_) return;
  const size_t capacity = std::max(RoundUp(min_capacity, kStagingAlign), 2 * staging_capacity_);
  GLIMPSE_CUDA_CHECK(cudaFreeHost(staging_host_));
  GLIMPSE_CUDA_CHECK(cudaFree(staging_device_));
  staging_host_ = nullptr;
  staging_device_ = nullptr;
  GLIMPSE_CUDA_CHECK(
      cudaHostAlloc(reinterpret_cast<void**>(&staging_host_), capacity, cudaHostAllocDefault));
  GLIMPSE_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&staging_device_), capacity));
  staging_capacity_ = capacity;
}

size_t CudaBackend::ReserveStaging(size_t num_bytes) {
  const size_t size = RoundUp(std::max<size_t>(num_bytes, 1), kStagingAlign);
  if (staging_used_ + size > staging_capacity_) RestartStaging(size);
  const size_t offset = staging_used_;
  staging_used_ += size;
  return offset;
}

const void* CudaBackend::Upload(const void* host, size_t num_bytes) {
  for (const UploadMemo& m : upload_memos_) {
    if (m.host == host && m.num_bytes == num_bytes &&
        std::memcmp(host, staging_host_ + m.offset, num_bytes) == 0) {
      return staging_device_ + m.offset;
    }
  }
  const size_t offset = ReserveStaging(num_bytes);
  std::memcpy(staging_host_ + offset, host, num_bytes);
  GLIMPSE_CUDA_CHECK(cudaMemcpyAsync(staging_device_ + offset, staging_host_ + offset, num_bytes,
                                     cudaMemcpyHostToDevice, stream_));
  if (upload_memos_.size() == kMaxUploadMemos) upload_memos_.erase(upload_memos_.begin());
  upload_memos_.push_back({host, num_bytes, offset});
  return staging_device_ + offset;
}

void CudaBackend::Reserve(DeviceBuffer<uint8_t>& buffer, size_t num_bytes) {
  if (buffer.size() >= num_bytes) return;
  GLIMPSE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  GLIMPSE_CUDA_CHECK(buffer.Allocate(std::max(num_bytes, buffer.size() * 3 / 2)));
}

// ---- Memory ---------------------------------------------------------------------------------

void* CudaBackend::Allocate(size_t num_bytes) {
  Bind();
  void* ptr = nullptr;
  // cudaMalloc memory is 256-byte aligned (the contract asks for 64).
  const cudaError_t err = cudaMalloc(&ptr, std::max<size_t>(num_bytes, 1));
  if (err != cudaSuccess) {
    size_t free_bytes = 0;
    size_t total_bytes = 0;
    (void)cudaMemGetInfo(&free_bytes, &total_bytes);
    Fail(absl::StrCat("allocating ", num_bytes, " bytes of device memory failed: ",
                      cudaGetErrorString(err), " (", free_bytes >> 20, " MiB free of ",
                      total_bytes >> 20, " MiB)"));
  }
  return ptr;
}

void CudaBackend::Free(void* ptr) {
  if (ptr == nullptr) return;
  Bind();
  // Recorded launches may use the buffer: run them first (and the rest of the step eagerly).
  if (graphs_.recording() && !graphs_.empty()) FinishGraphStep(GraphEagerReason::kMidStepSync);
  // Work enqueued before may still read or write the buffer.
  GLIMPSE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  GLIMPSE_CUDA_CHECK(cudaFree(ptr));
}

void CudaBackend::CopyToBackend(void* dst, const void* host_src, size_t num_bytes) {
  if (num_bytes == 0) return;
  Bind();
  // Ordered after the recorded launches, which therefore run now (the rest of the step too).
  if (graphs_.recording() && !graphs_.empty()) FinishGraphStep(GraphEagerReason::kMidStepSync);
  if (num_bytes <= kStagedCopyLimit) {
    // Through pinned staging: ordered on the stream, no wait, and the caller may reuse
    // host_src as soon as this returns.
    const size_t offset = ReserveStaging(num_bytes);
    std::memcpy(staging_host_ + offset, host_src, num_bytes);
    GLIMPSE_CUDA_CHECK(cudaMemcpyAsync(dst, staging_host_ + offset, num_bytes,
                                       cudaMemcpyHostToDevice, stream_));
    return;
  }
  // Large copies (weights, swapped-in KV): straight from the caller's memory, then wait, so
  // that host_src may be reused or freed on return whatever kind of memory it is.
  GLIMPSE_CUDA_CHECK(
      cudaMemcpyAsync(dst, host_src, num_bytes, cudaMemcpyHostToDevice, stream_));
  GLIMPSE_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::CopyToHost(void* host_dst, const void* src, size_t num_bytes) {
  Bind();
  // The end of a recorded step: its graph (or launches) run before the copy.
  if (graphs_.recording()) FinishGraphStep(GraphEagerReason::kNumReasons);
  if (num_bytes > 0) {
    GLIMPSE_CUDA_CHECK(
        cudaMemcpyAsync(host_dst, src, num_bytes, cudaMemcpyDeviceToHost, stream_));
  }
  // Synchronizes (the Backend contract: the data is on the host on return) and, with the
  // stream drained, recycles the staging buffers for the next step.
  RestartStaging(0);
}

// ---- Weights and matmul ---------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<PackedMatrix>> CudaBackend::PackMatrix(const MatrixView& w) {
  Bind();
  if (graphs_.recording() && !graphs_.empty()) FinishGraphStep(GraphEagerReason::kMidStepSync);
  if (w.data == nullptr || w.rows <= 0 || w.cols <= 0 || w.rows > INT_MAX || w.cols > INT_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot pack a [", w.rows, " x ", w.cols, "] matrix on the device"));
  }
  if (w.type == WeightType::kQ8_0 && w.cols % kQ8_0BlockElements != 0) {
    return absl::InvalidArgumentError(absl::StrCat("Q8_0 matrix has ", w.cols,
                                                   " columns, not a multiple of ",
                                                   kQ8_0BlockElements));
  }
  const bool bf16 = w.type != WeightType::kF32;
  const size_t elements = static_cast<size_t>(w.rows) * static_cast<size_t>(w.cols);
  const size_t packed_bytes = elements * (bf16 ? 2 : 4);
  const std::string what = absl::StrCat("packing a [", w.rows, " x ", w.cols, "] matrix (",
                                        packed_bytes >> 20, " MiB) on the device");
  void* data = nullptr;
  RETURN_IF_ERROR(CudaStatus(cudaMalloc(&data, packed_bytes), what));
  auto packed = std::make_unique<CudaPackedMatrix>(device_, w.rows, w.cols, bf16, data);
  if (w.type == WeightType::kF32 || w.type == WeightType::kBF16) {
    // Stored as used: copy verbatim.
    RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(data, w.data, packed_bytes, cudaMemcpyHostToDevice, stream_), what));
  } else {
    // F16 and Q8_0: the file's bytes to the device, converted there to bf16.
    const WeightFormat format = ToFormat(w.type);
    const size_t raw_bytes = static_cast<size_t>(w.rows) * WeightRowBytes(format, w.cols);
    DeviceBuffer<uint8_t> raw;
    RETURN_IF_ERROR(CudaStatus(raw.Allocate(raw_bytes), what));
    RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(raw.get(), w.data, raw_bytes, cudaMemcpyHostToDevice, stream_), what));
    WeightsToBf16Params p;
    p.format = format;
    p.src = raw.get();
    p.dst = data;
    p.rows = w.rows;
    p.cols = w.cols;
    RETURN_IF_ERROR(CudaStatus(LaunchWeightsToBf16(p, stream_), what));
    RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream_), what));  // before raw is freed
  }
  RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream_), what));
  return std::unique_ptr<PackedMatrix>(std::move(packed));
}

void CudaBackend::MatMul(const float* x, int64_t num_rows, const PackedMatrix& w, float* y) {
  if (num_rows == 0) return;
  Bind();
  const auto& m = static_cast<const CudaPackedMatrix&>(w);
  if (num_rows > INT_MAX) Fail(absl::StrCat("MatMul with ", num_rows, " rows"));
  if (graphs_.recording() && RecordMatMul(x, num_rows, m, y)) return;
  if (m.bf16()) Reserve(activations_bf16_, static_cast<size_t>(num_rows) * m.cols() * 2);
  GLIMPSE_CUDA_CHECK(EnqueueMatMul(x, num_rows, m, y, stream_));
}

cudaError_t CudaBackend::EnqueueMatMul(const float* x, int64_t num_rows,
                                       const CudaPackedMatrix& m, float* y,
                                       cudaStream_t stream) {
  // cuBLAS is column-major. Row-major buffers read column-major are transposed:
  //   W[N][K] (ld K)  is the K x N matrix Wᵀ;   x[M][K] (ld K) is xᵀ (K x M);
  //   y[M][N] (ld N)  is yᵀ (N x M).
  // y = x Wᵀ  <=>  yᵀ = W xᵀ = op(A) B  with A = the W buffer, op(A) = Aᵀ (CUBLAS_OP_T) = W,
  // B = the x buffer (CUBLAS_OP_N); m = N, n = M, k = K; lda = ldb = K, ldc = N.
  const int n_out = static_cast<int>(m.rows());
  const int k = static_cast<int>(m.cols());
  const int rows = static_cast<int>(num_rows);
  const void* b = x;
  cudaDataType_t ab_type = CUDA_R_32F;
  if (m.bf16()) {
    // bf16 x bf16 -> fp32 with fp32 accumulation: x is rounded to bf16 first.
    const size_t elements = static_cast<size_t>(num_rows) * static_cast<size_t>(k);
    const cudaError_t err = LaunchCastF32ToBf16(x, activations_bf16_.get(),
                                                static_cast<int64_t>(elements), stream);
    if (err != cudaSuccess) return err;
    b = activations_bf16_.get();
    ab_type = CUDA_R_16BF;
  }
  const float alpha = 1.0f;
  const float beta = 0.0f;
  // CUBLAS_COMPUTE_32F with the default math mode: true fp32 products and sums (no TF32),
  // which the fp32 path's 1e-5 agreement with the CPU backend relies on.
  const cublasStatus_t status =
      cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, n_out, rows, k, &alpha, m.data(), ab_type,
                   k, b, ab_type, k, &beta, y, CUDA_R_32F, n_out, CUBLAS_COMPUTE_32F,
                   CUBLAS_GEMM_DEFAULT);
  if (status != CUBLAS_STATUS_SUCCESS) {
    spdlog::critical("CUDA backend: cublasGemmEx of [{} x {}] x [{} x {}]ᵀ failed: {} ({})", rows,
                     k, n_out, k, cublasGetStatusName(status), cublasGetStatusString(status));
    return cudaErrorUnknown;
  }
  return cudaSuccess;
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
  GLIMPSE_CUDA_CHECK(EnqueueRmsNorm(x, weight, num_rows, dim, eps, out, stream_));
}

cudaError_t CudaBackend::EnqueueRmsNorm(const float* x, const float* weight, int64_t num_rows,
                                        int64_t dim, float eps, float* out,
                                        cudaStream_t stream) {
  const size_t num_bytes = static_cast<size_t>(num_rows) * static_cast<size_t>(dim) * 4;
  const float* input = x;
  if (out == x) {
    // The fused kernel's out may not alias its input (it re-reads the input after the
    // reduction): normalize a copy.
    const cudaError_t err =
        cudaMemcpyAsync(norm_input_.get(), x, num_bytes, cudaMemcpyDeviceToDevice, stream);
    if (err != cudaSuccess) return err;
    input = reinterpret_cast<const float*>(norm_input_.get());
  }
  AddRmsNormParams p;
  p.dtype = DType::kF32;
  p.x = nullptr;  // no residual add: the kernel then only reads `residual`
  p.residual = const_cast<float*>(input);
  p.weight = weight;
  p.out = out;
  p.num_rows = static_cast<int32_t>(num_rows);
  p.dim = static_cast<int32_t>(dim);
  p.eps = eps;
  return LaunchAddRmsNorm(p, stream);
}

const float* CudaBackend::RopeTable(const kernels::RopeParams& p) {
  std::vector<int32_t> key(p.positions, p.positions + p.num_tokens);
  int32_t base_bits;
  std::memcpy(&base_bits, &p.freq_base, sizeof(base_bits));
  key.push_back(p.rot_dim);
  key.push_back(base_bits);
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
  RopeTableParams p;
  p.x = params.x;
  p.num_tokens = params.num_tokens;
  p.num_heads = params.num_heads;
  p.head_dim = params.head_dim;
  p.rot_dim = params.rot_dim;
  p.style = ToCudaRopeStyle(params.style);
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
  const KvLayerView& kv = params.kv;
  KvAppendParams p;
  p.dtype = DType::kF32;
  p.k = params.k;
  p.v = params.v;
  p.token_stride = static_cast<int64_t>(kv.num_kv_heads) * kv.head_dim;
  p.slot_mapping =
      static_cast<const int32_t*>(Upload(params.slots, params.num_tokens * sizeof(int32_t)));
  p.k_cache = kv.k;
  p.v_cache = kv.v;
  p.num_tokens = params.num_tokens;
  p.num_kv_heads = kv.num_kv_heads;
  p.page_size = kv.block_size;
  p.head_dim = kv.head_dim;
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
// which handles prefill chunks, decode tokens and mixed batches alike, on the fp32 KV cache
// (the tensor-core prefill kernel is bf16-only; TODO(#5): use it with the bf16 KV option). A
// prefill chunk of T tokens re-reads its prefix T times: fine for decode-heavy serving, slow
// for long prompts.
const CudaBackend::AttentionMemo& CudaBackend::AttentionTables(const PagedAttentionParams& p,
                                                               int32_t num_tokens) {
  const int32_t block_size = p.kv.block_size;
  const int32_t num_pages = p.kv_indptr[p.num_seqs];
  std::vector<int32_t> key;
  key.reserve(5 + 2 * (p.num_seqs + 1) + num_tokens + num_pages);
  key.push_back(p.num_seqs);
  key.push_back(block_size);
  key.push_back(p.kv.num_kv_heads);
  key.push_back(p.num_heads);  // the plan's workspace size depends on the heads and head_dim
  key.push_back(p.kv.head_dim);
  key.insert(key.end(), p.query_start, p.query_start + p.num_seqs + 1);
  key.insert(key.end(), p.kv_indptr, p.kv_indptr + p.num_seqs + 1);
  key.insert(key.end(), p.positions, p.positions + num_tokens);
  key.insert(key.end(), p.kv_indices, p.kv_indices + num_pages);
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
  const KvLayerView& kv = params.kv;
  const bool supported = (kv.head_dim == 32 || kv.head_dim == 64 || kv.head_dim == 128) &&
                         kv.num_kv_heads > 0 && params.num_heads % kv.num_kv_heads == 0 &&
                         params.num_heads / kv.num_kv_heads >= 1 &&
                         params.num_heads / kv.num_kv_heads <= 8;
  if (!supported) {
    // TODO(#5): report this when the model loads rather than at its first step.
    Fail(absl::StrCat("PagedAttention supports head_dim 32, 64 or 128 and 1 to 8 query heads "
                      "per KV head; this model has head_dim ", kv.head_dim, ", ",
                      params.num_heads, " query heads and ", kv.num_kv_heads,
                      " KV heads (use --device=cpu)"));
  }
  if (graphs_.recording() && RecordPagedAttention(params)) return;
  const AttentionMemo& memo = AttentionTables(params, num_tokens);
  Reserve(attention_workspace_, memo.workspace_bytes);
  const int64_t row_floats = static_cast<int64_t>(params.num_heads) * kv.head_dim;
  for (const AttentionLaunch& launch : memo.launches) {
    PagedDecodeParams p;
    p.dtype = DType::kF32;
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
    GLIMPSE_CUDA_CHECK(LaunchPagedDecode(p, stream_));
  }
}

// ---- Decode graphs --------------------------------------------------------------------------
// A decode step of <= 64 sequences (DecodeGraphRecorder::Ineligibility) is recorded between
// BeginForward and CopyToHost / EndForward instead of run: every op pads its rows to the
// step's bucket, writes its host arrays into the graph arena (fixed offsets), and appends its
// launch with the signature words of what the launch bakes in (decode_graphs.h). Padded rows
// are harmless: token id 0, RoPE position 0, KV slot -1 (kv_append skips it), an empty page
// table (attention writes o = 0) and logits row 0; only the step's own rows reach the caller.
// The attention plan is made for `bucket` sequences of the step's KV capacity tier, so it
// does not change while sequences grow within the tier.
//
// Launches read the arena and this backend's growable buffers (activations_bf16_,
// norm_input_, attention_workspace_) when they run, through `this`: Finish reserves those
// first and adds their addresses to the signature, so a regrown buffer means a new capture.

// Signature op tags (the first word of each op's words).
enum class GraphOp : uint32_t {
  kEmbedding = 1,
  kRmsNorm,
  kMatMul,
  kRope,
  kStoreKv,
  kAttention,
  kSiluMul,
  kAddInPlace,
  kGatherRows,
  kAllReduceSum,
};

ForwardPlan CudaBackend::BeginForward(const ForwardShape& shape) {
  Bind();
  if (in_step_) Fail("BeginForward inside a step: steps do not nest");
  in_step_ = true;
  const GraphEagerReason reason = graphs_.Ineligibility(shape);
  if (reason != GraphEagerReason::kNumReasons) {
    graphs_.CountEager(reason);
    return {};
  }
  graph_step_ = GraphStepState{};
  graphs_.Begin(shape);
  ForwardPlan plan;
  plan.padded_rows = graphs_.bucket();
  return plan;
}

void CudaBackend::EndForward() {
  Bind();
  if (graphs_.recording()) FinishGraphStep(GraphEagerReason::kNumReasons);
  in_step_ = false;
}

std::vector<BackendCounter> CudaBackend::Counters() const { return graphs_.Counters(); }

void CudaBackend::FinishGraphStep(GraphEagerReason eager_reason) {
  // Outside capture: growing a buffer drains the stream and reallocates it.
  Reserve(activations_bf16_, graph_step_.bf16_bytes);
  Reserve(norm_input_, graph_step_.norm_bytes);
  Reserve(attention_workspace_, graph_step_.workspace_bytes);
  const std::vector<uint64_t> extra = {
      DecodeGraphRecorder::ToWord(activations_bf16_.get()),
      DecodeGraphRecorder::ToWord(norm_input_.get()),
      DecodeGraphRecorder::ToWord(attention_workspace_.get()),
      DecodeGraphRecorder::ToWord(attention_workspace_.size()),
      DecodeGraphRecorder::ToWord(cublas_workspace_.get()),
      DecodeGraphRecorder::ToWord(stream_),
  };
  GLIMPSE_CUDA_CHECK(graphs_.Finish(stream_, extra, eager_reason));
  graph_step_ = GraphStepState{};
}

bool CudaBackend::RecordEmbedding(const DeviceTable& t, const int32_t* ids, int64_t num_ids,
                                  float* out) {
  int64_t rows = 0;
  if (!graphs_.PaddedRows(num_ids, &rows)) {
    FinishGraphStep(GraphEagerReason::kUnexpectedShape);
    return false;
  }
  // Padded ids are 0, a valid row: the padded rows compute finite garbage.
  const size_t ids_offset = graphs_.ArenaPut(ids, num_ids * sizeof(int32_t),
                                             rows * sizeof(int32_t), 0, /*copy_padding=*/true);
  EmbeddingParams p;
  p.format = t.format;
  p.table = t.data;
  p.num_rows = t.rows;
  p.cols = t.cols;
  p.num_ids = rows;
  p.out = out;
  graphs_.Record(
      [this, p, ids_offset](cudaStream_t stream) {
        EmbeddingParams run = p;
        run.ids = graphs_.ArenaPtr<const int32_t>(ids_offset);
        return LaunchEmbedding(run, stream);
      },
      GraphOp::kEmbedding, p.format, p.table, p.num_rows, p.cols, rows, out, ids_offset);
  return true;
}

bool CudaBackend::RecordRmsNorm(const float* x, const float* weight, int64_t num_rows,
                                int64_t dim, float eps, float* out) {
  int64_t rows = 0;
  if (!graphs_.PaddedRows(num_rows, &rows)) {
    FinishGraphStep(GraphEagerReason::kUnexpectedShape);
    return false;
  }
  if (out == x) {
    graph_step_.norm_bytes =
        std::max(graph_step_.norm_bytes, static_cast<size_t>(rows) * static_cast<size_t>(dim) * 4);
  }
  graphs_.Record(
      [this, x, weight, rows, dim, eps, out](cudaStream_t stream) {
        return EnqueueRmsNorm(x, weight, rows, dim, eps, out, stream);
      },
      GraphOp::kRmsNorm, x, weight, rows, dim, eps, out);
  return true;
}

bool CudaBackend::RecordMatMul(const float* x, int64_t num_rows, const CudaPackedMatrix& m,
                               float* y) {
  int64_t rows = 0;
  if (!graphs_.PaddedRows(num_rows, &rows)) {
    FinishGraphStep(GraphEagerReason::kUnexpectedShape);
    return false;
  }
  if (m.bf16()) {
    graph_step_.bf16_bytes =
        std::max(graph_step_.bf16_bytes, static_cast<size_t>(rows) * m.cols() * 2);
  }
  // `m` is the model's packed weight, alive for the step (the launch only runs within it).
  graphs_.Record(
      [this, x, rows, &m, y](cudaStream_t stream) {
        return EnqueueMatMul(x, rows, m, y, stream);
      },
      GraphOp::kMatMul, x, rows, m.data(), m.rows(), m.cols(), m.bf16(), y);
  return true;
}

bool CudaBackend::RecordRope(const kernels::RopeParams& params) {
  int64_t rows = 0;
  if (!graphs_.PaddedRows(params.num_tokens, &rows)) {
    FinishGraphStep(GraphEagerReason::kUnexpectedShape);
    return false;
  }
  std::vector<int32_t> key(params.positions, params.positions + params.num_tokens);
  key.push_back(params.rot_dim);
  key.push_back(static_cast<int32_t>(std::bit_cast<uint32_t>(params.freq_base)));
  if (key != graph_step_.rope_key) {
    // The step's (cos, sin) table, padded rows at position 0; q and k of every layer share it.
    std::vector<int32_t> positions(rows, 0);
    std::copy(params.positions, params.positions + params.num_tokens, positions.begin());
    std::vector<float> table(static_cast<size_t>(rows) * (params.rot_dim / 2) * 2);
    FillRopeCosSinTable(positions.data(), static_cast<int32_t>(rows), params.rot_dim,
                        params.freq_base, table.data());
    const size_t num_bytes = table.size() * sizeof(float);
    graph_step_.rope_offset =
        graphs_.ArenaPut(table.data(), num_bytes, num_bytes, 0, /*copy_padding=*/true);
    graph_step_.rope_key = std::move(key);
  }
  RopeTableParams p;
  p.x = params.x;
  p.num_tokens = static_cast<int32_t>(rows);
  p.num_heads = params.num_heads;
  p.head_dim = params.head_dim;
  p.rot_dim = params.rot_dim;
  p.style = ToCudaRopeStyle(params.style);
  const size_t table_offset = graph_step_.rope_offset;
  graphs_.Record(
      [this, p, table_offset](cudaStream_t stream) {
        RopeTableParams run = p;
        run.cos_sin = graphs_.ArenaPtr<const float>(table_offset);
        return LaunchRopeWithTable(run, stream);
      },
      GraphOp::kRope, p.x, rows, p.num_heads, p.head_dim, p.rot_dim, p.style, table_offset);
  return true;
}

bool CudaBackend::RecordStoreKv(const KvStoreParams& params) {
  int64_t rows = 0;
  if (!graphs_.PaddedRows(params.num_tokens, &rows)) {
    FinishGraphStep(GraphEagerReason::kUnexpectedShape);
    return false;
  }
  // Padded slots are -1 (0xFF bytes): kv_append skips them, so the cache is untouched.
  const size_t slots_offset =
      graphs_.ArenaPut(params.slots, params.num_tokens * sizeof(int32_t),
                       rows * sizeof(int32_t), 0xFF, /*copy_padding=*/true);
  const KvLayerView& kv = params.kv;
  KvAppendParams p;
  p.dtype = DType::kF32;
  p.k = params.k;
  p.v = params.v;
  p.token_stride = static_cast<int64_t>(kv.num_kv_heads) * kv.head_dim;
  p.k_cache = kv.k;
  p.v_cache = kv.v;
  p.num_tokens = static_cast<int32_t>(rows);
  p.num_kv_heads = kv.num_kv_heads;
  p.page_size = kv.block_size;
  p.head_dim = kv.head_dim;
  graphs_.Record(
      [this, p, slots_offset](cudaStream_t stream) {
        KvAppendParams run = p;
        run.slot_mapping = graphs_.ArenaPtr<const int32_t>(slots_offset);
        return LaunchKvAppend(run, stream);
      },
      GraphOp::kStoreKv, p.k, p.v, p.token_stride, p.k_cache, p.v_cache, rows, p.num_kv_heads,
      p.page_size, p.head_dim, slots_offset);
  return true;
}

// Decode only: query token t is sequence t's one token, at its last position, so its causal
// page table (as in AttentionTables) is the prefix of its sequence's pages up to that position.
// Padded sequences have no pages. The indices region holds `bucket` x capacity pages so that
// its size (and every offset after it) is the same for every step of the tier.
bool CudaBackend::RecordPagedAttention(const PagedAttentionParams& p) {
  const int32_t num_tokens = p.query_start[p.num_seqs];
  int64_t rows = 0;
  if (!graphs_.PaddedRows(num_tokens, &rows) || p.num_seqs != num_tokens) {
    FinishGraphStep(GraphEagerReason::kUnexpectedShape);
    return false;
  }
  const int32_t block_size = p.kv.block_size;
  const int32_t capacity_pages = (graphs_.kv_capacity() + block_size - 1) / block_size;
  const int32_t num_pages = p.kv_indptr[p.num_seqs];
  std::vector<int32_t> key;
  key.reserve(5 + 2 * (p.num_seqs + 1) + num_tokens + num_pages);
  key.push_back(p.num_seqs);
  key.push_back(block_size);
  key.push_back(p.kv.num_kv_heads);
  key.push_back(p.num_heads);
  key.push_back(p.kv.head_dim);
  key.insert(key.end(), p.query_start, p.query_start + p.num_seqs + 1);
  key.insert(key.end(), p.kv_indptr, p.kv_indptr + p.num_seqs + 1);
  key.insert(key.end(), p.positions, p.positions + num_tokens);
  key.insert(key.end(), p.kv_indices, p.kv_indices + num_pages);
  if (key != graph_step_.attention_key) {
    // [indptr: bucket + 1 | last_len: bucket], then the indices.
    std::vector<int32_t> tables(2 * rows + 1, 0);
    int32_t* indptr = tables.data();
    int32_t* last_len = tables.data() + rows + 1;
    std::vector<int32_t> indices;
    for (int32_t s = 0; s < p.num_seqs; ++s) {
      const int32_t seq_pages = p.kv_indptr[s + 1] - p.kv_indptr[s];
      const int32_t pos = p.positions[s];
      const int32_t pages = pos / block_size + 1;
      if (p.query_start[s] != s || pos < 0 || pages > seq_pages) {
        Fail(absl::StrCat("PagedAttention: decode token of sequence ", s, " at position ", pos,
                          " is outside its ", seq_pages, " blocks of ", block_size));
      }
      if (pages > capacity_pages) {  // ForwardShape::max_kv_len was not the longest sequence
        FinishGraphStep(GraphEagerReason::kKvCapacity);
        return false;
      }
      indices.insert(indices.end(), p.kv_indices + p.kv_indptr[s],
                     p.kv_indices + p.kv_indptr[s] + pages);
      indptr[s + 1] = static_cast<int32_t>(indices.size());
      last_len[s] = pos % block_size + 1;
    }
    for (int64_t s = p.num_seqs; s < rows; ++s) indptr[s + 1] = indptr[s];
    graph_step_.tables_offset = graphs_.ArenaPut(tables.data(), tables.size() * sizeof(int32_t),
                                                 tables.size() * sizeof(int32_t), 0, true);
    graph_step_.indices_offset =
        graphs_.ArenaPut(indices.data(), indices.size() * sizeof(int32_t),
                         static_cast<size_t>(rows) * capacity_pages * sizeof(int32_t), 0,
                         /*copy_padding=*/false);
    // The plan of `bucket` sequences all at capacity: fixed for the tier. A shorter sequence
    // leaves its trailing chunks' blocks idle (they return at once) and the merge reads only
    // its own chunks.
    std::vector<int32_t> full_indptr(rows + 1);
    for (int64_t s = 0; s <= rows; ++s) full_indptr[s] = static_cast<int32_t>(s) * capacity_pages;
    graph_step_.attention_plan = PlanPagedDecode(full_indptr.data(), static_cast<int32_t>(rows),
                                                 p.kv.num_kv_heads, block_size, num_sms_);
    graph_step_.attention_key = std::move(key);
  }
  const PagedDecodePlan plan = graph_step_.attention_plan;
  graph_step_.workspace_bytes =
      std::max(graph_step_.workspace_bytes,
               PagedDecodeWorkspaceBytes(plan, static_cast<int32_t>(rows), p.num_heads,
                                         p.kv.head_dim));
  PagedDecodeParams d;
  d.dtype = DType::kF32;
  d.q = p.q;
  d.o = p.out;
  d.lse = nullptr;
  d.kv.k_cache = p.kv.k;
  d.kv.v_cache = p.kv.v;
  d.kv.num_kv_heads = p.kv.num_kv_heads;
  d.kv.page_size = block_size;
  d.kv.head_dim = p.kv.head_dim;
  d.batch = static_cast<int32_t>(rows);
  d.num_qo_heads = p.num_heads;
  d.sm_scale = p.scale;
  d.plan = plan;
  const size_t tables_offset = graph_step_.tables_offset;
  const size_t indices_offset = graph_step_.indices_offset;
  graphs_.Record(
      [this, d, rows, tables_offset, indices_offset](cudaStream_t stream) {
        PagedDecodeParams run = d;
        run.kv.kv_indptr = graphs_.ArenaPtr<const int32_t>(tables_offset);
        run.kv.kv_last_page_len = graphs_.ArenaPtr<const int32_t>(tables_offset) + rows + 1;
        run.kv.kv_indices = graphs_.ArenaPtr<const int32_t>(indices_offset);
        run.workspace = attention_workspace_.get();
        run.workspace_bytes = attention_workspace_.size();
        return LaunchPagedDecode(run, stream);
      },
      GraphOp::kAttention, d.q, d.o, d.kv.k_cache, d.kv.v_cache, d.kv.num_kv_heads, block_size,
      d.kv.head_dim, rows, d.num_qo_heads, d.sm_scale, plan.chunk_keys, plan.num_chunks,
      tables_offset, indices_offset);
  return true;
}

bool CudaBackend::RecordSiluMul(const float* gate, const float* up, int64_t n, float* out) {
  int64_t padded = 0;
  if (!graphs_.PaddedElements(n, &padded)) {
    FinishGraphStep(GraphEagerReason::kUnexpectedShape);
    return false;
  }
  graphs_.Record(
      [gate, up, padded, out](cudaStream_t stream) {
        return LaunchSiluMulFlat(gate, up, padded, out, stream);
      },
      GraphOp::kSiluMul, gate, up, padded, out);
  return true;
}

bool CudaBackend::RecordAddInPlace(float* x, const float* y, int64_t n) {
  int64_t padded = 0;
  if (!graphs_.PaddedElements(n, &padded)) {
    FinishGraphStep(GraphEagerReason::kUnexpectedShape);
    return false;
  }
  graphs_.Record(
      [x, y, padded](cudaStream_t stream) { return LaunchAddInPlace(x, y, padded, stream); },
      GraphOp::kAddInPlace, x, y, padded);
  return true;
}

bool CudaBackend::RecordGatherRows(const float* x, int64_t dim, const int32_t* rows,
                                   int64_t num_rows, float* out) {
  int64_t padded = 0;
  if (!graphs_.PaddedRows(num_rows, &padded)) {
    FinishGraphStep(GraphEagerReason::kUnexpectedShape);
    return false;
  }
  // Padded rows gather row 0 (x always has it).
  const size_t rows_offset = graphs_.ArenaPut(rows, num_rows * sizeof(int32_t),
                                              padded * sizeof(int32_t), 0, true);
  GatherRowsParams p;
  p.x = x;
  p.dim = dim;
  p.num_rows = padded;
  p.out = out;
  graphs_.Record(
      [this, p, rows_offset](cudaStream_t stream) {
        GatherRowsParams run = p;
        run.rows = graphs_.ArenaPtr<const int32_t>(rows_offset);
        return LaunchGatherRows(run, stream);
      },
      GraphOp::kGatherRows, p.x, p.dim, padded, p.out, rows_offset);
  return true;
}

bool CudaBackend::RecordAllReduceSum(float* x, int64_t n) {
  int64_t padded = 0;
  if (!graphs_.PaddedElements(n, &padded)) {
    FinishGraphStep(GraphEagerReason::kUnexpectedShape);
    return false;
  }
  // The sum over a group of one is x itself: a recorded step leaves that all-reduce out, so
  // that single-GPU graphs do not depend on NCCL's stream-capture support.
  if (tp_group_->size() == 1) return true;
  // Several ranks: the collective is captured into the graph (NCCL supports stream capture);
  // every rank pads to the same bucket, so counts match across ranks.
  graphs_.Record(
      [this, x, padded](cudaStream_t stream) {
        const ncclResult_t r = tp_group_->AllReduceSumRank(
            tp_rank_, x, static_cast<size_t>(padded), DType::kF32, stream);
        if (r == ncclSuccess) return cudaSuccess;
        spdlog::critical("CUDA backend: ncclAllReduce of {} floats on tensor-parallel rank {} "
                         "failed: {}", padded, tp_rank_, ncclGetErrorString(r));
        return cudaErrorUnknown;
      },
      GraphOp::kAllReduceSum, x, padded, tp_group_.get(), tp_rank_);
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no CUDA device: cudaGetDeviceCount failed with ", cudaGetErrorName(err), " (",
        cudaGetErrorString(err), "); use --device=cpu"));
  }
  if (count == 0) {
    return absl::FailedPreconditionError(
        "no CUDA device: the CUDA driver reports no devices; use --device=cpu");
  }
  if (options.device_ordinal < 0 || options.device_ordinal >= count) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA device ", options.device_ordinal,
                                                   " does not exist (", count, " visible)"));
  }
  std::shared_ptr<TensorParallelGroup> tp_group = options.tp_group;
  if (tp_group == nullptr) {
    // A lone GPU is a group of one, so that its forward pass all-reduces through NCCL too.
    std::string error;
    tp_group = TensorParallelGroup::Create({options.device_ordinal}, &error);
    if (tp_group == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "CUDA backend: creating the one-rank NCCL group on device ", options.device_ordinal,
          " failed: ", error));
    }
  }
  if (options.tp_rank < 0 || options.tp_rank >= tp_group->size() ||
      tp_group->device(options.tp_rank) != options.device_ordinal) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor-parallel rank ", options.tp_rank, " of a group of ", tp_group->size(),
        " is not on CUDA device ", options.device_ordinal));
  }
  DecodeGraphRecorder::Options graph_options;
  graph_options.enabled = options.cuda_graphs;
  graph_options.run_eagerly_for_testing = options.graphs_run_eagerly_for_testing;
  auto backend = std::make_unique<CudaBackend>(options.device_ordinal, std::move(tp_group),
                                               options.tp_rank, graph_options);
  RETURN_IF_ERROR(backend->Init());
  spdlog::info("CUDA backend: {}", backend->name());
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace glimpse::kernels::cuda
