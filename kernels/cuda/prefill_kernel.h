// Which kernel runs the tensor-core attention (prefill_attention.h): one enum for the kernels,
// the CUDA backend's options and the `--cuda_prefill_attention` flag. No CUDA headers, so every
// build can name it, also one without CUDA.
#ifndef GLIMPSE_KERNELS_CUDA_PREFILL_KERNEL_H_
#define GLIMPSE_KERNELS_CUDA_PREFILL_KERNEL_H_

#include <utility>

namespace glimpse::kernels::cuda {

enum class PrefillKernel {
  kMmaSync,      // mma.sync, 64-row blocks (default; every sm_80+ GPU)
  kMmaSyncWide,  // mma.sync, 128-row blocks (experimental)
  kWgmma,        // wgmma, compute capability 9.0 and head_dim 64/128 only (experimental)
  // wgmma fed by TMA through an mbarrier pipeline, a producer and two consumer warpgroups
  // (FlashAttention-3's structure); as kWgmma, and page sizes with a multiple of 8 as their
  // largest power-of-two factor up to 64 (experimental)
  kWgmmaPipelined,
  // kWgmmaPipelined with FlashAttention-3's head_dim-128 tile: 128-key K/V tiles, Q in shared
  // memory (wgmma with both operands from shared memory); page sizes with a multiple of 8 as
  // their largest power-of-two factor up to 128 (experimental)
  kWgmmaPipelined128,
};

// Each kernel's name, the value of `--cuda_prefill_attention` that selects it (the flag's
// parser and the backend's log lines read it). The first is the default.
inline constexpr std::pair<PrefillKernel, const char*> kPrefillKernelNames[] = {
    {PrefillKernel::kMmaSync, "mma_sync"},
    {PrefillKernel::kMmaSyncWide, "mma_sync_wide"},
    {PrefillKernel::kWgmma, "wgmma"},
    {PrefillKernel::kWgmmaPipelined, "wgmma_pipelined"},
    {PrefillKernel::kWgmmaPipelined128, "wgmma_pipelined_128"},
};

inline const char* PrefillKernelName(PrefillKernel kernel) {
  for (const auto& [value, name] : kPrefillKernelNames) {
    if (value == kernel) return name;
  }
  return "unknown";
}

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_PREFILL_KERNEL_H_
