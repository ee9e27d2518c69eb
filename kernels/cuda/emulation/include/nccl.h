// <nccl.h> for emulated builds: communicators of one process (ncclCommInitAll) whose
// all-reduce meets every rank's call, on whatever host threads they come from (../nccl.cc).
#ifndef GLIMPSE_KERNELS_CUDA_EMULATION_INCLUDE_NCCL_H_
#define GLIMPSE_KERNELS_CUDA_EMULATION_INCLUDE_NCCL_H_

#include <cstddef>

#include "kernels/cuda/emulation/include/cuda_runtime_api.h"

#define NCCL_MAJOR 2
#define NCCL_MINOR 27

enum ncclResult_t {
  ncclSuccess = 0,
  ncclUnhandledCudaError = 1,
  ncclSystemError = 2,
  ncclInternalError = 3,
  ncclInvalidArgument = 4,
  ncclInvalidUsage = 5,
};
enum ncclDataType_t {
  ncclInt32 = 2,
  ncclFloat16 = 6,
  ncclFloat32 = 7,
  ncclFloat = 7,
  ncclBfloat16 = 9,
};
enum ncclRedOp_t { ncclSum = 0, ncclProd = 1, ncclMax = 2, ncclMin = 3 };

struct ncclComm;
using ncclComm_t = ncclComm*;

ncclResult_t ncclCommInitAll(ncclComm_t* comms, int ndev, const int* devlist);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream);
ncclResult_t ncclGroupStart();
ncclResult_t ncclGroupEnd();
const char* ncclGetErrorString(ncclResult_t result);

#endif  // GLIMPSE_KERNELS_CUDA_EMULATION_INCLUDE_NCCL_H_
