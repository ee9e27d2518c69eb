#include "kernels/cuda/tensor_parallel.h"

#include <set>

namespace glimpse::kernels::cuda {
namespace {

ncclDataType_t NcclType(DType dtype) {
  return dtype == DType::kF32 ? ncclFloat32 : ncclBfloat16;
}

}  // namespace

ShardRange ShardOf(int64_t n, int rank, int size) {
  const int64_t base = n / size;
  const int64_t extra = n % size;
  ShardRange r;
  r.begin = rank * base + (rank < extra ? rank : extra);
  r.end = r.begin + base + (rank < extra ? 1 : 0);
  return r;
}

std::string CheckHeadSplit(int32_t num_heads, int32_t num_kv_heads, int size) {
  if (size < 1) return "the tensor-parallel size must be >= 1";
  if (num_kv_heads <= 0 || num_heads % num_kv_heads != 0) {
    return "num_heads must be a multiple of num_kv_heads";
  }
  if (num_kv_heads % size != 0) {
    return "the model's " + std::to_string(num_kv_heads) +
           " KV heads do not split evenly over " + std::to_string(size) +
           " GPUs; use a tensor-parallel size that divides the KV head count";
  }
  return "";
}

HeadShard HeadShardOf(int32_t num_heads, int32_t num_kv_heads, int rank, int size) {
  HeadShard s;
  s.kv_heads = ShardOf(num_kv_heads, rank, size);
  const int64_t group = num_heads / num_kv_heads;
  s.q_heads = {s.kv_heads.begin * group, s.kv_heads.end * group};
  return s;
}

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
