#include "kernels/cuda/tensor_parallel.h"

#include <set>

namespace glimpse::kernels::cuda {
namespace {

ncclDataType_t NcclType(DType dtype) {
  return dtype == DType::kF32 ? ncclFloat32 : ncclBfloat16;
}

}  // namespace

std::unique_ptr<TensorParallelGroup> TensorParallelGroup::Create(const std::vector<int>& devices,
                                                                 std::string* error) {
  if (devices.empty()) {
    *error = "a tensor-parallel group needs at least one device";
    return nullptr;
  }
  if (std::set<int>(devices.begin(), devices.end()).size() != devices.size()) {
    *error = "tensor-parallel devices must be distinct";
    return nullptr;
  }
  int count = 0;
  if (const cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess) {
    *error = std::string("no CUDA device: ") + cudaGetErrorString(e);
    return nullptr;
  }
  for (int d : devices) {
    if (d < 0 || d >= count) {
      *error = "device " + std::to_string(d) + " does not exist (" + std::to_string(count) +
               " CUDA devices)";
      return nullptr;
    }
  }
  std::unique_ptr<TensorParallelGroup> group(new TensorParallelGroup(devices));
  group->comms_.resize(devices.size());
  const ncclResult_t r =
      ncclCommInitAll(group->comms_.data(), static_cast<int>(devices.size()), devices.data());
  if (r != ncclSuccess) {
    *error = std::string("ncclCommInitAll: ") + ncclGetErrorString(r);
    group->comms_.clear();  // Nothing to destroy.
    return nullptr;
  }
  return group;
}

TensorParallelGroup::~TensorParallelGroup() {
  for (ncclComm_t comm : comms_) {
    if (comm != nullptr) ncclCommDestroy(comm);
  }
}

ncclResult_t TensorParallelGroup::AllReduceSum(const std::vector<void*>& buffers, size_t count,
                                               DType dtype,
                                               const std::vector<cudaStream_t>& streams) {
  if (buffers.size() != devices_.size() || streams.size() != devices_.size()) {
    return ncclInvalidArgument;
  }
  // One thread issuing collectives for several ranks must group them, or the first call would
  // wait for peers that are never issued.
  if (const ncclResult_t r = ncclGroupStart(); r != ncclSuccess) return r;
  ncclResult_t first_error = ncclSuccess;
  for (size_t i = 0; i < devices_.size(); ++i) {
    const ncclResult_t r = ncclAllReduce(buffers[i], buffers[i], count, NcclType(dtype), ncclSum,
                                         comms_[i], streams[i]);
    if (r != ncclSuccess && first_error == ncclSuccess) first_error = r;
  }
  const ncclResult_t end = ncclGroupEnd();
  return first_error != ncclSuccess ? first_error : end;
}

ncclResult_t TensorParallelGroup::AllReduceSumRank(int rank, void* buffer, size_t count,
                                                   DType dtype, cudaStream_t stream) {
  if (rank < 0 || rank >= size()) return ncclInvalidArgument;
  return ncclAllReduce(buffer, buffer, count, NcclType(dtype), ncclSum,
                       comms_[static_cast<size_t>(rank)], stream);
}

}  // namespace glimpse::kernels::cuda
