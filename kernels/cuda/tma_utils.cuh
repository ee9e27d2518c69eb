// Inline-PTX wrappers for Hopper's asynchronous pipeline (internal; .cu files only, sm_90a):
// mbarriers (shared-memory transaction barriers) and TMA bulk tensor copies
// (cp.async.bulk.tensor), named barriers and register budgets, as the pipelined attention
// kernel (prefill_attention.cu) uses them.
//
// An mbarrier is an 8-byte object in shared memory counting arrivals and transaction bytes per
// phase: the phase completes when `arrivals` threads have arrived (MbarrierInit's count) and
// every byte announced with MbarrierArriveExpectTx has landed; then the next phase begins.
// MbarrierWait(bar, parity) returns once the phase of that parity has completed; a fresh
// barrier is in phase 0, so waiting for parity 1 returns at once (how a producer waits for
// the "empty" barrier of a stage it has never filled).
//
// In emulated builds (kernels/cuda/emulation) each wrapper calls the emulator instead, whose
// bulk copies land only when a thread waits on their barrier.
#ifndef GLIMPSE_KERNELS_CUDA_TMA_UTILS_CUH_
#define GLIMPSE_KERNELS_CUDA_TMA_UTILS_CUH_

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace glimpse::kernels::cuda::internal {

__device__ __forceinline__ void MbarrierInit(uint32_t bar, uint32_t arrivals) {
#if defined(GLIMPSE_CUDA_EMULATION)
  ::cuda_emu::MbarrierInit(bar, arrivals);
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(arrivals) : "memory");
#else
  __trap();
#endif
}

// Makes initialized barriers visible to the async proxy (TMA) and the rest of the block (a
// __syncthreads must follow).
__device__ __forceinline__ void FenceMbarrierInit() {
#if !defined(GLIMPSE_CUDA_EMULATION) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

// Arrives once; with tx_bytes > 0, first announces that many bytes for the current phase.
__device__ __forceinline__ void MbarrierArriveExpectTx(uint32_t bar, uint32_t tx_bytes) {
#if defined(GLIMPSE_CUDA_EMULATION)
  ::cuda_emu::MbarrierArrive(bar, tx_bytes);
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(tx_bytes)
               : "memory");
#else
  __trap();
#endif
}

__device__ __forceinline__ void MbarrierArrive(uint32_t bar) {
#if defined(GLIMPSE_CUDA_EMULATION)
  ::cuda_emu::MbarrierArrive(bar, 0);
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
#else
  __trap();
#endif
}

// A wait that has not returned after this many polls gives up and returns as if the phase
// had completed: a pipeline that can never complete (bytes announced that no copy delivers, a
// missing arrival) then ends its launch with wrong results, which the tests report, instead of
// hanging the process and the GPU. Each try_wait may itself suspend the thread for a while, so
// this is at least a second or so and at most about a minute; a real wait in these kernels
// lasts microseconds. (Not __trap(): in the pipelined attention kernel a trap anywhere made
// ptxas spill, and in its consumers serialize their wgmma.)
constexpr uint32_t kMbarrierWaitMaxPolls = 1u << 26;

__device__ __forceinline__ void MbarrierWait(uint32_t bar, uint32_t parity) {
#if defined(GLIMPSE_CUDA_EMULATION)
  ::cuda_emu::MbarrierWait(bar, parity);  // the emulator reports a deadlock itself
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
  uint32_t done = 0;
  for (uint32_t polls = 0; polls < kMbarrierWaitMaxPolls; ++polls) {
    asm volatile(
        "{\n.reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
    if (done) break;
  }
#else
  __trap();
#endif
}

// Copies the box at (column c0, row c1) of the 2-D tensor map `map` (a __grid_constant__
// kernel parameter) to shared memory at `smem` (its swizzle applied on the way), completing
// its bytes on the mbarrier `bar`.
__device__ __forceinline__ void TmaLoad2d(uint32_t smem, const CUtensorMap* map, int32_t c0,
                                          int32_t c1, uint32_t bar) {
#if defined(GLIMPSE_CUDA_EMULATION)
  ::cuda_emu::TmaLoad2d(smem, map, c0, c1, bar);
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes "
      "[%0], [%1, {%2, %3}], [%4];\n" ::"r"(smem),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
#else
  __trap();
#endif
}

// Named barrier `id` (1..15; 0 is __syncthreads') over `count` threads, a multiple of 32
// (bar.sync / bar.arrive, sm_70+): NamedBarrierSync counts this thread and waits until
// `count` threads have; NamedBarrierArrive counts it and goes on. Warp-specialized kernels
// order warpgroups with them (FlashAttention-3's ping-pong of its consumers).
__device__ __forceinline__ void NamedBarrierSync(int id, int count) {
#if defined(GLIMPSE_CUDA_EMULATION)
  ::cuda_emu::NamedBarrierSync(id, count);
#else
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
#endif
}

__device__ __forceinline__ void NamedBarrierArrive(int id, int count) {
#if defined(GLIMPSE_CUDA_EMULATION)
  ::cuda_emu::NamedBarrierArrive(id, count);
#else
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
#endif
}

// Warp-specialized register budgets (setmaxnreg): every thread of a warpgroup executes it
// together; the warpgroup's per-thread register count drops to / rises to kRegisters (a
// multiple of 8 in 24..256), so that a producer warpgroup can hand its registers to the
// consumers. ptxas allocates the code after it within that count. No-op in emulation.
template <int kRegisters>
__device__ __forceinline__ void WarpgroupRegistersDecrease() {
#if !defined(GLIMPSE_CUDA_EMULATION) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
#endif
}

template <int kRegisters>
__device__ __forceinline__ void WarpgroupRegistersIncrease() {
#if !defined(GLIMPSE_CUDA_EMULATION) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
#endif
}

}  // namespace glimpse::kernels::cuda::internal

#endif  // GLIMPSE_KERNELS_CUDA_TMA_UTILS_CUH_
