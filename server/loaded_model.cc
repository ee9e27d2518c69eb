#include "server/loaded_model.h"

#include "absl/flags/flag.h"
#include "common/status_macros.h"
#include "kernels/cpu/cpu_backend.h"
#if defined(GLIMPSE_WITH_CUDA)
#include "kernels/cuda/backend/cuda_backend.h"
#endif

namespace glimpse::server {

absl::StatusOr<std::unique_ptr<kernels::Backend>> CreateBackend(Device device, int num_threads) {
  switch (device) {
    case Device::kCpu:
      return std::unique_ptr<kernels::Backend>(
          std::make_unique<kernels::cpu::CpuBackend>(num_threads));
    case Device::kCuda: {
#if defined(GLIMPSE_WITH_CUDA)
      kernels::cuda::CudaBackendOptions options;
      options.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
      return kernels::cuda::CreateCudaBackend(options);
#else
      return absl::FailedPreconditionError(
          "this glimpse was built without CUDA; rebuild with "
          "`bazel build --config=cuda //server:glimpse`");
#endif
    }
  }
  return absl::InvalidArgumentError("unknown device");
}

absl::StatusOr<LoadedModel> LoadedModel::Load(const std::string& path, int num_threads) {
  return Load(path, num_threads, absl::GetFlag(FLAGS_device));
}

absl::StatusOr<LoadedModel> LoadedModel::Load(const std::string& path, int num_threads,
                                              Device device) {
  LoadedModel loaded;
  ASSIGN_OR_RETURN(loaded.file, model::GgufFile::Open(path));
  ASSIGN_OR_RETURN(loaded.backend, CreateBackend(device, num_threads));
  ASSIGN_OR_RETURN(loaded.model, model::LlamaModel::Load(*loaded.file, *loaded.backend));
  ASSIGN_OR_RETURN(loaded.tokenizer, model::Tokenizer::FromGguf(*loaded.file));
  if (loaded.tokenizer->vocab_size() != loaded.model->config().vocab_size) {
    return absl::InvalidArgumentError("model '" + path + "': the tokenizer has " +
                                      std::to_string(loaded.tokenizer->vocab_size()) +
                                      " pieces but token_embd has " +
                                      std::to_string(loaded.model->config().vocab_size) + " rows");
  }
  return loaded;
}

}  // namespace glimpse::server
