// CudaBackend (cuda_backend_impl.h): creation and destruction, staging of per-step host
// arrays, device memory and host <-> device copies; and CreateCudaBackend.
#include "kernels/cuda/backend/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cuda/backend/cuda_backend_impl.h"
#include "kernels/cuda/backend/decode_graphs.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/tensor_parallel.h"
#include "kernels/cuda/weight_convert.h"
#include "spdlog/spdlog.h"

namespace glimpse::kernels::cuda {
namespace internal {
namespace {

constexpr size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

constexpr size_t kInitialStagingBytes = size_t{1} << 20;
constexpr size_t kStagingAlign = 256;
// Host -> device copies up to this size go through staging (no wait); larger ones wait.
constexpr size_t kStagedCopyLimit = size_t{256} << 10;
constexpr size_t kMaxUploadMemos = 16;
// cuBLAS's recommended workspace on Hopper (4 MiB suffices before it).
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;
// Split attention's merge counters: a decode launch's (sequences x kv heads), 8192 sequences
// of 8 kv heads in 256 KiB; a split prefill's (query tokens x qo heads), below 2 x SMs x 128
// (PrefillMergeCounters). Larger launches merge in a second kernel.
constexpr size_t kMergeCounters = size_t{1} << 16;

}  // namespace

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
  compute_major_ = prop.major;
  max_shared_memory_per_block_ = prop.sharedMemPerBlockOptin;
  l2_cache_bytes_ = prop.l2CacheSize;
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
  RETURN_IF_ERROR(CudaStatus(merge_counters_.Allocate(kMergeCounters),
                             "allocating the split attention's merge counters"));
  RETURN_IF_ERROR(CudaStatus(cudaMemset(merge_counters_.get(), 0, kMergeCounters * sizeof(int32_t)),
                             "zeroing the split attention's merge counters"));
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
  graph_activations_bf16_.Reset();
  graph_attention_workspace_.Reset();
  graph_norm_input_.Reset();
  argmax_rows_.Reset();
  argmax_split_.Reset();
  topk_rows_.Reset();
  if (staging_host_ != nullptr) (void)cudaFreeHost(staging_host_);
  if (staging_device_ != nullptr) (void)cudaFree(staging_device_);
  if (cublas_ != nullptr) (void)cublasDestroy(cublas_);
  if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
}

// ---- Staging --------------------------------------------------------------------------------

void CudaBackend::RestartStaging(size_t min_capacity) {
  // The host is about to wait for the device: the step's overlapped host work runs first,
  // while what is enqueued computes.
  if (HostWork* work = std::exchange(host_work_, nullptr); work != nullptr) work->Run();
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

void CudaBackend::ReserveZeroed(DeviceBuffer<uint8_t>& buffer, size_t num_bytes) {
  if (buffer.size() >= num_bytes) return;
  Reserve(buffer, num_bytes);
  GLIMPSE_CUDA_CHECK(cudaMemsetAsync(buffer.get(), 0, buffer.size(), stream_));
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

void* CudaBackend::AllocateHost(size_t num_bytes) {
  Bind();
  void* ptr = nullptr;
  // cudaHostAlloc memory is page-aligned.
  const cudaError_t err =
      cudaHostAlloc(&ptr, std::max<size_t>(num_bytes, 1), cudaHostAllocPortable);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // not sticky: clear it, the caller goes on with plain memory
    spdlog::warn(
        "CUDA backend: cannot page-lock {} MiB of host memory ({}); using pageable memory, "
        "whose copies are slower",
        num_bytes >> 20, cudaGetErrorString(err));
    return nullptr;
  }
  return ptr;
}

void CudaBackend::FreeHost(void* ptr) {
  if (ptr == nullptr) return;
  Bind();
  // As Free: recorded launches first, then whatever copy enqueued before may still use it.
  if (graphs_.recording() && !graphs_.empty()) FinishGraphStep(GraphEagerReason::kMidStepSync);
  GLIMPSE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  GLIMPSE_CUDA_CHECK(cudaFreeHost(ptr));
}

std::optional<DeviceMemoryInfo> CudaBackend::DeviceMemory() {
  Bind();
  DeviceMemoryInfo info;
  const cudaError_t err = cudaMemGetInfo(&info.free_bytes, &info.total_bytes);
  if (err != cudaSuccess) {
    spdlog::error("CUDA backend: cudaMemGetInfo on device {} failed: {}", device_,
                  cudaGetErrorString(err));
    return std::nullopt;
  }
  return info;
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

void CudaBackend::CopyToBackendAsync(void* dst, const void* host_src, size_t num_bytes) {
  if (num_bytes == 0) return;
  Bind();
  // Ordered after the recorded launches, which therefore run now (the rest of the step too).
  if (graphs_.recording() && !graphs_.empty()) FinishGraphStep(GraphEagerReason::kMidStepSync);
  // Stream order puts it after the copies to the host before it and before the work after
  // it. (Were host_src pageable after all, the driver would stage it before returning: still
  // correct, only slower.)
  GLIMPSE_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, num_bytes, cudaMemcpyHostToDevice, stream_));
}

void CudaBackend::CopyWithinBackend(void* dst, const void* src, size_t num_bytes) {
  if (num_bytes == 0) return;
  Bind();
  // Ordered after the recorded launches, which therefore run now (the rest of the step too).
  if (graphs_.recording() && !graphs_.empty()) FinishGraphStep(GraphEagerReason::kMidStepSync);
  GLIMPSE_CUDA_CHECK(cudaMemcpyAsync(dst, src, num_bytes, cudaMemcpyDeviceToDevice, stream_));
}

void CudaBackend::BatchCopy(std::span<const CopyOp> copies) {
  Bind();
  // Ordered after the recorded launches, which therefore run now (the rest of the step too).
  if (graphs_.recording() && !graphs_.empty()) FinishGraphStep(GraphEagerReason::kMidStepSync);
  batch_dsts_.clear();
  batch_srcs_.clear();
  batch_sizes_.clear();
  for (const CopyOp& c : copies) {
    if (c.num_bytes == 0) continue;
    batch_dsts_.push_back(c.dst);
    batch_srcs_.push_back(c.src);
    batch_sizes_.push_back(c.num_bytes);
  }
  if (batch_dsts_.empty()) return;
  // One attribute for every copy: sources read in stream order, as cudaMemcpyAsync's are
  // (a swap-in's host block may be what a swap-out before it writes).
  cudaMemcpyAttributes attributes = {};
  attributes.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
  attributes.flags = cudaMemcpyFlagDefault;
  size_t first_copy = 0;
  GLIMPSE_CUDA_CHECK(cudaMemcpyBatchAsync(batch_dsts_.data(), batch_srcs_.data(),
                                          batch_sizes_.data(), batch_dsts_.size(), &attributes,
                                          &first_copy, 1, stream_));
}

void CudaBackend::BatchCopyToHostAsync(std::span<const CopyOp> copies) { BatchCopy(copies); }

void CudaBackend::BatchCopyToBackendAsync(std::span<const CopyOp> copies) { BatchCopy(copies); }

void CudaBackend::BatchCopyWithinBackend(std::span<const CopyOp> copies) { BatchCopy(copies); }

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

void CudaBackend::CopyToHostAsync(void* host_dst, const void* src, size_t num_bytes) {
  Bind();
  // Ordered after the recorded launches, which therefore run now (the rest of the step too).
  if (graphs_.recording() && !graphs_.empty()) FinishGraphStep(GraphEagerReason::kMidStepSync);
  if (num_bytes == 0) return;
  GLIMPSE_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, num_bytes, cudaMemcpyDeviceToHost, stream_));
}

void CudaBackend::WaitForCopiesToHost() {
  Bind();
  RestartStaging(0);  // synchronizes the stream, as CopyToHost
}

void CudaBackend::EndStepForReduction() {
  // The forward pass's graph (or recorded launches) run now, as at CopyToHost; the reduction
  // is launched after it, outside the graph (see the header).
  if (graphs_.recording()) FinishGraphStep(GraphEagerReason::kNumReasons);
}

void CudaBackend::ArgMaxRows(const float* x, int64_t num_rows, int64_t cols, int32_t* host_index,
                             float* host_value) {
  Bind();
  EndStepForReduction();
  if (num_rows == 0) {
    RestartStaging(0);  // synchronizes, as CopyToHost
    return;
  }
  const size_t rows = static_cast<size_t>(num_rows);
  Reserve(argmax_rows_, rows * 8);
  ArgMaxRowsParams out = ArgMaxOutput(x, num_rows, cols);
  // A few rows: several blocks a row (ArgMaxRowsSplits), not one SM streaming each row.
  out.splits = ArgMaxRowsSplits(num_rows, cols, num_sms_);
  if (out.splits > 1) {
    ReserveZeroed(argmax_split_, rows * (sizeof(unsigned long long) + sizeof(unsigned int)));
    out.partial = reinterpret_cast<unsigned long long*>(argmax_split_.get());
    out.counters = reinterpret_cast<unsigned int*>(out.partial + rows);
  }
  GLIMPSE_CUDA_CHECK(LaunchArgMaxRows(out, stream_));
  const HostCopy h = ReadBack(out.index, out.value + rows);
  std::memcpy(host_index, h.Of(out.index), rows * sizeof(int32_t));
  std::memcpy(host_value, h.Of(out.value), rows * sizeof(float));
}

CudaBackend::HostCopy CudaBackend::ReadBack(const void* first, const void* end) {
  const auto* device = static_cast<const uint8_t*>(first);
  const size_t num_bytes = static_cast<size_t>(static_cast<const uint8_t*>(end) - device);
  const size_t offset = ReserveStaging(num_bytes);
  GLIMPSE_CUDA_CHECK(
      cudaMemcpyAsync(staging_host_ + offset, device, num_bytes, cudaMemcpyDeviceToHost, stream_));
  RestartStaging(0);  // synchronizes, as CopyToHost; keeps the buffer where it is
  return HostCopy{staging_host_ + offset, device};
}

void CudaBackend::TopKRows(const float* x, int64_t num_rows, int64_t cols, int32_t k,
                           int32_t* host_count, int32_t* host_index, float* host_value,
                           float* host_row_max, double* host_row_exp_sum,
                           const float* host_temperature, double* host_row_exp_sum_t1) {
  CHECK(k >= 1);
  CHECK((host_row_max == nullptr) == (host_row_exp_sum == nullptr));
  const bool normalizers = host_row_max != nullptr;
  CHECK(host_temperature == nullptr || normalizers);
  const bool sums_t1 = host_row_exp_sum_t1 != nullptr;
  CHECK(!sums_t1 || normalizers);
  Bind();
  EndStepForReduction();
  if (num_rows == 0) {
    RestartStaging(0);  // synchronizes, as CopyToHost
    return;
  }
  Reserve(topk_rows_, static_cast<size_t>(num_rows) * TopKRowBytes(k));
  TopKRowsParams out = TopKOutput(x, num_rows, cols, k, normalizers, sums_t1);
  if (host_temperature != nullptr) {
    out.temperature = static_cast<const float*>(Upload(host_temperature, num_rows * sizeof(float)));
  }
  // A few rows: several blocks a row (TopKRowsSplits), not one SM per row.
  out.splits = TopKRowsSplits(num_rows, cols, k, num_sms_);
  out.workspace_bytes = TopKRowsWorkspaceBytes(num_rows, out.splits, k);
  if (out.workspace_bytes > 0) {
    Reserve(topk_workspace_, out.workspace_bytes);
    out.workspace = topk_workspace_.get();
  }
  GLIMPSE_CUDA_CHECK(LaunchTopKRows(out, stream_));
  // One copy of what was asked for (a prefix of TopKOutput's layout), then spread on the host.
  const size_t rows = static_cast<size_t>(num_rows);
  const size_t pairs = rows * static_cast<size_t>(k);
  const void* end = sums_t1       ? static_cast<const void*>(out.row_exp_sum_t1 + rows)
                    : normalizers ? static_cast<const void*>(out.row_exp_sum + rows)
                                  : static_cast<const void*>(out.value + pairs);
  const HostCopy h = ReadBack(out.count, end);
  std::memcpy(host_count, h.Of(out.count), rows * sizeof(int32_t));
  std::memcpy(host_index, h.Of(out.index), pairs * sizeof(int32_t));
  std::memcpy(host_value, h.Of(out.value), pairs * sizeof(float));
  if (normalizers) {
    std::memcpy(host_row_max, h.Of(out.row_max), rows * sizeof(float));
    std::memcpy(host_row_exp_sum, h.Of(out.row_exp_sum), rows * sizeof(double));
  }
  if (sums_t1) std::memcpy(host_row_exp_sum_t1, h.Of(out.row_exp_sum_t1), rows * sizeof(double));
}

}  // namespace internal

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
  const DType kv_dtype =
      options.kv_cache_dtype == CudaKvCacheDType::kBFloat16 ? DType::kBF16 : DType::kF32;
  if (kv_dtype == DType::kF32 && options.prefill_attention != PrefillKernel::kMmaSync) {
    spdlog::warn(
        "CUDA backend: --cuda_prefill_attention={} applies to a bf16 KV cache; the "
        "fp32 cache's prefills run its own fp32 kernel (--kv_cache_dtype=bf16 for the "
        "tensor-core kernels)",
        PrefillKernelName(options.prefill_attention));
  }
  if (kv_dtype == DType::kF32 && options.decode_attention != DecodeKernel::kCudaCores) {
    spdlog::warn(
        "CUDA backend: --cuda_decode_attention={} needs a bf16 KV cache; the fp32 "
        "cache's decode steps run cuda_cores (--kv_cache_dtype=bf16 for it)",
        DecodeKernelName(options.decode_attention));
  }
  auto backend = std::make_unique<internal::CudaBackend>(
      options.device_ordinal, std::move(tp_group), options.tp_rank, graph_options, kv_dtype,
      options.prefill_attention,
      kv_dtype == DType::kBF16 ? options.decode_attention : DecodeKernel::kCudaCores);
  RETURN_IF_ERROR(backend->Init());
  spdlog::info("CUDA backend: {}", backend->name());
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace glimpse::kernels::cuda
