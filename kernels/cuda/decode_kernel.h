// Which kernel runs paged decode attention (paged_decode_attention.h): one enum for the
// kernels, the CUDA backend's options and the `--cuda_decode_attention` flag. No CUDA headers,
// so every build can name it, also one without CUDA.
#ifndef GLIMPSE_KERNELS_CUDA_DECODE_KERNEL_H_
#define GLIMPSE_KERNELS_CUDA_DECODE_KERNEL_H_

#include <utility>

namespace glimpse::kernels::cuda {

enum class DecodeKernel {
  // CUDA cores, fp32 arithmetic on the loaded K/V (default; every cache type, q used
  // unrounded).
  kCudaCores,
  // Tensor cores (mma.sync m16n8k16, sm_80+): a bf16 cache only; q and the probabilities are
  // rounded to bf16 as in the prefill kernels (experimental).
  kMmaSync,
};

// Each kernel's name, the value of `--cuda_decode_attention` that selects it. The first is the
// default.
inline constexpr std::pair<DecodeKernel, const char*> kDecodeKernelNames[] = {
    {DecodeKernel::kCudaCores, "cuda_cores"},
    {DecodeKernel::kMmaSync, "mma_sync"},
};

inline const char* DecodeKernelName(DecodeKernel kernel) {
  for (const auto& [value, name] : kDecodeKernelNames) {
    if (value == kernel) return name;
  }
  return "unknown";
}

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_DECODE_KERNEL_H_
