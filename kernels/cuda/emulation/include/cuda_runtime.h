// <cuda_runtime.h> for emulated builds: the runtime API plus kernel launches
// (cuda_emu::Launcher, what rewrite_cuda_source.pl turns `<<<...>>>` into).
#ifndef GLIMPSE_KERNELS_CUDA_EMULATION_INCLUDE_CUDA_RUNTIME_H_
#define GLIMPSE_KERNELS_CUDA_EMULATION_INCLUDE_CUDA_RUNTIME_H_

#include "kernels/cuda/emulation/include/cuda_runtime_api.h"
#include "kernels/cuda/emulation/launch.h"

#endif  // GLIMPSE_KERNELS_CUDA_EMULATION_INCLUDE_CUDA_RUNTIME_H_
