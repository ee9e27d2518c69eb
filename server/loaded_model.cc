#include "server/loaded_model.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/thread_pool.h"
#include "model/tensor_parallel.h"
#if defined(GLIMPSE_WITH_CUDA)
#include "kernels/cuda/backend/cuda_backend.h"
#endif

namespace glimpse::server {
namespace {

#if !defined(GLIMPSE_WITH_CUDA)
absl::Status BuiltWithoutCudaError() {
  return absl::FailedPreconditionError(
      "this glimpse was built without CUDA; rebuild with "
      "`bazel build --config=cuda //server:glimpse`");
}
#endif

#if defined(GLIMPSE_WITH_CUDA)
// The CUDA backend's options from the flags and the resolved KV dtype.
kernels::cuda::CudaBackendOptions CudaOptions(KvCacheDType kv_dtype) {
  kernels::cuda::CudaBackendOptions options;
  options.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
  options.prefill_attention = absl::GetFlag(FLAGS_cuda_prefill_attention);
  options.decode_attention = absl::GetFlag(FLAGS_cuda_decode_attention);
  options.kv_cache_dtype = kv_dtype == KvCacheDType::kBf16
                               ? kernels::cuda::CudaKvCacheDType::kBFloat16
                               : kernels::cuda::CudaKvCacheDType::kFloat32;
  return options;
}
#endif

// The CPU backend's element type for a resolved dtype (kAuto is not one).
kernels::cpu::KvElementType CpuKvElementType(KvCacheDType kv_dtype) {
  switch (kv_dtype) {
    case KvCacheDType::kF16:
      return kernels::cpu::KvElementType::kF16;
    case KvCacheDType::kBf16:
      return kernels::cpu::KvElementType::kBF16;
    case KvCacheDType::kAuto:
    case KvCacheDType::kFp32:
      break;
  }
  return kernels::cpu::KvElementType::kF32;
}

absl::Status CudaRefusesF16() {
  return absl::InvalidArgumentError(
      "--kv_cache_dtype=f16 is for --device=cpu: the CUDA kernels read a bf16 or fp32 KV cache "
      "(use --kv_cache_dtype=bf16, the same size, or auto)");
}

}  // namespace

absl::StatusOr<KvCacheDType> ResolveKvCacheDType(KvCacheDType requested, Device device,
                                                 const model::GgufFile& file) {
  if (device == Device::kCpu) {
    // The CPU's default stays exact: fp32, bit for bit the model's fp32 computation.
    return requested == KvCacheDType::kAuto ? KvCacheDType::kFp32 : requested;
  }
  if (requested == KvCacheDType::kF16) return CudaRefusesF16();
  if (requested != KvCacheDType::kAuto) return requested;
  // The model's own precision: its attention weights' type (F32 models keep an fp32 cache).
  const model::GgufTensor* weight = file.FindTensor("blk.0.attn_q.weight");
  return weight != nullptr && weight->type == model::GgmlType::kF32 ? KvCacheDType::kFp32
                                                                    : KvCacheDType::kBf16;
}

absl::StatusOr<std::unique_ptr<kernels::Backend>> CreateBackend(Device device, int num_threads,
                                                                KvCacheDType kv_dtype) {
  if (kv_dtype == KvCacheDType::kAuto) {
    return absl::InvalidArgumentError(
        "CreateBackend needs a resolved KV dtype (fp32, f16 or bf16)");
  }
  switch (device) {
    case Device::kCpu:
      return std::unique_ptr<kernels::Backend>(
          std::make_unique<kernels::cpu::CpuBackend>(num_threads, CpuKvElementType(kv_dtype)));
    case Device::kCuda: {
      if (kv_dtype == KvCacheDType::kF16) return CudaRefusesF16();
#if defined(GLIMPSE_WITH_CUDA)
      return kernels::cuda::CreateCudaBackend(CudaOptions(kv_dtype));
#else
      return BuiltWithoutCudaError();
#endif
    }
  }
  return absl::InvalidArgumentError("unknown device");
}

namespace {

// The N backends of one tensor-parallel group on `device`; CPU ranks join `cpu_group`
// (created here) and split num_threads between them.
absl::StatusOr<std::vector<std::unique_ptr<kernels::Backend>>> CreateRankBackends(
    Device device, int num_threads, int size, KvCacheDType kv_dtype,
    std::unique_ptr<kernels::cpu::InProcessTensorParallelGroup>& cpu_group) {
  switch (device) {
    case Device::kCpu: {
      const int total = num_threads > 0 ? num_threads : kernels::cpu::DefaultNumThreads();
      const int per_rank = std::max(1, total / size);
      cpu_group = std::make_unique<kernels::cpu::InProcessTensorParallelGroup>(size);
      std::vector<std::unique_ptr<kernels::Backend>> backends;
      for (int r = 0; r < size; ++r) {
        backends.push_back(cpu_group->CreateRankBackend(r, per_rank, CpuKvElementType(kv_dtype)));
      }
      return backends;
    }
    case Device::kCuda: {
#if defined(GLIMPSE_WITH_CUDA)
      std::vector<int> devices;
      for (int r = 0; r < size; ++r) devices.push_back(r);
      return kernels::cuda::CreateCudaTensorParallelBackends(devices, CudaOptions(kv_dtype));
#else
      (void)kv_dtype;
      return BuiltWithoutCudaError();
#endif
    }
  }
  return absl::InvalidArgumentError("unknown device");
}

}  // namespace

absl::StatusOr<LoadedModel> LoadedModel::Load(const std::string& path, int num_threads) {
  return Load(path, num_threads, absl::GetFlag(FLAGS_device),
              absl::GetFlag(FLAGS_tensor_parallel_size), absl::GetFlag(FLAGS_kv_cache_dtype));
}

absl::StatusOr<LoadedModel> LoadedModel::Load(const std::string& path, int num_threads,
                                              Device device, int tensor_parallel_size,
                                              KvCacheDType kv_dtype) {
  LoadedModel loaded;
  ASSIGN_OR_RETURN(loaded.file, model::GgufFile::Open(path));
  ASSIGN_OR_RETURN(const KvCacheDType resolved_kv_dtype,
                   ResolveKvCacheDType(kv_dtype, device, *loaded.file));
  loaded.kv_dtype = resolved_kv_dtype;
  if (tensor_parallel_size == 1) {
    ASSIGN_OR_RETURN(loaded.backend, CreateBackend(device, num_threads, resolved_kv_dtype));
    ASSIGN_OR_RETURN(loaded.model, model::LlamaModel::Load(*loaded.file, *loaded.backend));
    loaded.runner = std::make_unique<model::LlamaStepRunner>(*loaded.model);
  } else {
    if (tensor_parallel_size < 1) {
      return absl::InvalidArgumentError(absl::StrCat("--tensor_parallel_size must be >= 1, got ",
                                                     tensor_parallel_size));
    }
    // Refuse an impossible split before creating N backends (on GPUs: an NCCL group).
    ASSIGN_OR_RETURN(model::LlamaConfig config, model::LlamaConfigFromGguf(*loaded.file));
    RETURN_IF_ERROR(model::LlamaShardOf(config, {0, tensor_parallel_size}).status());
    ASSIGN_OR_RETURN(
        std::vector<std::unique_ptr<kernels::Backend>> backends,
        CreateRankBackends(device, num_threads, tensor_parallel_size, resolved_kv_dtype,
                           loaded.cpu_group));
    ASSIGN_OR_RETURN(loaded.runner,
                     model::TensorParallelModel::Load(*loaded.file, std::move(backends)));
  }
  ASSIGN_OR_RETURN(loaded.tokenizer, model::Tokenizer::FromGguf(*loaded.file));
  if (loaded.tokenizer->vocab_size() != loaded.config().vocab_size) {
    return absl::InvalidArgumentError("model '" + path + "': the tokenizer has " +
                                      std::to_string(loaded.tokenizer->vocab_size()) +
                                      " pieces but token_embd has " +
                                      std::to_string(loaded.config().vocab_size) + " rows");
  }
  return loaded;
}

kernels::Backend& LoadedModel::rank_backend(int r) const {
  if (model != nullptr) return *backend;
  return static_cast<model::TensorParallelModel&>(*runner).rank_model(r).backend();
}

std::string LoadedModel::backend_name() const {
  const std::string name = rank_backend(0).name();
  if (tensor_parallel_size() == 1) return name;
  return absl::StrCat(name, ", tensor-parallel size ", tensor_parallel_size());
}

size_t LoadedModel::weight_bytes() const {
  if (model != nullptr) return model->weight_bytes();
  return static_cast<const model::TensorParallelModel&>(*runner).weight_bytes();
}

}  // namespace glimpse::server
