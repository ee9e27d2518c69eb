// Inline-PTX wrappers for the tensor-core attention kernels (internal; .cu files only):
// cp.async (sm_80+), ldmatrix and mma.sync m16n8k16 bf16 -> fp32.
//
// Fragment layouts of mma.m16n8k16 (PTX ISA), lane = 4 * g + t (g = lane / 4, t = lane % 4):
//   A 16x16 (row):  a0 = (g, 2t..2t+1)   a1 = (g+8, 2t..2t+1)   a2 = (g, 2t+8..)   a3 = (g+8, 2t+8..)
//   B 16x8  (col):  b0 = (k 2t..2t+1, n g)                      b1 = (k 2t+8..2t+9, n g)
//   C 16x8:         c0,c1 = (g, 2t..2t+1)                       c2,c3 = (g+8, 2t..2t+1)
// Each 32-bit A/B register holds two bf16, the lower column (or k) in the low half.
// In emulated builds (kernels/cuda/emulation) each wrapper calls the emulator's warp-collective
// implementation of the same instruction instead of the PTX.
#ifndef GLIMPSE_KERNELS_CUDA_MMA_UTILS_CUH_
#define GLIMPSE_KERNELS_CUDA_MMA_UTILS_CUH_

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace glimpse::kernels::cuda::internal {

__device__ __forceinline__ uint32_t SmemAddr(const void* ptr) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(ptr));
}

// Copies 16 bytes global -> shared asynchronously; when `valid` is false, writes 16 zero
// bytes and reads nothing (src-size 0), so out-of-range rows become exact zeros.
__device__ __forceinline__ void CpAsync16(uint32_t smem_addr, const void* gmem, bool valid) {
#ifdef GLIMPSE_CUDA_EMULATION
  ::cuda_emu::CpAsync16(smem_addr, gmem, valid);
#else
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr), "l"(gmem),
               "r"(src_bytes)
               : "memory");
#endif
}

__device__ __forceinline__ void CpAsyncCommit() {
#ifdef GLIMPSE_CUDA_EMULATION
  ::cuda_emu::CpAsyncCommit();
#else
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
#ifdef GLIMPSE_CUDA_EMULATION
  ::cuda_emu::CpAsyncWait(kPending);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
#endif
}

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], uint32_t smem_addr) {
#ifdef GLIMPSE_CUDA_EMULATION
  ::cuda_emu::LdMatrixX4(r, smem_addr, /*transpose=*/false);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr));
#endif
}

__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], uint32_t smem_addr) {
#ifdef GLIMPSE_CUDA_EMULATION
  ::cuda_emu::LdMatrixX4(r, smem_addr, /*transpose=*/true);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr));
#endif
}

// c += a * b for one m16n8k16 tile.
__device__ __forceinline__ void MmaBf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                        uint32_t b1) {
#ifdef GLIMPSE_CUDA_EMULATION
  ::cuda_emu::MmaM16n8k16Bf16(c, a, b0, b1);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

__device__ __forceinline__ uint32_t PackBf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

}  // namespace glimpse::kernels::cuda::internal

#endif  // GLIMPSE_KERNELS_CUDA_MMA_UTILS_CUH_
