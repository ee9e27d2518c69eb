// GLIMPSE_SKIP_WITHOUT_CUDA(reason): skips a GPU test where no usable CUDA device exists. In an
// emulated build (//kernels/cuda/emulation, which always provides its CPU devices) the same
// condition fails the test instead, so that CI cannot pass by skipping.
#ifndef GLIMPSE_KERNELS_CUDA_BACKEND_DEVICE_SKIP_H_
#define GLIMPSE_KERNELS_CUDA_BACKEND_DEVICE_SKIP_H_

#include "gtest/gtest.h"

#ifdef GLIMPSE_CUDA_EMULATION
#define GLIMPSE_SKIP_WITHOUT_CUDA(reason) FAIL() << "emulated CUDA device unusable: " << reason
#else
#define GLIMPSE_SKIP_WITHOUT_CUDA(reason) GTEST_SKIP() << "SKIPPED: " << reason
#endif

#endif  // GLIMPSE_KERNELS_CUDA_BACKEND_DEVICE_SKIP_H_
