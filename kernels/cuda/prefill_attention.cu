#include "kernels/cuda/prefill_attention.h"

#include <algorithm>
#include <atomic>
#include <limits>
#include <numeric>
#include <string>

#include "kernels/cuda/attention_common.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/mma_utils.cuh"
#include "kernels/cuda/prefill_attention_f32.h"
#include "kernels/cuda/prefill_work.cuh"
#include "kernels/cuda/tma_utils.cuh"

namespace glimpse::kernels::cuda {
namespace {

using internal::bf16;
using internal::BlockWork;
using internal::CpAsync16;
using internal::DescribeBlock;
using internal::FastExp2;
using internal::kFullMask;
using internal::kLog2e;
using internal::RowToken;
using internal::SmemAddr;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTileM = internal::kMmaSyncBlockRows;  // packed query rows per m-tile (16 per warp)
constexpr int kBlockN = 64;  // keys per KV tile
constexpr int kMinChunkKeys = 256;

inline bool IsPipelined(PrefillKernel kernel) {
  return kernel == PrefillKernel::kWgmmaPipelined || kernel == PrefillKernel::kWgmmaPipelined128;
}

// Rows of a block: kMTiles m-tiles of 64 (each warp takes 16 rows of every m-tile), or the
// pipelined kernels' two consumer warpgroups of 64.
inline int32_t BlockRows(PrefillKernel kernel) {
  return kernel == PrefillKernel::kMmaSyncWide || IsPipelined(kernel) ? 2 * kTileM : kTileM;
}

// Keys per K/V tile: the plan's chunks are whole tiles of the kernel that runs them.
inline int32_t TileKeys(PrefillKernel kernel) {
  return kernel == PrefillKernel::kWgmmaPipelined128 ? 2 * kBlockN : kBlockN;
}

// Byte offset of element (row, col) (col a multiple of 8) of a [kRows][head_dim] bf16 tile in
// the 128-byte-swizzled layout wgmma reads through descriptors: 64-column halves of kRows
// rows x 128 bytes, 16-byte chunk c of row r at chunk c ^ (r % 8) (the tile 1024-byte
// aligned).
template <int kRows>
__device__ __forceinline__ int SwizzledTileOffset(int row, int col) {
  const int chunk = (col % 64) / 8;
  return (col / 64) * (kRows * 128) + row * 128 + ((chunk ^ (row & 7)) * 16);
}

// Shared memory of one block. The Q tile (kMTiles x 64 rows) is always padded rows (read by
// ldmatrix). The K and V tiles are padded rows for the mma.sync kernel (kWgmma false), and for
// the wgmma kernel (sm_90a) the 128-byte-swizzled layout wgmma reads through descriptors:
//
//   KV tile [64 keys][kHeadDim], 64-column halves h of 64 rows x 128 bytes (8 KiB each):
//     byte of (row r, 16-byte chunk c of the half) = h * 8192 + r * 128 + ((c ^ (r % 8)) * 16)
//
// whose 8-row, 1024-byte atoms start 1024-byte aligned (the tiles are placed so).
template <int kHeadDim, bool kWgmma, int kMTiles = 1>
struct PrefillShape {
  static constexpr int kBlockM = kMTiles * kTileM;  // packed query rows per block
  static constexpr int kStride = kHeadDim + 8;      // padded row stride, elements
  static constexpr int kQBytes = kBlockM * kStride * static_cast<int>(sizeof(bf16));
  // One K or V tile.
  static constexpr int kKvTileBytes =
      (kWgmma ? kHeadDim : kStride) * kBlockN * static_cast<int>(sizeof(bf16));
  // Q tile + double-buffered K and V tiles (+ 1 KiB to align the wgmma tiles to 1024 bytes).
  static constexpr int kSmemBytes = kQBytes + 4 * kKvTileBytes + (kWgmma ? 1024 : 0);
  static constexpr int kChunksPerRow = kHeadDim / 8;  // 16-byte chunks per row
  static constexpr int kRowsPerPass = kThreads / kChunksPerRow;
  static constexpr int kPasses = kBlockN / kRowsPerPass;  // per KV tile; Q takes kMTiles times
  static_assert(kThreads % kChunksPerRow == 0 && kBlockN % kRowsPerPass == 0, "tile shape");
  static_assert(kTileM == kBlockN, "an m-tile of Q and a KV tile share the loader's passes");
  static_assert(!kWgmma ||
                    (kMTiles == 1 && kHeadDim % 64 == 0 && kQBytes % 1024 == 0 && kBlockN == 64),
                "wgmma tiles: one m-tile (a warpgroup), whole 128-byte rows, 1024-byte aligned");

  // Byte offset of element (row, col) (col a multiple of 8) in a K or V tile.
  static __device__ __forceinline__ int KvTileOffset(int row, int col) {
    if constexpr (kWgmma) {
      return SwizzledTileOffset<kBlockN>(row, col);
    } else {
      return (row * kStride + col) * static_cast<int>(sizeof(bf16));
    }
  }
};

// Issues the cp.async copies of KV tile `tile_start .. + kKeys - 1` of (sequence, kv_head)
// into k_dst / v_dst (PrefillShape's layout; with kKeys 128, wgmma's of 128 rows), spread
// over kLoaders threads (`loader` is this thread's index among them); page_div divides by the
// page size. Keys >= key_end become zero rows: their scores are masked to -inf and zero V rows
// keep 0 * garbage from turning into NaN.
template <int kHeadDim, bool kWgmma, int kLoaders = kThreads, int kKeys = kBlockN>
__device__ __forceinline__ void LoadKvTile(const PrefillAttentionParams& p,
                                           const internal::FastDivider& page_div,
                                           int32_t page_begin, int kv_head, int32_t tile_start,
                                           int32_t key_end, unsigned char* k_dst,
                                           unsigned char* v_dst, int loader) {
  using S = PrefillShape<kHeadDim, kWgmma>;
  constexpr int kRowsPerPass = kLoaders / S::kChunksPerRow;
  static_assert(kLoaders % S::kChunksPerRow == 0 && kKeys % kRowsPerPass == 0, "loaders");
  static_assert(kKeys == kBlockN || kWgmma, "128-key tiles exist in wgmma's layout only");
  const bf16* k_cache = static_cast<const bf16*>(p.kv.k_cache);
  const bf16* v_cache = static_cast<const bf16*>(p.kv.v_cache);
  const int col = (loader % S::kChunksPerRow) * 8;
  // Unrolled by 8 at most: the pipelined kernels' producer warp (32 loaders, 64 passes of a
  // 128-key tile at head_dim 128) would spill its 56 registers on a full unroll's addresses.
#pragma unroll 8
  for (int pass = 0; pass < kKeys / kRowsPerPass; ++pass) {
    const int row = loader / S::kChunksPerRow + pass * kRowsPerPass;
    const int32_t key = tile_start + row;
    const bool valid = key < key_end;
    int64_t off = 0;
    if (valid) {
      off = internal::PagedKeyOffset(p.kv.kv_indices + page_begin, key, kv_head, p.kv.num_kv_heads,
                                     p.kv.page_size, kHeadDim, page_div) +
            col;
    }
    const int dst = kWgmma ? SwizzledTileOffset<kKeys>(row, col) : S::KvTileOffset(row, col);
    CpAsync16(SmemAddr(k_dst + dst), k_cache + off, valid);
    CpAsync16(SmemAddr(v_dst + dst), v_cache + off, valid);
  }
}

// Scores of one tile of kKeys keys (64, or 128 for the kWgmmaPipelined128 kernel), in
// mma.m16n8k16's C layout per m-tile of 16 rows a warp holds: s[mt][nt][e] is row
// g + 8 * (e / 2) of m-tile mt, key 8 * nt + 2t + e % 2 of the tile. The functions below take
// any kNTiles = kKeys / 8, and row_of(r): the block-relative packed row of this thread's row
// r = 2 * mt + i.
template <int kMTiles, int kKeys = kBlockN>
using TileScores = float[kMTiles][kKeys / 8][4];

// Sets the scores of keys a row must not see to -inf: keys >= key_end, and keys past the
// row's token (causal) or off its tree path.
template <int kMTiles, int kNTiles, class RowOf>
__device__ __forceinline__ void MaskScores(const PrefillAttentionParams& p, const BlockWork& w,
                                           int32_t tile_start, RowOf row_of,
                                           float (&s)[kMTiles][kNTiles][4]) {
  const int t = threadIdx.x & 3;
#pragma unroll
  for (int r = 0; r < 2 * kMTiles; ++r) {
    const int mt = r / 2;
    const int i = r % 2;
    const internal::RowMask mask = internal::RowMaskOf(p, w, RowToken(w, row_of(r)));
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
      for (int e = 2 * i; e < 2 * i + 2; ++e) {
        const int32_t key = tile_start + nt * 8 + 2 * t + (e & 1);
        if (!internal::KeyVisible(w, mask, key)) s[mt][nt][e] = -INFINITY;
      }
    }
  }
}

// Online softmax over one tile (FlashAttention-2): scales the scores to log2 units, updates
// the running max m_row and sum l_row of each of this thread's rows, and leaves the
// unnormalized probabilities in s; rescale[r] is the factor O's row r must be multiplied by
// (the old max's weight under the new one). The four lanes of a quad (same g) share a row.
template <int kMTiles, int kNTiles>
__device__ __forceinline__ void SoftmaxTile(float scale_log2, float (&s)[kMTiles][kNTiles][4],
                                            float (&m_row)[2 * kMTiles],
                                            float (&l_row)[2 * kMTiles],
                                            float (&rescale)[2 * kMTiles]) {
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[mt][nt][e] *= scale_log2;
    }
  }
#pragma unroll
  for (int r = 0; r < 2 * kMTiles; ++r) {
    const int mt = r / 2;
    const int i = r % 2;
    float mx = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
      mx = fmaxf(mx, fmaxf(s[mt][nt][2 * i], s[mt][nt][2 * i + 1]));
    }
    mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 2));
    float m_use;
    rescale[r] = internal::FoldTileMax(mx, m_row[r], l_row[r], m_use);
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
      s[mt][nt][2 * i] = FastExp2(s[mt][nt][2 * i] - m_use);
      s[mt][nt][2 * i + 1] = FastExp2(s[mt][nt][2 * i + 1] - m_use);
      l_row[r] += s[mt][nt][2 * i] + s[mt][nt][2 * i + 1];
    }
  }
}

// O's rows times SoftmaxTile's factors.
template <int kMTiles, int kDimTiles>
__device__ __forceinline__ void RescaleO(const float (&rescale)[2 * kMTiles],
                                         float (&o_acc)[kMTiles][kDimTiles][4]) {
#pragma unroll
  for (int r = 0; r < 2 * kMTiles; ++r) {
#pragma unroll
    for (int dt = 0; dt < kDimTiles; ++dt) {
      o_acc[r / 2][dt][2 * (r % 2)] *= rescale[r];
      o_acc[r / 2][dt][2 * (r % 2) + 1] *= rescale[r];
    }
  }
}

template <int kMTiles, int kDimTiles>
__device__ __forceinline__ void OnlineSoftmax(float scale_log2, TileScores<kMTiles>& s,
                                              float (&o_acc)[kMTiles][kDimTiles][4],
                                              float (&m_row)[2 * kMTiles],
                                              float (&l_row)[2 * kMTiles]) {
  float rescale[2 * kMTiles];
  SoftmaxTile(scale_log2, s, m_row, l_row, rescale);
  RescaleO<kMTiles, kDimTiles>(rescale, o_acc);
}

// The A fragment (mma.m16n8k16's layout) of P for keys 16kk..16kk+15 of m-tile `mt`: the C
// layout of two 8-key n-tiles is the A layout of one 16-key step.
template <int kMTiles, int kNTiles>
__device__ __forceinline__ void PFragment(const float (&s)[kMTiles][kNTiles][4], int mt, int kk,
                                          uint32_t (&a)[4]) {
  a[0] = internal::PackBf16x2(s[mt][2 * kk][0], s[mt][2 * kk][1]);
  a[1] = internal::PackBf16x2(s[mt][2 * kk][2], s[mt][2 * kk][3]);
  a[2] = internal::PackBf16x2(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
  a[3] = internal::PackBf16x2(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
}

// Writes this thread's rows: O / l in bf16 (and lse) without a split, else the chunk's
// normalized fp32 partial state to the workspace (StoresPartialState).
template <int kHeadDim, int kMTiles, class RowOf>
__device__ __forceinline__ void StoreRows(const PrefillAttentionParams& p, const BlockWork& w,
                                          RowOf row_of,
                                          const float (&o_acc)[kMTiles][kHeadDim / 8][4],
                                          const float (&m_row)[2 * kMTiles],
                                          const float (&l_row)[2 * kMTiles]) {
  constexpr int kDimTiles = kHeadDim / 8;
  const int t = threadIdx.x & 3;
  const bool split = internal::StoresPartialState(p, w);
#pragma unroll
  for (int r = 0; r < 2 * kMTiles; ++r) {
    const int mt = r / 2;
    const int i = r % 2;
    float l = l_row[r];
    l += __shfl_xor_sync(kFullMask, l, 1);
    l += __shfl_xor_sync(kFullMask, l, 2);
    const int32_t pr = w.row_base + row_of(r);
    if (pr >= w.num_rows) continue;
    const internal::RowResult row = internal::FinishRow(p, w, pr, m_row[r], l);
    if (split) {
      float* dst = internal::SplitPartialO(p) + row.slot * kHeadDim + 2 * t;
#pragma unroll
      for (int dt = 0; dt < kDimTiles; ++dt) {
        *reinterpret_cast<float2*>(dst + dt * 8) =
            make_float2(o_acc[mt][dt][2 * i] * row.inv_l, o_acc[mt][dt][2 * i + 1] * row.inv_l);
      }
      if (t == 0) internal::SplitPartialLse(p, kHeadDim)[row.slot] = row.lse;
    } else {
      bf16* dst = static_cast<bf16*>(p.o) + row.state * kHeadDim + 2 * t;
#pragma unroll
      for (int dt = 0; dt < kDimTiles; ++dt) {
        *reinterpret_cast<__nv_bfloat162*>(dst + dt * 8) = __floats2bfloat162_rn(
            o_acc[mt][dt][2 * i] * row.inv_l, o_acc[mt][dt][2 * i + 1] * row.inv_l);
      }
      if (t == 0 && p.lse != nullptr) p.lse[row.state] = row.lse;
    }
  }
}

// S = Q·Kᵀ of one warpgroup's 64 rows on wgmma, issued, not committed: B = the K tile at
// `kb`, K-major, k-step kk 32 bytes into its 64-column half.
template <int kHeadDim>
__device__ __forceinline__ void IssueWgmmaScores(const uint32_t (&q_frag)[kHeadDim / 16][4],
                                                 const unsigned char* kb, TileScores<1>& s) {
#pragma unroll
  for (int kk = 0; kk < kHeadDim / 16; ++kk) {
    const uint64_t desc = internal::SmemDescSw128(
        SmemAddr(kb + (kk / 4) * (kBlockN * 128) + (kk % 4) * 32), 16, 1024);
    internal::WgmmaM64N64K16<0>(s[0], q_frag[kk], desc, kk > 0);
  }
}

// S = Q·Kᵀ of one warpgroup's 64 rows over a 128-key tile on wgmma with Q in shared memory
// (kWgmmaPipelined128), issued, not committed: A = the warpgroup's Q tile at `qb` and B = the
// K tile at `kb`, both K-major in the 128-byte swizzle (SwizzledTileOffset of 64 and 128
// rows), k-step kk 32 bytes into its 64-column half.
template <int kHeadDim>
__device__ __forceinline__ void IssueWgmmaScoresFromSmem(const unsigned char* qb,
                                                         const unsigned char* kb,
                                                         TileScores<1, 128>& s) {
#pragma unroll
  for (int kk = 0; kk < kHeadDim / 16; ++kk) {
    const uint64_t desc_a =
        internal::SmemDescSw128(SmemAddr(qb + (kk / 4) * (64 * 128) + (kk % 4) * 32), 16, 1024);
    const uint64_t desc_b =
        internal::SmemDescSw128(SmemAddr(kb + (kk / 4) * (128 * 128) + (kk % 4) * 32), 16, 1024);
    internal::WgmmaM64N128K16SS<0>(s[0], desc_a, desc_b, kk > 0);
  }
}

// P's A fragments of one tile of kKeys keys, per 16-key step.
template <int kKeys = kBlockN>
using PFragments = uint32_t[kKeys / 16][4];

// O += P·V of one warpgroup's 64 rows on wgmma, issued, not committed: B = the V tile of
// 16 * kKSteps keys at `vb`, MN-major (head dims contiguous): keys 16kk.. start 16 rows down;
// the second 64-column half is the tile's keys x 128 bytes on (LBO).
template <int kHeadDim, int kKSteps>
__device__ __forceinline__ void IssueWgmmaPV(const uint32_t (&p)[kKSteps][4],
                                             const unsigned char* vb,
                                             float (&o_acc)[1][kHeadDim / 8][4]) {
#pragma unroll
  for (int kk = 0; kk < kKSteps; ++kk) {
    const uint64_t desc =
        internal::SmemDescSw128(SmemAddr(vb + kk * 16 * 128), kKSteps * 16 * 128, 1024);
    if constexpr (kHeadDim == 64) {
      internal::WgmmaM64N64K16<1>(o_acc[0], p[kk], desc, true);
    } else {
      internal::WgmmaM64N128K16<1>(o_acc[0], p[kk], desc, true);
    }
  }
}

template <int kNTiles>
__device__ __forceinline__ void PackP(const float (&s)[1][kNTiles][4],
                                      uint32_t (&p)[kNTiles / 2][4]) {
#pragma unroll
  for (int kk = 0; kk < kNTiles / 2; ++kk) PFragment(s, 0, kk, p[kk]);
}

// S = Q·Kᵀ on wgmma, waited for.
template <int kHeadDim>
__device__ __forceinline__ void WgmmaScores(const uint32_t (&q_frag)[kHeadDim / 16][4],
                                            const unsigned char* kb, TileScores<1>& s) {
  internal::WgmmaFence();
  IssueWgmmaScores<kHeadDim>(q_frag, kb, s);
  internal::WgmmaCommit();
  internal::WgmmaWait<0>();
}

// O += P·V on wgmma with P from the softmax's s, waited for.
template <int kHeadDim>
__device__ __forceinline__ void WgmmaAccumulatePV(const TileScores<1>& s, const unsigned char* vb,
                                                  float (&o_acc)[1][kHeadDim / 8][4]) {
  PFragments<> p;
  PackP(s, p);
  internal::WgmmaFence();  // o_acc was rescaled by the softmax
  IssueWgmmaPV<kHeadDim>(p, vb, o_acc);
  internal::WgmmaCommit();
  internal::WgmmaWait<0>();
}

// Grid: (num_work_items, num_kv_heads). Dynamic shared memory: PrefillShape::kSmemBytes.
// kWgmma: the products run as wgmma (the block's 4 warps are one warpgroup; sm_90a only).
// kMTiles (mma.sync only): m-tiles of 64 rows per block; every K/V fragment a warp loads from
// shared memory feeds kMTiles mma instead of one.
template <int kHeadDim, bool kWgmma, int kMTiles>
__global__ void __launch_bounds__(kThreads) PrefillAttentionKernel(PrefillAttentionParams p) {
  using S = PrefillShape<kHeadDim, kWgmma, kMTiles>;
  constexpr int kKSteps = kHeadDim / 16;  // k-steps of Q·Kᵀ
  constexpr int kDimTiles = kHeadDim / 8;  // n-tiles of O
  constexpr int kRows = 2 * kMTiles;       // rows per thread: g and g + 8 of each m-tile
  // Q's A fragments stay in registers across KV tiles unless that would spill (two m-tiles of
  // head_dim 128: 64 more registers beside 128 of O and 64 of S); then each k-step reloads
  // them from the Q tile (2 more ldmatrix beside its 4 of K).
  constexpr bool kQInRegisters = kMTiles * kHeadDim <= 128;
  constexpr int kQFragSteps = kQInRegisters ? kKSteps : 1;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* smem = smem_raw;
  if constexpr (kWgmma) {
    // The swizzle pattern is a function of the shared address: align the tiles to 1024 bytes.
    smem += (1024 - SmemAddr(smem_raw) % 1024) % 1024;
  }
  bf16* q_s = reinterpret_cast<bf16*>(smem);       // [kBlockM][kStride]
  unsigned char* k_s = smem + S::kQBytes;          // [2] tiles
  unsigned char* v_s = k_s + 2 * S::kKvTileBytes;  // [2] tiles

  const BlockWork w = DescribeBlock(p, S::kBlockM, kBlockN);
  const internal::FastDivider page_div(p.kv.page_size);  // for LoadKvTile's page lookups
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int g = lane >> 2;
  // This thread's row r = 2 * mt + i is block row mt * 64 + warp * 16 + g + 8 * i.
  // (Recomputed where needed rather than held in registers, which two m-tiles of head_dim
  // 128 do not have to spare.)
  auto row_of = [&](int r) { return (r / 2) * kTileM + warp * 16 + g + 8 * (r % 2); };

  float o_acc[kMTiles][kDimTiles][4];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int dt = 0; dt < kDimTiles; ++dt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o_acc[mt][dt][e] = 0.0f;
    }
  }
  float m_row[kRows];
  float l_row[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    m_row[r] = -INFINITY;
    l_row[r] = 0.0f;
  }
  const float scale_log2 = p.sm_scale * kLog2e;

  if (w.num_tiles > 0) {
    // Q tile: packed row r -> (token r / group, query head kv_head * group + r % group).
    {
      const bf16* q = static_cast<const bf16*>(p.q);
      const int col = (threadIdx.x % S::kChunksPerRow) * 8;
#pragma unroll
      for (int pass = 0; pass < kMTiles * S::kPasses; ++pass) {
        const int row = threadIdx.x / S::kChunksPerRow + pass * S::kRowsPerPass;
        const int32_t pr = w.row_base + row;
        const bool valid = pr < w.num_rows;
        int64_t off = 0;
        if (valid) off = internal::PackedRowState(p, w, pr) * kHeadDim + col;
        CpAsync16(SmemAddr(q_s + row * S::kStride + col), q + off, valid);
      }
    }
    LoadKvTile<kHeadDim, kWgmma>(p, page_div, w.page_begin, w.kv_head, w.chunk_start, w.key_end,
                                 k_s, v_s, threadIdx.x);
    internal::CpAsyncCommit();

    uint32_t q_frag[kMTiles][kQFragSteps][4];
    // Loads the A fragments of k-step kk of every m-tile into q_frag[..][slot].
    auto load_q_frags = [&](int kk, int slot) {
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        const int row = mt * kTileM + warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
        const int col = kk * 16 + (lane >> 4) * 8;
        internal::LdMatrixX4(q_frag[mt][slot], SmemAddr(q_s + row * S::kStride + col));
      }
    };
    for (int32_t it = 0; it < w.num_tiles; ++it) {
      const int buf = it & 1;
      if (it + 1 < w.num_tiles) {
        // The other buffer was released by the barrier at the end of iteration it - 1.
        LoadKvTile<kHeadDim, kWgmma>(
            p, page_div, w.page_begin, w.kv_head, w.chunk_start + (it + 1) * kBlockN, w.key_end,
            k_s + (buf ^ 1) * S::kKvTileBytes, v_s + (buf ^ 1) * S::kKvTileBytes, threadIdx.x);
        internal::CpAsyncCommit();
        internal::CpAsyncWait<1>();
      } else {
        internal::CpAsyncWait<0>();
      }
      // Tile `it` (and Q) visible to all warps, and to wgmma's async proxy.
      if constexpr (kWgmma) internal::FenceProxyAsync();
      __syncthreads();
      if (kQInRegisters && it == 0) {
#pragma unroll
        for (int kk = 0; kk < kKSteps; ++kk) load_q_frags(kk, kk);
      }
      const int32_t tile_start = w.chunk_start + it * kBlockN;
      const unsigned char* kb = k_s + buf * S::kKvTileBytes;
      const unsigned char* vb = v_s + buf * S::kKvTileBytes;

      // S = Q·Kᵀ: 8 n-tiles of 8 keys per m-tile.
      TileScores<kMTiles> s;
      if constexpr (kWgmma) {
        WgmmaScores<kHeadDim>(q_frag[0], kb, s);
      } else {
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
          for (int nt = 0; nt < kBlockN / 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.0f;
          }
        }
#pragma unroll
        for (int kk = 0; kk < kKSteps; ++kk) {
          if constexpr (!kQInRegisters) load_q_frags(kk, 0);
          const int slot = kQInRegisters ? kk : 0;
#pragma unroll
          for (int np = 0; np < kBlockN / 16; ++np) {
            uint32_t b[4];
            const int key_row = np * 16 + (lane & 7) + (lane >> 4) * 8;
            const int col = kk * 16 + ((lane >> 3) & 1) * 8;
            internal::LdMatrixX4(b, SmemAddr(kb + S::KvTileOffset(key_row, col)));
#pragma unroll
            for (int mt = 0; mt < kMTiles; ++mt) {
              internal::MmaBf16(s[mt][2 * np], q_frag[mt][slot], b[0], b[1]);
              internal::MmaBf16(s[mt][2 * np + 1], q_frag[mt][slot], b[2], b[3]);
            }
          }
        }
      }
      if (tile_start + kBlockN > w.unmasked_end) MaskScores<kMTiles>(p, w, tile_start, row_of, s);
      OnlineSoftmax<kMTiles, kDimTiles>(scale_log2, s, o_acc, m_row, l_row);
      // O += P·V.
      if constexpr (kWgmma) {
        WgmmaAccumulatePV<kHeadDim>(s, vb, o_acc);
      } else {
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk) {
          uint32_t a[kMTiles][4];
#pragma unroll
          for (int mt = 0; mt < kMTiles; ++mt) PFragment(s, mt, kk, a[mt]);
#pragma unroll
          for (int dp = 0; dp < kHeadDim / 16; ++dp) {
            uint32_t b[4];
            const int key_row = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
            const int col = dp * 16 + (lane >> 4) * 8;
            internal::LdMatrixX4Trans(b, SmemAddr(vb + S::KvTileOffset(key_row, col)));
#pragma unroll
            for (int mt = 0; mt < kMTiles; ++mt) {
              internal::MmaBf16(o_acc[mt][2 * dp], a[mt], b[0], b[1]);
              internal::MmaBf16(o_acc[mt][2 * dp + 1], a[mt], b[2], b[3]);
            }
          }
        }
      }
      __syncthreads();  // all warps done with buffer `buf` before it is refilled
    }
  }
  StoreRows<kHeadDim, kMTiles>(p, w, row_of, o_acc, m_row, l_row);
  if (internal::MergesInKernel(p)) {
    internal::MergeTileChunksIfLast<bf16, kHeadDim>(p, w, S::kBlockM, threadIdx.x, kThreads,
                                                    [] { __syncthreads(); });
  }
}

// ---- The pipelined wgmma kernels (kWgmmaPipelined, kWgmmaPipelined128; sm_90a) ------------
//
// FlashAttention-3's structure on our paged cache: a block is three warpgroups over 128
// packed query rows. Warpgroup 0 is the producer: one warp streams the chunk's K/V tiles of
// kTileKeys keys into a ring of kPipelinedStages shared-memory stages with TMA
// (cp.async.bulk.tensor, one box of box_rows keys x 64 columns per page run, written in
// wgmma's 128-byte swizzle by the copy engine itself), so no consumer thread spends an
// instruction or a register on K/V loads. Warpgroups 1 and 2 are consumers, 64 rows each:
// per tile they wait on the stage's "full" mbarrier, run S = Q·Kᵀ, the softmax and O += P·V
// on wgmma, and arrive on its "empty" mbarrier, which the producer waits on before refilling
// the stage. Loads thus run kPipelinedStages - 1 tiles ahead of the math. Each consumer
// overlaps its softmax of tile j with its own P·V of tile j - 1 on the tensor cores, and the
// two consumers take turns issuing their products (FlashAttention-3's ping-pong, two named
// barriers): consumer 1 issues, hands the turn to consumer 2 and runs its softmax while
// consumer 2's products occupy the tensor cores, and so on, so that one's softmax always has
// the other's products to hide behind instead of both issuing, then both exponentiating, at
// once.
//
// Two shapes of it:
//   kTileKeys 64 (kWgmmaPipelined): Q's A fragments in registers (wgmma RS).
//   kTileKeys 128 (kWgmmaPipelined128): FlashAttention-3's head_dim-128 tile. A tile's
//     scores take 64 registers and its P fragments 32 per consumer thread, so Q moves to
//     shared memory (wgmma SS, 32 registers fewer at head_dim 128); every per-tile cost — the
//     two mbarrier waits and arrivals, the ping-pong turn, the softmax's row reductions and
//     the rescale of O — is paid once per 128 keys instead of per 64, and each Q·Kᵀ k-step
//     is one m64n128k16 instead of one m64n64k16.
//
// The block's last tile, when key_end cuts it short, is copied by the producer warp with
// cp.async instead (TMA boxes cannot stop at key_end, and rows past it must be zeros), which
// then arrives on "full" itself.
constexpr int kPipelinedStages = 3;
constexpr int kConsumerWarpgroups = 2;
constexpr int kPipelinedThreads = 128 * (1 + kConsumerWarpgroups);
constexpr int kPipelinedBlockRows = 64 * kConsumerWarpgroups;
constexpr int kPingPongBarrier = 1;  // named barriers 1, 2: consumer 1's, consumer 2's turn
constexpr int kMergeBarrier = 3;     // the consumers' barrier of MergeTileChunksIfLast
constexpr int kProducerRegisters = 56;
constexpr int kConsumerRegisters = 224;
static_assert(128 * (kProducerRegisters + kConsumerWarpgroups * kConsumerRegisters) <= 65536,
              "the three warpgroups' registers must fit the SM's 64K");

template <int kHeadDim, int kTileKeys>
struct PipelinedShape {
  static_assert(kTileKeys == 64 || kTileKeys == 128, "tiles of 64 or 128 keys");
  static constexpr bool kQInSmem = kTileKeys == 128;
  static constexpr int kKvTileBytes = kHeadDim * kTileKeys * static_cast<int>(sizeof(bf16));
  static constexpr int kStageBytes = 2 * kKvTileBytes;  // K tile, then V tile
  // Each consumer's Q tile (64 rows, swizzled like a K tile), when in shared memory.
  static constexpr int kQTileBytes = kQInSmem ? 64 * kHeadDim * static_cast<int>(sizeof(bf16)) : 0;
  // 1 KiB to align the stages, the stages, the Q tiles, and a full and an empty mbarrier per
  // stage. (head_dim 128 with 128-key tiles: 230,448 bytes of the H100/H200's 232,448.)
  static constexpr int kSmemBytes = 1024 + kPipelinedStages * kStageBytes +
                                    kConsumerWarpgroups * kQTileBytes + 16 * kPipelinedStages;
};

// The kernel's parameter (__grid_constant__: TMA reads the maps from parameter space).
struct PipelinedArgs {
  CUtensorMap k_map;  // the K cache as rows of head_dim, box box_rows x 64 columns, swizzled
  CUtensorMap v_map;
  PrefillAttentionParams p;
  int32_t box_rows;  // keys per box: gcd(page_size, kTileKeys), a multiple of 8
};

// Copies rows w.row_base + first .. + 63 of the block's packed Q rows into q_dst (64 rows,
// SwizzledTileOffset's layout) with the calling warpgroup's 128 threads (`thread` is this
// one's index among them); rows past the block's end become zeros. The copies are waited for
// and fenced to the async proxy here; a barrier of the warpgroup must still publish them to
// its other warps.
template <int kHeadDim>
__device__ __forceinline__ void LoadQTileSwizzled(const PrefillAttentionParams& p,
                                                  const BlockWork& w, int first,
                                                  unsigned char* q_dst, int thread) {
  constexpr int kChunksPerRow = kHeadDim / 8;
  static_assert(64 * kChunksPerRow % 128 == 0, "16-byte chunks per thread");
  const bf16* q = static_cast<const bf16*>(p.q);
#pragma unroll
  for (int pass = 0; pass < 64 * kChunksPerRow / 128; ++pass) {
    const int i = thread + pass * 128;
    const int row = i / kChunksPerRow;
    const int col = (i % kChunksPerRow) * 8;
    const int32_t pr = w.row_base + first + row;
    const bool valid = pr < w.num_rows;
    int64_t off = 0;
    if (valid) off = internal::PackedRowState(p, w, pr) * kHeadDim + col;
    CpAsync16(SmemAddr(q_dst + SwizzledTileOffset<64>(row, col)), q + off, valid);
  }
  internal::CpAsyncCommit();
  internal::CpAsyncWait<0>();
  internal::FenceProxyAsync();
}

template <int kHeadDim, int kTileKeys>
__global__ void __launch_bounds__(kPipelinedThreads, 1)
    PrefillPipelinedKernel(const __grid_constant__ PipelinedArgs args) {
  using S = PipelinedShape<kHeadDim, kTileKeys>;
  constexpr int kKSteps = kHeadDim / 16;
  constexpr int kDimTiles = kHeadDim / 8;
  const PrefillAttentionParams& p = args.p;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  // The swizzle pattern is a function of the shared address: align the stages to 1024 bytes.
  unsigned char* stages = smem_raw + (1024 - SmemAddr(smem_raw) % 1024) % 1024;
  unsigned char* q_tiles = stages + kPipelinedStages * S::kStageBytes;  // kQInSmem only
  uint64_t* full = reinterpret_cast<uint64_t*>(q_tiles + kConsumerWarpgroups * S::kQTileBytes);
  uint64_t* empty = full + kPipelinedStages;

  const BlockWork w = DescribeBlock(p, kPipelinedBlockRows, kTileKeys);
  const internal::FastDivider page_div(p.kv.page_size);  // for LoadKvTile's page lookups
  if (threadIdx.x == 0) {
    for (int i = 0; i < kPipelinedStages; ++i) {
      internal::MbarrierInit(SmemAddr(&full[i]), 1);  // the producer's arrival (+ bytes)
      internal::MbarrierInit(SmemAddr(&empty[i]), 128 * kConsumerWarpgroups);
    }
    internal::FenceMbarrierInit();
  }
  __syncthreads();
  const int warpgroup = threadIdx.x / 128;
  const int lane = threadIdx.x & 31;

  if (warpgroup == 0) {
    // ---- Producer: warp 0 loads; the other three warps have nothing to do. ----
    // Its registers go to the consumers: 56 here leave 224 for each consumer thread (128 x
    // (56 + 2 x 224) <= 64K), where O, S and Q's fragments take 128 at head_dim 128 with
    // 64-key tiles (O, S and P 160 with 128-key tiles). (ptxas, sm_90a, head_dim 128, 64-key
    // tiles: no spills; without it, 168 for all, 16 bytes spilled and the wgmma serialized
    // for want of registers.)
    internal::WarpgroupRegistersDecrease<kProducerRegisters>();
    if (threadIdx.x >= 32) return;
    for (int32_t it = 0; it < w.num_tiles; ++it) {
      const int stage = it % kPipelinedStages;
      const uint32_t round = static_cast<uint32_t>(it / kPipelinedStages);
      internal::MbarrierWait(SmemAddr(&empty[stage]), (round & 1u) ^ 1u);
      const int32_t tile_start = w.chunk_start + it * kTileKeys;
      unsigned char* k_dst = stages + stage * S::kStageBytes;
      unsigned char* v_dst = k_dst + S::kKvTileBytes;
      const uint32_t full_bar = SmemAddr(&full[stage]);
      if (tile_start + kTileKeys <= w.key_end) {
        if (lane == 0) {
          internal::MbarrierArriveExpectTx(full_bar, S::kStageBytes);
          for (int key = 0; key < kTileKeys; key += args.box_rows) {
            const int32_t k = tile_start + key;
            const int32_t page_index = page_div.Divide(k);
            const int32_t page = p.kv.kv_indices[w.page_begin + page_index];
            const int32_t row = (page * p.kv.num_kv_heads + w.kv_head) * p.kv.page_size + k -
                                page_index * p.kv.page_size;
#pragma unroll
            for (int half = 0; half < kHeadDim / 64; ++half) {
              const int dst = half * (kTileKeys * 128) + key * 128;
              internal::TmaLoad2d(SmemAddr(k_dst + dst), &args.k_map, half * 64, row, full_bar);
              internal::TmaLoad2d(SmemAddr(v_dst + dst), &args.v_map, half * 64, row, full_bar);
            }
          }
        }
      } else {
        LoadKvTile<kHeadDim, true, 32, kTileKeys>(p, page_div, w.page_begin, w.kv_head, tile_start,
                                                  w.key_end, k_dst, v_dst, lane);
        internal::CpAsyncCommit();
        internal::CpAsyncWait<0>();
        internal::FenceProxyAsync();  // the copies, to wgmma's async proxy
        __syncwarp();
        if (lane == 0) internal::MbarrierArrive(full_bar);
      }
    }
    return;
  }

  // ---- Consumers: warpgroup c (1 or 2) takes block rows 64 (c - 1) .. +63. ----
  internal::WarpgroupRegistersIncrease<kConsumerRegisters>();
  const int me = warpgroup - 1;
  const int warp_in_group = (threadIdx.x >> 5) & 3;
  const int g = lane >> 2;
  const int t = lane & 3;
  const int first_row = me * 64 + warp_in_group * 16 + g;
  auto row_of = [&](int r) { return first_row + 8 * r; };

  float o_acc[1][kDimTiles][4];
#pragma unroll
  for (int dt = 0; dt < kDimTiles; ++dt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) o_acc[0][dt][e] = 0.0f;
  }
  float m_row[2] = {-INFINITY, -INFINITY};
  float l_row[2] = {0.0f, 0.0f};
  const float scale_log2 = p.sm_scale * kLog2e;

  if (w.num_tiles > 0) {
    // Q: with 64-key tiles, its A fragments straight from global memory into registers (each
    // thread's rows g and g + 8, columns 2t, 2t + 1 and 2t + 8, 2t + 9 of every k-step): read
    // once, no shared memory; with 128-key tiles, this warpgroup's 64 rows into its shared Q
    // tile, which every Q·Kᵀ reads through a descriptor. Padding rows (>= num_rows) are zeros.
    uint32_t q_frag[S::kQInSmem ? 1 : kKSteps][4];
    unsigned char* q_tile = q_tiles + me * S::kQTileBytes;
    if constexpr (S::kQInSmem) {
      // Published to the warpgroup's four warps by the first wait_turn below, a bar.sync
      // that all 128 of its threads reach before any of them issues a wgmma.
      LoadQTileSwizzled<kHeadDim>(p, w, me * 64, q_tile, threadIdx.x % 128);
    } else {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int32_t pr = w.row_base + row_of(i);
        const uint32_t* q_row = nullptr;
        if (pr < w.num_rows) {
          q_row = reinterpret_cast<const uint32_t*>(static_cast<const bf16*>(p.q) +
                                                    internal::PackedRowState(p, w, pr) * kHeadDim);
        }
#pragma unroll
        for (int kk = 0; kk < kKSteps; ++kk) {
          q_frag[kk][i] = q_row != nullptr ? q_row[kk * 8 + t] : 0u;
          q_frag[kk][2 + i] = q_row != nullptr ? q_row[kk * 8 + 4 + t] : 0u;
        }
      }
    }
    auto issue_scores = [&](const unsigned char* kb, TileScores<1, kTileKeys>& scores) {
      if constexpr (S::kQInSmem) {
        IssueWgmmaScoresFromSmem<kHeadDim>(q_tile, kb, scores);
      } else {
        IssueWgmmaScores<kHeadDim>(q_frag, kb, scores);
      }
    };
    // Software-pipelined over tiles (FlashAttention-3's intra-warpgroup overlap): while the
    // tensor cores run P·V of tile it - 1, the softmax of tile it runs on the CUDA cores.
    //   tile 0:  S = Q·K0; softmax; P <- S
    //   tile it: issue S = Q·K(it) and O += P·V(it - 1); wait for S; mask, softmax (its
    //            rescale of O waits); wait for P·V; release stage it - 1; rescale O; P <- S
    //   after:   O += P·V(last); release the last stage
    auto stage_of = [](int32_t it) { return it % kPipelinedStages; };
    auto wait_full = [&](int32_t it) {
      const uint32_t round = static_cast<uint32_t>(it / kPipelinedStages);
      internal::MbarrierWait(SmemAddr(&full[stage_of(it)]), round & 1u);
    };
    auto k_tile = [&](int32_t it) { return stages + stage_of(it) * S::kStageBytes; };
    auto softmax = [&](int32_t it, TileScores<1, kTileKeys>& scores, float(&rescale)[2]) {
      const int32_t tile_start = w.chunk_start + it * kTileKeys;
      if (tile_start + kTileKeys > w.unmasked_end) {
        MaskScores<1>(p, w, tile_start, row_of, scores);
      }
      SoftmaxTile(scale_log2, scores, m_row, l_row, rescale);
    };
    // Ping-pong: consumer c issues its products in turn t only after the other consumer
    // issued its turn t - 1 (consumer 1's turn 0 is released by consumer 2's arrival below).
    // Each consumer takes num_tiles + 1 turns (S of tile 0; S of tile it with P·V of tile
    // it - 1; P·V of the last tile) and hands each one on, except consumer 2 its last: every
    // bar.arrive is then consumed by a bar.sync.
    auto wait_turn = [&] { internal::NamedBarrierSync(kPingPongBarrier + me, 256); };
    auto pass_turn = [&](bool last) {
      if (!(last && me == 1)) internal::NamedBarrierArrive(kPingPongBarrier + (1 - me), 256);
    };
    if (me == 1) internal::NamedBarrierArrive(kPingPongBarrier, 256);
    TileScores<1, kTileKeys> s;
    PFragments<kTileKeys> p_frag;
    float rescale[2];
    wait_full(0);
    wait_turn();
    internal::WgmmaFence();
    issue_scores(k_tile(0), s);
    internal::WgmmaCommit();
    pass_turn(false);
    internal::WgmmaWait<0>();
    softmax(0, s, rescale);  // O is still zero: nothing to rescale
    PackP(s, p_frag);
    for (int32_t it = 1; it < w.num_tiles; ++it) {
      wait_full(it);
      wait_turn();
      internal::WgmmaFence();  // s was read, O rescaled and P packed since the last products
      issue_scores(k_tile(it), s);
      internal::WgmmaCommit();
      IssueWgmmaPV<kHeadDim>(p_frag, k_tile(it - 1) + S::kKvTileBytes, o_acc);
      internal::WgmmaCommit();
      pass_turn(false);
      internal::WgmmaWait<1>();  // S of tile it (the older group)
      softmax(it, s, rescale);
      internal::WgmmaWait<0>();  // P·V of tile it - 1
      internal::MbarrierArrive(SmemAddr(&empty[stage_of(it - 1)]));
      RescaleO<1, kDimTiles>(rescale, o_acc);
      PackP(s, p_frag);
    }
    wait_turn();
    internal::WgmmaFence();
    IssueWgmmaPV<kHeadDim>(p_frag, k_tile(w.num_tiles - 1) + S::kKvTileBytes, o_acc);
    internal::WgmmaCommit();
    pass_turn(true);
    internal::WgmmaWait<0>();
    internal::MbarrierArrive(SmemAddr(&empty[stage_of(w.num_tiles - 1)]));
  }
  StoreRows<kHeadDim, 1>(p, w, row_of, o_acc, m_row, l_row);
  if (internal::MergesInKernel(p)) {
    // Among the consumers only: the producer warp has returned.
    constexpr int kConsumerThreads = 128 * kConsumerWarpgroups;
    internal::MergeTileChunksIfLast<bf16, kHeadDim>(
        p, w, kPipelinedBlockRows, threadIdx.x - 128, kConsumerThreads,
        [] { internal::NamedBarrierSync(kMergeBarrier, kConsumerThreads); });
  }
}

// One instance of the kernel template: its shape and its launch.
template <int kHeadDim, bool kWgmma, int kMTiles>
struct Variant {
  using Shape = PrefillShape<kHeadDim, kWgmma, kMTiles>;

  static cudaError_t Launch(const PrefillAttentionParams& p, cudaStream_t stream) {
    GLIMPSE_CUDA_RETURN_IF_ERROR(
        cudaFuncSetAttribute(PrefillAttentionKernel<kHeadDim, kWgmma, kMTiles>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize, Shape::kSmemBytes));
    const dim3 grid(internal::PrefillGridBlocks(p));
    PrefillAttentionKernel<kHeadDim, kWgmma, kMTiles>
        <<<grid, kThreads, Shape::kSmemBytes, stream>>>(p);
    return cudaGetLastError();
  }
};

// The driver's cuTensorMapEncodeTiled, through the runtime (no libcuda link); null when the
// driver lacks it.
using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                   const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                   const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                   CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
EncodeTiledFn TensorMapEncoder() {
  static const EncodeTiledFn encoder = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult status = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                         &status) != cudaSuccess ||
        status != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      return static_cast<EncodeTiledFn>(nullptr);
    }
    return reinterpret_cast<EncodeTiledFn>(fn);
  }();
  return encoder;
}

// A bf16 cache tensor as TMA sees it: rows of head_dim elements (row = (page * num_kv_heads +
// kv_head) * page_size + slot), boxes of box_rows rows x 64 columns in the 128-byte swizzle.
// The row count is a bound, not the allocation's size, which the kernels never learn: the
// page table keeps every box inside the cache.
cudaError_t EncodeCacheMap(const void* cache, int32_t head_dim, int32_t box_rows,
                           CUtensorMap* map) {
  const EncodeTiledFn encode = TensorMapEncoder();
  if (encode == nullptr) return cudaErrorNotSupported;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(head_dim), cuuint64_t{1} << 31};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(head_dim) * sizeof(bf16)};
  const cuuint32_t box[2] = {64, static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUresult r =
      encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(cache), dims, strides, box,
             element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
             CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

// Keys per TMA box at `page_size`: the largest run of a tile of `tile_keys` keys that never
// crosses a page (tiles start at multiples of tile_keys: the plan's chunks are whole tiles);
// 0 when that is under 8 rows, the swizzle atom, which the pipelined kernels do not handle.
int32_t PipelinedBoxRows(int32_t page_size, int32_t tile_keys) {
  const int32_t rows = page_size > 0 ? std::gcd(page_size, tile_keys) : 0;
  return rows % 8 == 0 ? rows : 0;
}

template <int kHeadDim, int kTileKeys>
struct PipelinedVariant {
  using Shape = PipelinedShape<kHeadDim, kTileKeys>;

  static cudaError_t Launch(const PrefillAttentionParams& p, cudaStream_t stream) {
    PipelinedArgs args;
    args.p = p;
    args.box_rows = PipelinedBoxRows(p.kv.page_size, kTileKeys);
    GLIMPSE_CUDA_RETURN_IF_INVALID(args.box_rows > 0);
    GLIMPSE_CUDA_RETURN_IF_ERROR(
        EncodeCacheMap(p.kv.k_cache, kHeadDim, args.box_rows, &args.k_map));
    GLIMPSE_CUDA_RETURN_IF_ERROR(
        EncodeCacheMap(p.kv.v_cache, kHeadDim, args.box_rows, &args.v_map));
    GLIMPSE_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(PrefillPipelinedKernel<kHeadDim, kTileKeys>,
                                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                      Shape::kSmemBytes));
    const dim3 grid(internal::PrefillGridBlocks(p));
    PrefillPipelinedKernel<kHeadDim, kTileKeys>
        <<<grid, kPipelinedThreads, Shape::kSmemBytes, stream>>>(args);
    return cudaGetLastError();
  }
};

// Returns f(variant) for the instance that runs `kernel` at `head_dim` (32, 64 or 128; the
// wgmma kernels exist at 64 and 128 only, and head_dim 32 runs mma.sync): the one place that
// maps the runtime choice to a template instance.
template <class F>
auto WithVariant(PrefillKernel kernel, int32_t head_dim, F&& f) {
  const bool wgmma = kernel == PrefillKernel::kWgmma;
  const bool wide = kernel == PrefillKernel::kMmaSyncWide;
  const bool pipelined = kernel == PrefillKernel::kWgmmaPipelined;
  const bool pipelined_128 = kernel == PrefillKernel::kWgmmaPipelined128;
  switch (head_dim) {
    case 32:
      return wide ? f(Variant<32, false, 2>{}) : f(Variant<32, false, 1>{});
    case 64:
      return pipelined_128 ? f(PipelinedVariant<64, 128>{})
             : pipelined   ? f(PipelinedVariant<64, 64>{})
             : wgmma       ? f(Variant<64, true, 1>{})
             : wide        ? f(Variant<64, false, 2>{})
                           : f(Variant<64, false, 1>{});
    default:
      return pipelined_128 ? f(PipelinedVariant<128, 128>{})
             : pipelined   ? f(PipelinedVariant<128, 64>{})
             : wgmma       ? f(Variant<128, true, 1>{})
             : wide        ? f(Variant<128, false, 2>{})
                           : f(Variant<128, false, 1>{});
  }
}

// Compute capability major of the current device, cached per device.
int DeviceMajor() {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> majors[kMaxDevices] = {};
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) return 0;
  int major = majors[device].load(std::memory_order_relaxed);
  if (major == 0) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return 0;
    major = prop.major;
    majors[device].store(major, std::memory_order_relaxed);
  }
  return major;
}

}  // namespace

size_t PrefillSharedMemoryBytes(PrefillKernel kernel, int32_t head_dim) {
  return WithVariant(kernel, head_dim,
                     [](auto variant) -> size_t { return decltype(variant)::Shape::kSmemBytes; });
}

PrefillKernel PrefillKernelFor(PrefillKernel requested, int32_t head_dim, int32_t page_size,
                               int compute_major, size_t max_shared_memory_per_block,
                               std::string* why) {
  auto fall_back = [&](PrefillKernel kernel, const std::string& reason) {
    if (why != nullptr) *why = reason;
    return kernel;
  };
  const bool wgmma = requested == PrefillKernel::kWgmma || IsPipelined(requested);
  if (wgmma && compute_major != 9) {
    return fall_back(PrefillKernel::kMmaSync,
                     "wgmma needs a compute capability 9.0 GPU (Hopper), this one is " +
                         std::to_string(compute_major) + ".x");
  }
  if (wgmma && !WgmmaPrefillSupported(head_dim)) {
    return fall_back(PrefillKernel::kMmaSync,
                     "the wgmma kernels exist for head_dim 64 and 128, the model's is " +
                         std::to_string(head_dim));
  }
  if (IsPipelined(requested) && PipelinedBoxRows(page_size, TileKeys(requested)) == 0) {
    return fall_back(PrefillKernel::kWgmma,
                     "its TMA boxes cannot tile pages of " + std::to_string(page_size) +
                         " tokens (the page size needs a multiple of 8 as its largest "
                         "power-of-two factor up to " +
                         std::to_string(TileKeys(requested)) + ", e.g. --block_size=16)");
  }
  const size_t smem = PrefillSharedMemoryBytes(requested, head_dim);
  if (smem > max_shared_memory_per_block) {
    const std::string reason = "a block needs " + std::to_string(smem) +
                               " bytes of shared memory, the GPU grants " +
                               std::to_string(max_shared_memory_per_block);
    if (requested == PrefillKernel::kWgmmaPipelined128) {
      // The same pipeline with 64-key tiles needs less than half of it.
      std::string next_reason;
      const PrefillKernel next =
          PrefillKernelFor(PrefillKernel::kWgmmaPipelined, head_dim, page_size, compute_major,
                           max_shared_memory_per_block, why != nullptr ? &next_reason : nullptr);
      return fall_back(next, next == PrefillKernel::kWgmmaPipelined
                                 ? reason
                                 : reason + "; with 64-key tiles, " + next_reason);
    }
    return fall_back(PrefillKernel::kMmaSync, reason);
  }
  return requested;
}

cudaError_t PlanPrefillAttention(const PrefillPlanInput& in, PrefillPlan* plan) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(plan != nullptr && in.num_seqs >= 0 && in.page_size > 0);
  GLIMPSE_CUDA_RETURN_IF_INVALID(in.num_kv_heads > 0 && in.num_qo_heads > 0 &&
                                 in.num_qo_heads % in.num_kv_heads == 0);
  const int32_t group = in.num_qo_heads / in.num_kv_heads;
  const int32_t block_rows = BlockRows(in.kernel);
  const int32_t tile_keys = TileKeys(in.kernel);
  plan->block_rows = block_rows;
  plan->work_items.clear();
  plan->total_q = in.num_seqs > 0 ? in.qo_indptr[in.num_seqs] : 0;
  int32_t max_kv = 1;
  int64_t num_tiles = 0;
  for (int32_t s = 0; s < in.num_seqs; ++s) {
    const int32_t qo_len = in.qo_indptr[s + 1] - in.qo_indptr[s];
    const int32_t kv_len = KvLength(in.kv_indptr[s + 1] - in.kv_indptr[s],
                                    in.kv_last_page_len[s], in.page_size);
    GLIMPSE_CUDA_RETURN_IF_INVALID(qo_len >= 0 && qo_len <= kv_len);
    GLIMPSE_CUDA_RETURN_IF_INVALID(in.mask_mode != AttentionMaskMode::kTree || qo_len <= 64);
    max_kv = std::max(max_kv, kv_len);
    num_tiles += (static_cast<int64_t>(qo_len) * group + block_rows - 1) / block_rows;
  }
  plan->chunk_keys = (max_kv + tile_keys - 1) / tile_keys * tile_keys;
  plan->num_chunks = 1;
  // With 83-105 KB of shared memory per block (head_dim 128) two blocks fit on an SM; split
  // the KV when the query tiles alone cannot fill two waves.
  const int64_t blocks = num_tiles * in.num_kv_heads;
  const int64_t target = 2 * static_cast<int64_t>(std::max(in.num_sms, 1));
  if (blocks > 0 && blocks < target) {
    const int64_t want = (target + blocks - 1) / blocks;
    int64_t chunk = (max_kv + want - 1) / want;
    chunk = std::max<int64_t>((chunk + tile_keys - 1) / tile_keys * tile_keys, kMinChunkKeys);
    const int64_t n = (max_kv + chunk - 1) / chunk;
    if (n > 1) {
      plan->chunk_keys = static_cast<int32_t>(chunk);
      plan->num_chunks = static_cast<int32_t>(n);
    }
  }
  // Longest first (see "Launch order" in the header): each work item's cost is the key tiles
  // it reads plus one for its Q load, setup and epilogue.
  struct Item {
    int32_t seq, tile, chunk;
    int64_t cost;
  };
  std::vector<Item> items;
  int64_t total_keys = 0;
  for (int32_t s = 0; s < in.num_seqs; ++s) {
    const int32_t qo_len = in.qo_indptr[s + 1] - in.qo_indptr[s];
    const int32_t kv_len = KvLength(in.kv_indptr[s + 1] - in.kv_indptr[s],
                                    in.kv_last_page_len[s], in.page_size);
    total_keys += kv_len;
    const int32_t tiles = (qo_len * group + block_rows - 1) / block_rows;
    const int32_t chunks = NumKvChunks(kv_len, plan->chunk_keys);
    for (int32_t tile = 0; tile < tiles; ++tile) {
      for (int32_t c = 0; c < chunks; ++c) {
        const int32_t keys = std::max(
            0, internal::BlockKeyEnd(in.mask_mode == AttentionMaskMode::kCausal, qo_len, kv_len,
                                     group, block_rows, tile, c, plan->chunk_keys) -
                   c * plan->chunk_keys);
        items.push_back({s, tile, c, 1 + (keys + tile_keys - 1) / tile_keys});
      }
    }
  }
  std::stable_sort(items.begin(), items.end(),
                   [](const Item& a, const Item& b) { return a.cost > b.cost; });
  plan->work_items.reserve(3 * items.size());
  for (const Item& item : items) {
    plan->work_items.insert(plan->work_items.end(), {item.seq, item.tile, item.chunk});
  }
  // As many kv heads per pass as keep the KV its blocks read within half the L2.
  plan->heads_per_pass = in.num_kv_heads;
  if (in.kv_bytes_per_key > 0 && in.l2_cache_bytes > 0 && total_keys > 0) {
    const int64_t fit = in.l2_cache_bytes / 2 / (total_keys * in.kv_bytes_per_key);
    plan->heads_per_pass =
        static_cast<int32_t>(std::clamp<int64_t>(fit, 1, static_cast<int64_t>(in.num_kv_heads)));
  }
  return cudaSuccess;
}

size_t PrefillWorkspaceBytes(const PrefillPlan& plan, int32_t num_qo_heads, int32_t head_dim) {
  if (plan.num_chunks <= 1) return 0;
  return SplitWorkspaceFloats(plan.num_chunks, plan.total_q, num_qo_heads, head_dim) *
         sizeof(float);
}

void ApplyPrefillPlan(const PrefillPlan& plan, PrefillAttentionParams* params) {
  params->block_rows = plan.block_rows;
  params->total_q = plan.total_q;
  params->chunk_keys = plan.chunk_keys;
  params->num_chunks = plan.num_chunks;
  params->num_work_items = plan.num_work_items();
  params->heads_per_pass = plan.heads_per_pass;
}

cudaError_t LaunchPrefillAttention(const PrefillAttentionParams& params, cudaStream_t stream) {
  const PagedKv& kv = params.kv;
  GLIMPSE_CUDA_RETURN_IF_INVALID(kv.num_kv_heads > 0 && kv.num_kv_heads <= 65535 &&
                                 params.num_qo_heads > 0 &&
                                 params.num_qo_heads % kv.num_kv_heads == 0);
  GLIMPSE_CUDA_RETURN_IF_INVALID(kv.head_dim == 32 || kv.head_dim == 64 || kv.head_dim == 128);
  GLIMPSE_CUDA_RETURN_IF_INVALID(kv.page_size > 0 && params.chunk_keys > 0 &&
                                 params.num_chunks >= 1 && params.num_work_items >= 0);
  GLIMPSE_CUDA_RETURN_IF_INVALID(internal::IsAligned16(params.q) &&
                                 internal::IsAligned16(params.o) &&
                                 internal::IsAligned16(kv.k_cache) &&
                                 internal::IsAligned16(kv.v_cache));
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.qo_indptr != nullptr && kv.kv_indptr != nullptr &&
                                 kv.kv_indices != nullptr && kv.kv_last_page_len != nullptr);
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.mask_mode != AttentionMaskMode::kTree ||
                                 params.tree_mask != nullptr);
  if (params.num_chunks > 1) {
    GLIMPSE_CUDA_RETURN_IF_INVALID(
        params.workspace != nullptr && internal::IsAligned16(params.workspace) &&
        params.workspace_bytes >=
            SplitWorkspaceFloats(params.num_chunks, params.total_q, params.num_qo_heads,
                                 kv.head_dim) *
                sizeof(float));
    GLIMPSE_CUDA_RETURN_IF_INVALID(params.merge_counters == nullptr ||
                                   params.num_merge_counters >=
                                       PrefillMergeCounters(params.total_q, params.num_qo_heads));
  }
  // The plan's tiles must be the kernel's (PrefillPlanInput::kernel); the fp32 kernel takes
  // kMmaSync's.
  GLIMPSE_CUDA_RETURN_IF_INVALID(
      params.dtype == DType::kBF16 ||
      (params.dtype == DType::kF32 && params.kernel == PrefillKernel::kMmaSync));
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.block_rows == BlockRows(params.kernel) &&
                                 params.chunk_keys % TileKeys(params.kernel) == 0);
  if (params.num_work_items == 0) return cudaSuccess;
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.work_items != nullptr && params.heads_per_pass >= 0);
  // One block per work item and kv head, in a one-dimensional grid (PrefillBlockOf).
  GLIMPSE_CUDA_RETURN_IF_INVALID(static_cast<int64_t>(params.num_work_items) * kv.num_kv_heads <=
                                 std::numeric_limits<int32_t>::max());
  if (params.kernel == PrefillKernel::kWgmma || IsPipelined(params.kernel)) {
    GLIMPSE_CUDA_RETURN_IF_INVALID(WgmmaPrefillSupported(kv.head_dim));
    GLIMPSE_CUDA_RETURN_IF_INVALID(DeviceMajor() == 9);
  }
  if (IsPipelined(params.kernel)) {
    GLIMPSE_CUDA_RETURN_IF_INVALID(PipelinedBoxRows(kv.page_size, TileKeys(params.kernel)) > 0);
  }
  if (params.dtype == DType::kF32) {
    GLIMPSE_CUDA_RETURN_IF_ERROR(internal::LaunchPrefillAttentionF32Blocks(params, stream));
  } else {
    GLIMPSE_CUDA_RETURN_IF_ERROR(WithVariant(params.kernel, kv.head_dim, [&](auto variant) {
      return decltype(variant)::Launch(params, stream);
    }));
  }
  // Merged in the launch above (MergeTileChunksIfLast), or by a second one.
  if (params.num_chunks == 1 || params.merge_counters != nullptr) return cudaSuccess;
  MergeStatesParams merge;
  merge.dtype = params.dtype;
  merge.partial_o = static_cast<const float*>(params.workspace);
  merge.partial_lse = merge.partial_o + static_cast<int64_t>(params.num_chunks) *
                                            params.total_q * params.num_qo_heads * kv.head_dim;
  merge.o = params.o;
  merge.lse = params.lse;
  merge.qo_indptr = params.qo_indptr;
  merge.num_seqs = params.num_seqs;
  merge.kv_indptr = kv.kv_indptr;
  merge.kv_last_page_len = kv.kv_last_page_len;
  merge.page_size = kv.page_size;
  merge.chunk_keys = params.chunk_keys;
  merge.num_chunks = params.num_chunks;
  merge.num_rows = params.total_q;
  merge.num_qo_heads = params.num_qo_heads;
  merge.head_dim = kv.head_dim;
  return LaunchMergeAttentionStates(merge, stream);
}

}  // namespace glimpse::kernels::cuda
