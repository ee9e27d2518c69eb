// Error propagation for CUDA runtime calls in library code: every call and every launch is
// checked, and the first error is returned to the caller as a cudaError_t. Library code never
// exits or throws; the caller (the CUDA Backend, a test, the benchmark) decides what to do.
//
//   cudaError_t LaunchFoo(...) {
//     GLIMPSE_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(...));
//     FooKernel<<<grid, block, smem, stream>>>(...);
//     GLIMPSE_CUDA_RETURN_IF_ERROR(cudaGetLastError());  // launch-configuration errors
//     return cudaSuccess;
//   }
//
// Uses only the CUDA runtime API, so it builds with plain nvcc on a bare GPU machine.
#ifndef GLIMPSE_KERNELS_CUDA_CUDA_CHECK_H_
#define GLIMPSE_KERNELS_CUDA_CUDA_CHECK_H_

#include <cuda_runtime_api.h>

// Evaluates `expr` (a cudaError_t) once and returns it from the enclosing function unless it
// is cudaSuccess.
#define GLIMPSE_CUDA_RETURN_IF_ERROR(expr)          \
  do {                                              \
    const cudaError_t glimpse_cuda_err_ = (expr);   \
    if (glimpse_cuda_err_ != cudaSuccess) {         \
      return glimpse_cuda_err_;                     \
    }                                               \
  } while (0)

// Returns cudaErrorInvalidValue from the enclosing function when `cond` is false. Used for
// argument validation in the Launch* functions (shapes, alignment, supported dtypes).
#define GLIMPSE_CUDA_RETURN_IF_INVALID(cond)        \
  do {                                              \
    if (!(cond)) {                                  \
      return cudaErrorInvalidValue;                 \
    }                                               \
  } while (0)

#endif  // GLIMPSE_KERNELS_CUDA_CUDA_CHECK_H_
