// CUDA on the CPU, for tests: the prelude force-included (-include) into every source of an
// emulated build (see README.md in this directory).
//
// An emulated build compiles the kernels' unchanged .cu sources with the host C++ compiler:
// rewrite_cuda_source.pl turns `kernel<<<grid, block, smem, stream>>>(args)` into a call of
// cuda_emu::Launcher, the headers in include/ stand in for the toolkit's, and this file maps
// the CUDA language onto C++: __global__/__device__ functions are plain functions, each CUDA
// thread runs them on its own fiber (block_runner.h), __shared__ variables are thread_local
// (one OS thread runs one block at a time), and warp collectives exchange values through the
// block runner. What it checks and what it cannot: README.md.
//
// Only what glimpse's CUDA code uses is stood in for (every piece is then exercised by the
// kernel tests); a kernel that needs another intrinsic adds it here with its first use.
#ifndef GLIMPSE_KERNELS_CUDA_EMULATION_CUDA_EMULATION_H_
#define GLIMPSE_KERNELS_CUDA_EMULATION_CUDA_EMULATION_H_

#ifndef GLIMPSE_CUDA_EMULATION
#define GLIMPSE_CUDA_EMULATION 1  // also defined for every dependent by BUILD.bazel
#endif

#ifdef __cplusplus

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>

// ---- Language ------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// One OS thread runs one block at a time, so thread_local storage is the block's shared
// memory (rewrite_cuda_source.pl also poisons it at the start of every block).
#define __shared__ static thread_local
#define __constant__ static
// Kernel parameters are each thread's own copy here; their addresses stay valid for the
// kernel's run (what __grid_constant__ promises a tensor map's address on the GPU).
#define __grid_constant__

#include "kernels/cuda/emulation/include/vector_types.h"

namespace cuda_emu {

// The running CUDA thread's coordinates (set by the block runner).
struct ThreadCoordinates {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};
const ThreadCoordinates& CurrentCoordinates();

// ---- Synchronization and warp collectives (block_runner.cc) ----
void SyncThreads();
// Exchanges `bytes` (<= 64) of each lane in `mask` and copies lane `src_lane`'s into `out`.
// Every lane in mask must call it together with the same mask.
void WarpExchange(unsigned mask, const void* in, void* out, int bytes, int src_lane);
// The lanes of `mask` whose predicate is true (the vote behind __any_sync); same calling rule.
unsigned WarpBallot(unsigned mask, bool predicate);
int LaneId();

// ---- Shared memory addresses (32-bit, as __cvta_generic_to_shared gives them) ----
uint32_t SharedAddress(const void* ptr);
void* SharedPointer(uint32_t address);
// Fills a __shared__ variable with 0xFF bytes the first time a thread of the current block
// reaches its declaration (so a read before any write gives NaN / -1).
void PoisonSharedOnce(void* ptr, size_t bytes);
// The block's dynamic shared memory (extern __shared__), poisoned at block start.
unsigned char* DynamicSharedMemory();

// ---- Tensor-core and async-copy instructions of kernels/cuda/mma_utils.cuh ----
void MmaM16n8k16Bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
void LdMatrixX4(uint32_t (&r)[4], uint32_t smem_address, bool transpose);
void CpAsync16(uint32_t smem_address, const void* global, bool valid);
void CpAsyncCommit();
void CpAsyncWait(int pending_groups);
// fence.proxy.async.shared::cta: the calling thread's landed cp.async copies become readable
// by wgmma (whose operand reads fail until then).
void FenceProxyAsync();
// wgmma.mma_async.sync.aligned.m64n{n}k16.f32.bf16.bf16 with A from registers (this warp's
// 16 rows, mma.m16n8k16's A layout) and B from shared memory through a matrix descriptor
// (128-byte swizzle only; K-major, or MN-major when trans_b). d: this lane's n / 2
// accumulators. Asynchronous as on the GPU: d reads NaN until the operation's group completes
// in WgmmaWait, and B is read from shared memory then.
void WgmmaAsync(float* d, int n, const uint32_t (&a)[4], uint64_t desc_b, bool accumulate,
                bool trans_b);
// The same with A from shared memory too: the warpgroup's 64 x 16 A, K-major, through a
// descriptor (128-byte swizzle); this warp's rows are 16 * (warp % 4) .. + 15. A is read
// (and checked for copies not yet visible to the async proxy) like B.
void WgmmaAsyncSS(float* d, int n, uint64_t desc_a, uint64_t desc_b, bool accumulate, bool trans_b);
void WgmmaCommit();
// wgmma.fence.sync.aligned: orders the thread's register accesses before it with the wgmma
// operations after it. WgmmaAsync fails when registers it reads (A, or an accumulator it
// accumulates into) were written by the thread since a wgmma last read or wrote them with
// no fence in between, and when the thread has never fenced.
void WgmmaFence();
void WgmmaWait(int pending_groups);
// mbarrier.init / arrive[.expect_tx] / try_wait.parity (as a blocking wait), and the warp
// barrier; see BlockRunner.
void MbarrierInit(uint32_t address, unsigned arrivals);
void MbarrierArrive(uint32_t address, uint32_t expect_tx_bytes);
void MbarrierWait(uint32_t address, uint32_t parity);
void SyncWarp(unsigned mask);
// bar.sync / bar.arrive on named barrier `id` (1..15) of `count` threads; see BlockRunner.
void NamedBarrierSync(int id, int count);
void NamedBarrierArrive(int id, int count);
// cp.async.bulk.tensor.2d...mbarrier::complete_tx::bytes: the box at (column c0, row c1) of
// the tensor map at `tensor_map` (encoded by the emulated cuTensorMapEncodeTiled, bulk_copy.cc)
// into shared memory at `smem_address`, completing its bytes on the mbarrier at `mbarrier`.
void TmaLoad2d(uint32_t smem_address, const void* tensor_map, int32_t c0, int32_t c1,
               uint32_t mbarrier);

template <typename T>
T Shuffle(unsigned mask, T value, int src_lane) {
  static_assert(sizeof(T) <= 64 && std::is_trivially_copyable_v<T>);
  T out;
  WarpExchange(mask, &value, &out, static_cast<int>(sizeof(T)), src_lane);
  return out;
}

}  // namespace cuda_emu

#define threadIdx (::cuda_emu::CurrentCoordinates().thread_idx)
#define blockIdx (::cuda_emu::CurrentCoordinates().block_idx)
#define blockDim (::cuda_emu::CurrentCoordinates().block_dim)
#define gridDim (::cuda_emu::CurrentCoordinates().grid_dim)
constexpr int warpSize = 32;

inline void __syncthreads() { ::cuda_emu::SyncThreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::cuda_emu::SyncWarp(mask); }
inline int __any_sync(unsigned mask, int predicate) {
  return ::cuda_emu::WarpBallot(mask, predicate != 0) != 0;
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  return ::cuda_emu::WarpBallot(mask, predicate != 0);
}
inline int __popc(unsigned x) { return std::popcount(x); }

template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const int lane = ::cuda_emu::LaneId();
  int src = lane ^ lane_mask;
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
  return ::cuda_emu::Shuffle(mask, v, src);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = ::cuda_emu::LaneId();
  const int in_segment = lane & (width - 1);
  const int src = in_segment >= static_cast<int>(delta) ? lane - static_cast<int>(delta) : lane;
  return ::cuda_emu::Shuffle(mask, v, src);
}

// Fibers never run at the same time within a block, but blocks run on several OS threads:
// atomics on global memory are real atomics, and __threadfence a sequentially consistent
// fence (with the atomic between them, a writer's fence before it and a reader's after it
// order the stores before the reads, as on the device).
template <typename T>
T atomicAdd(T* address, T value) {
  return std::atomic_ref<T>(*address).fetch_add(value);
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
// ld.global.cg (cached in L2 only): a plain load here, where no cache can be stale.
template <typename T>
T __ldcg(const T* address) {
  return *address;
}
template <typename T>
T atomicExch(T* address, T value) {
  return std::atomic_ref<T>(*address).exchange(value);
}
template <typename T>
T atomicMax(T* address, T value) {
  std::atomic_ref<T> ref(*address);
  T old = ref.load();
  while (old < value && !ref.compare_exchange_weak(old, value)) {
  }
  return old;
}

// ---- Device math -----------------------------------------------------------------------
// Host libm in place of the device's; the fast intrinsics are computed exactly (tests bound
// the kernels against fp64 references with tolerances that cover both).
template <typename A, typename B>
constexpr auto min(A a, B b) -> std::common_type_t<A, B> {
  return b < a ? b : a;
}
template <typename A, typename B>
constexpr auto max(A a, B b) -> std::common_type_t<A, B> {
  return a < b ? b : a;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<uint64_t>(a) * b) >> 32);
}
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline size_t __cvta_generic_to_shared(const void* ptr) {
  return ::cuda_emu::SharedAddress(ptr);
}

// Kernel launches (`<<<...>>>` rewritten), whichever CUDA header a source includes.
#include "kernels/cuda/emulation/launch.h"

#endif  // __cplusplus
#endif  // GLIMPSE_KERNELS_CUDA_EMULATION_CUDA_EMULATION_H_
