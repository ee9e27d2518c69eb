// Inline-PTX wrappers for the tensor-core attention kernels (internal; .cu files only):
// cp.async (sm_80+), ldmatrix and mma.sync m16n8k16 bf16 -> fp32, and Hopper's wgmma
// m64nNk16 bf16 -> fp32 (sm_90a; below).
//
// Fragment layouts of mma.m16n8k16 (PTX ISA), lane = 4 * g + t (g = lane / 4, t = lane % 4):
//   A 16x16 (row):  a0 = (g, 2t..2t+1)   a1 = (g+8, 2t..2t+1)   a2 = (g, 2t+8..)   a3 = (g+8,
//   2t+8..) B 16x8  (col):  b0 = (k 2t..2t+1, n g)                      b1 = (k 2t+8..2t+9, n g) C
//   16x8:         c0,c1 = (g, 2t..2t+1)                       c2,c3 = (g+8, 2t..2t+1)
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

// ---- Hopper warpgroup MMA (sm_90a): wgmma.mma_async, A from registers or shared memory ------
// A warpgroup is 4 consecutive warps (128 threads) that issue each wgmma together. Warp w of
// the group supplies rows 16w..16w+15 of A in mma.m16n8k16's A layout and receives the same
// rows of D: accumulator [j][e] of a lane is row g + 8 * (e / 2), column 8j + 2t + e % 2 (the
// C layout of mma.m16n8k16, repeated over the N / 8 column tiles). B comes from shared memory
// through a matrix descriptor (SmemDescSw128). The operations are asynchronous: issue them
// after WgmmaFence, then WgmmaCommit, and read D or overwrite B's shared memory only after
// WgmmaWait. Shared memory written through the generic proxy (stores, cp.async) must be
// published to the wgmma (async) proxy with FenceProxyAsync before a barrier.

// Descriptor of a 128-byte-swizzled operand at shared address `smem_addr` (its 8-row atoms
// 1024-byte aligned): lbo / sbo are the leading / stride byte offsets of the PTX ISA's
// canonical layouts (for K-major B: sbo = bytes between 8-row groups, lbo unused; for
// MN-major B: lbo = bytes between 64-element column blocks, sbo = bytes between 8-row groups).
__device__ __forceinline__ uint64_t SmemDescSw128(uint32_t smem_addr, uint32_t lbo_bytes,
                                                  uint32_t sbo_bytes) {
  return (static_cast<uint64_t>(smem_addr & 0x3FFFF) >> 4) |
         (static_cast<uint64_t>((lbo_bytes >> 4) & 0x3FFF) << 16) |
         (static_cast<uint64_t>((sbo_bytes >> 4) & 0x3FFF) << 32) | (uint64_t{1} << 62);
}

__device__ __forceinline__ void WgmmaFence() {
#if defined(GLIMPSE_CUDA_EMULATION)
  ::cuda_emu::WgmmaFence();
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void WgmmaCommit() {
#if defined(GLIMPSE_CUDA_EMULATION)
  ::cuda_emu::WgmmaCommit();
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

template <int kPending>
__device__ __forceinline__ void WgmmaWait() {
#if defined(GLIMPSE_CUDA_EMULATION)
  ::cuda_emu::WgmmaWait(kPending);
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#endif
}

__device__ __forceinline__ void FenceProxyAsync() {
#if defined(GLIMPSE_CUDA_EMULATION)
  ::cuda_emu::FenceProxyAsync();
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// d (+)= A · B for one m64nNk16 step of the warpgroup; kTransB: B is MN-major.
template <int kTransB>
__device__ __forceinline__ void WgmmaM64N64K16(float (&d)[8][4], const uint32_t (&a)[4],
                                               uint64_t desc_b, bool accumulate) {
#if defined(GLIMPSE_CUDA_EMULATION)
  ::cuda_emu::WgmmaAsync(&d[0][0], 64, a, desc_b, accumulate, kTransB != 0);
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "
      "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "{%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
        "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
        "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),
        "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
        "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),
        "+f"(d[7][2]), "+f"(d[7][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(static_cast<int>(accumulate)),
        "n"(kTransB));
#else
  __trap();  // only sm_90a builds run the wgmma kernels (LaunchPrefillAttention checks)
#endif
}

// The 64 accumulator operands ("+f") of an m64n128k16 wgmma, d[16][4] in order: the output
// list both N = 128 wrappers below pass to their inline PTX.
#define GLIMPSE_WGMMA_N128_ACCUMULATORS(d)                                                        \
  "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),       \
      "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),   \
      "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),   \
      "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),   \
      "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),   \
      "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]),   \
      "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), \
      "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]),             \
      "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]),             \
      "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]),             \
      "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]),             \
      "+f"(d[15][2]), "+f"(d[15][3])

template <int kTransB>
__device__ __forceinline__ void WgmmaM64N128K16(float (&d)[16][4], const uint32_t (&a)[4],
                                                uint64_t desc_b, bool accumulate) {
#if defined(GLIMPSE_CUDA_EMULATION)
  ::cuda_emu::WgmmaAsync(&d[0][0], 128, a, desc_b, accumulate, kTransB != 0);
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "
      "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "
      "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "
      "%56, %57, %58, %59, %60, %61, %62, %63}, "
      "{%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"
      : GLIMPSE_WGMMA_N128_ACCUMULATORS(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(static_cast<int>(accumulate)),
        "n"(kTransB));
#else
  __trap();  // only sm_90a builds run the wgmma kernels (LaunchPrefillAttention checks)
#endif
}

// d (+)= A · B with A from shared memory too (the warpgroup's 64 x 16 A, K-major, through
// desc_a, SmemDescSw128 as for a K-major B): no A registers, so a kernel can keep Q in shared
// memory for all its tiles instead of 4 registers per k-step per thread.
template <int kTransB>
__device__ __forceinline__ void WgmmaM64N128K16SS(float (&d)[16][4], uint64_t desc_a,
                                                  uint64_t desc_b, bool accumulate) {
#if defined(GLIMPSE_CUDA_EMULATION)
  ::cuda_emu::WgmmaAsyncSS(&d[0][0], 128, desc_a, desc_b, accumulate, kTransB != 0);
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "
      "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "
      "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "
      "%56, %57, %58, %59, %60, %61, %62, %63}, "
      "%64, %65, p, 1, 1, 0, %67;\n}\n"
      : GLIMPSE_WGMMA_N128_ACCUMULATORS(d)
      : "l"(desc_a), "l"(desc_b), "r"(static_cast<int>(accumulate)), "n"(kTransB));
#else
  __trap();  // only sm_90a builds run the wgmma kernels (LaunchPrefillAttention checks)
#endif
}

}  // namespace glimpse::kernels::cuda::internal

#endif  // GLIMPSE_KERNELS_CUDA_MMA_UTILS_CUH_
