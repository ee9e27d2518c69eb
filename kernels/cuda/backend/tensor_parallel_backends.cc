// CreateCudaTensorParallelBackends (declared in cuda_backend.h): the backends of one NCCL
// tensor-parallel group, one per device.
#include <cuda_runtime_api.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "kernels/cuda/backend/cuda_backend.h"
#include "kernels/cuda/tensor_parallel.h"

namespace glimpse::kernels::cuda {

absl::StatusOr<std::vector<std::unique_ptr<Backend>>> CreateCudaTensorParallelBackends(
    const std::vector<int>& devices, const CudaBackendOptions& options) {
  if (devices.empty()) {
    return absl::InvalidArgumentError("a tensor-parallel group needs at least one CUDA device");
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    return absl::FailedPreconditionError(
        "no CUDA device: the CUDA driver reports no devices; use --device=cpu");
  }
  for (int d : devices) {
    if (d < 0 || d >= count) {
      return absl::InvalidArgumentError(
          absl::StrCat("CUDA device ", d, " does not exist (", count, " visible)"));
    }
  }
  std::string error;
  std::shared_ptr<TensorParallelGroup> group = TensorParallelGroup::Create(devices, &error);
  if (group == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "creating the NCCL group over CUDA devices ", absl::StrJoin(devices, ","), ": ", error));
  }
  std::vector<std::unique_ptr<Backend>> backends;
  for (size_t r = 0; r < devices.size(); ++r) {
    CudaBackendOptions rank_options = options;
    rank_options.device_ordinal = devices[r];
    rank_options.tp_group = group;
    rank_options.tp_rank = static_cast<int>(r);
    ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, CreateCudaBackend(rank_options));
    backends.push_back(std::move(backend));
  }
  return backends;
}

}  // namespace glimpse::kernels::cuda
