// Everything needed to run one GGUF model: the mapped file, the backend(s) (CPU or CUDA), the
// packed model, the StepRunner the engine drives and the tokenizer, loaded together with
// errors that name the file.
//
// Tensor parallelism (--tensor_parallel_size=N > 1): the model is a TensorParallelModel that
// owns N backends (one GPU each, one NCCL group; or N in-process CPU ranks sharing
// `cpu_group` and the threads), and `backend`/`model` stay null. With N = 1 nothing changes:
// one backend, one LlamaModel, and a LlamaStepRunner over them.
//
// Ownership: owns everything; members are declared in dependency order so they are destroyed
// in reverse (runners before the models, models before the backends and the file they
// borrow, the CPU group after the backends that borrow it). Thread-safety: none (built once,
// then the engine thread drives the runner).
#ifndef GLIMPSE_SERVER_LOADED_MODEL_H_
#define GLIMPSE_SERVER_LOADED_MODEL_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/cpu/in_process_tensor_parallel.h"
#include "model/gguf.h"
#include "model/llama_config.h"
#include "model/llama_model.h"
#include "model/step_runner.h"
#include "model/tensor_parallel_model.h"
#include "model/tokenizer.h"
#include "server/common_flags.h"

namespace glimpse::server {

struct LoadedModel {
  std::unique_ptr<model::GgufFile> file;
  // N > 1 on the CPU: the ranks' all-reduce group.
  std::unique_ptr<kernels::cpu::InProcessTensorParallelGroup> cpu_group;
  // N = 1 only.
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<model::LlamaModel> model;
  // N = 1: a LlamaStepRunner over `model`; N > 1: the TensorParallelModel (owning the ranks'
  // backends and models).
  std::unique_ptr<model::StepRunner> runner;
  std::unique_ptr<model::Tokenizer> tokenizer;
  // The KV cache's element type, resolved (never kAuto).
  KvCacheDType kv_dtype = KvCacheDType::kFp32;

  // Loads onto `device`, split over `tensor_parallel_size` ranks. num_threads (CPU only) <= 0:
  // all CPUs this process may use; with N > 1 CPU ranks they are divided evenly between the
  // ranks (at least one each). InvalidArgument (LlamaShardOf's message) before any device is
  // touched when the model does not split over N.
  // kv_dtype: the KV cache's elements (kAuto: see KvCacheDType); InvalidArgument for f16 on
  // CUDA.
  static absl::StatusOr<LoadedModel> Load(const std::string& path, int num_threads, Device device,
                                          int tensor_parallel_size = 1,
                                          KvCacheDType kv_dtype = KvCacheDType::kAuto);
  // Loads onto the device, tensor-parallel size and KV dtype the `--device`,
  // `--tensor_parallel_size` and `--kv_cache_dtype` flags name (defaults: cpu, 1, auto).
  static absl::StatusOr<LoadedModel> Load(const std::string& path, int num_threads);

  const model::LlamaConfig& config() const { return runner->config(); }
  int tensor_parallel_size() const { return runner->tensor_parallel_size(); }
  // Rank r's backend (r = 0 and `backend` when unsplit).
  kernels::Backend& rank_backend(int r) const;
  // Rank 0's backend name, and the tensor-parallel size when > 1.
  std::string backend_name() const;
  // The KV cache's element type as --kv_cache_dtype names it: "fp32", "f16" or "bf16".
  std::string kv_cache_dtype_name() const { return AbslUnparseFlag(kv_dtype); }
  // Bytes of packed weights over all ranks (what one decode step streams, all devices).
  size_t weight_bytes() const;
};

// The backend for `device` with a KV cache of `kv_dtype` (kFp32, kF16 or kBf16; kF16 only on
// the CPU).
// Device::kCuda: FailedPrecondition when this binary was built without CUDA (rebuild with
// --config=cuda) or when no usable CUDA device exists.
absl::StatusOr<std::unique_ptr<kernels::Backend>> CreateBackend(
    Device device, int num_threads, KvCacheDType kv_dtype = KvCacheDType::kFp32);

// What `requested` means for `device` and the model in `file` (kAuto resolved; see
// KvCacheDType). InvalidArgument for f16 on CUDA.
absl::StatusOr<KvCacheDType> ResolveKvCacheDType(KvCacheDType requested, Device device,
                                                 const model::GgufFile& file);

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_LOADED_MODEL_H_
