#include "kernels/cuda/prefill_attention.h"

#include <algorithm>
#include <atomic>

#include "kernels/cuda/attention_common.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/mma_utils.cuh"

namespace glimpse::kernels::cuda {
namespace {

using internal::bf16;
using internal::CpAsync16;
using internal::kFullMask;
using internal::kLn2;
using internal::kLog2e;
using internal::SmemAddr;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTileM = 64;   // packed query rows per m-tile (16 per warp)
constexpr int kBlockN = 64;  // keys per KV tile
constexpr int kMinChunkKeys = 256;

// Rows of a block: kMTiles m-tiles of 64 (each warp takes 16 rows of every m-tile).
inline int32_t BlockRows(PrefillKernel kernel) {
  return kernel == PrefillKernel::kMmaSyncWide ? 2 * kTileM : kTileM;
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
      const int chunk = (col % 64) / 8;
      return (col / 64) * (kBlockN * 128) + row * 128 + ((chunk ^ (row & 7)) * 16);
    } else {
      return (row * kStride + col) * static_cast<int>(sizeof(bf16));
    }
  }
};

// Issues the cp.async copies of KV tile `tile_start .. +63` of (sequence, kv_head) into
// k_dst / v_dst (PrefillShape's layout). Keys >= key_end become zero rows: their scores are
// masked to -inf and zero V rows keep 0 * garbage from turning into NaN.
template <int kHeadDim, bool kWgmma>
__device__ __forceinline__ void LoadKvTile(const PrefillAttentionParams& p, int32_t page_begin,
                                           int kv_head, int32_t tile_start, int32_t key_end,
                                           unsigned char* k_dst, unsigned char* v_dst) {
  using S = PrefillShape<kHeadDim, kWgmma>;
  const bf16* k_cache = static_cast<const bf16*>(p.kv.k_cache);
  const bf16* v_cache = static_cast<const bf16*>(p.kv.v_cache);
  const int col = (threadIdx.x % S::kChunksPerRow) * 8;
#pragma unroll
  for (int pass = 0; pass < S::kPasses; ++pass) {
    const int row = threadIdx.x / S::kChunksPerRow + pass * S::kRowsPerPass;
    const int32_t key = tile_start + row;
    const bool valid = key < key_end;
    int64_t off = 0;
    if (valid) {
      off = PagedKeyOffset(p.kv.kv_indices + page_begin, key, kv_head, p.kv.num_kv_heads,
                           p.kv.page_size, kHeadDim) +
            col;
    }
    const int dst = S::KvTileOffset(row, col);
    CpAsync16(SmemAddr(k_dst + dst), k_cache + off, valid);
    CpAsync16(SmemAddr(v_dst + dst), v_cache + off, valid);
  }
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

  const int32_t seq = p.work_items[3 * blockIdx.x];
  const int32_t m_tile = p.work_items[3 * blockIdx.x + 1];
  const int32_t chunk = p.work_items[3 * blockIdx.x + 2];
  const int kv_head = blockIdx.y;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int g = lane >> 2;
  const int t = lane & 3;
  const int group = p.num_qo_heads / p.kv.num_kv_heads;

  const int32_t qo_start = p.qo_indptr[seq];
  const int32_t qo_len = p.qo_indptr[seq + 1] - qo_start;
  const int32_t page_begin = p.kv.kv_indptr[seq];
  const int32_t kv_len = KvLength(p.kv.kv_indptr[seq + 1] - page_begin,
                                  p.kv.kv_last_page_len[seq], p.kv.page_size);
  const int32_t num_rows = qo_len * group;
  const int32_t row_base = m_tile * S::kBlockM;
  const int32_t prefix = kv_len - qo_len;  // KV index of query token 0
  const bool tree = p.mask_mode == AttentionMaskMode::kTree;

  // Keys this block reads: its chunk, and for causal rows nothing past the last row's token.
  const int32_t chunk_start = chunk * p.chunk_keys;
  int32_t key_end = min(kv_len, chunk_start + p.chunk_keys);
  const int32_t last_row = min(num_rows, row_base + S::kBlockM) - 1;
  if (!tree) key_end = min(key_end, prefix + last_row / group + 1);
  // Keys below this are visible to every row of the block: no mask needed there.
  const int32_t unmasked_end = min(key_end, tree ? prefix : prefix + row_base / group + 1);
  const int32_t num_tiles = key_end > chunk_start ? (key_end - chunk_start + kBlockN - 1) / kBlockN
                                                  : 0;

  // This thread's rows: row r = 2 * mt + i is block row mt * 64 + warp * 16 + g + 8 * i, of
  // query token RowToken(r). Padding rows (>= num_rows) compute with a clamped token and are
  // never written. (Recomputed where the mask needs it rather than held in registers, which
  // two m-tiles of head_dim 128 do not have to spare.)
  auto row_token = [&](int r) {
    const int32_t pr = row_base + (r / 2) * kTileM + warp * 16 + g + 8 * (r % 2);
    return min(pr / group, qo_len - 1);
  };

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

  if (num_tiles > 0) {
    // Q tile: packed row r -> (token r / group, query head kv_head * group + r % group).
    {
      const bf16* q = static_cast<const bf16*>(p.q);
      const int col = (threadIdx.x % S::kChunksPerRow) * 8;
#pragma unroll
      for (int pass = 0; pass < kMTiles * S::kPasses; ++pass) {
        const int row = threadIdx.x / S::kChunksPerRow + pass * S::kRowsPerPass;
        const int32_t pr = row_base + row;
        const bool valid = pr < num_rows;
        int64_t off = 0;
        if (valid) {
          const int32_t token = pr / group;
          const int32_t j = pr - token * group;
          off = (static_cast<int64_t>(qo_start + token) * p.num_qo_heads + kv_head * group + j) *
                    kHeadDim +
                col;
        }
        CpAsync16(SmemAddr(q_s + row * S::kStride + col), q + off, valid);
      }
    }
    LoadKvTile<kHeadDim, kWgmma>(p, page_begin, kv_head, chunk_start, key_end, k_s, v_s);
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
    for (int32_t it = 0; it < num_tiles; ++it) {
      const int buf = it & 1;
      if (it + 1 < num_tiles) {
        // The other buffer was released by the barrier at the end of iteration it - 1.
        LoadKvTile<kHeadDim, kWgmma>(p, page_begin, kv_head, chunk_start + (it + 1) * kBlockN,
                                     key_end, k_s + (buf ^ 1) * S::kKvTileBytes,
                                     v_s + (buf ^ 1) * S::kKvTileBytes);
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
      const int32_t tile_start = chunk_start + it * kBlockN;
      const unsigned char* kb = k_s + buf * S::kKvTileBytes;
      const unsigned char* vb = v_s + buf * S::kKvTileBytes;

      // S = Q·Kᵀ: 8 n-tiles of 8 keys per m-tile.
      float s[kMTiles][kBlockN / 8][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
        for (int nt = 0; nt < kBlockN / 8; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.0f;
        }
      }
      if constexpr (kWgmma) {
        // B = the K tile, K-major: k-step kk is 32 bytes into its 64-column half.
        internal::WgmmaFence();
#pragma unroll
        for (int kk = 0; kk < kKSteps; ++kk) {
          const uint64_t desc = internal::SmemDescSw128(
              SmemAddr(kb + (kk / 4) * (kBlockN * 128) + (kk % 4) * 32), 16, 1024);
          internal::WgmmaM64N64K16<0>(s[0], q_frag[0][kQInRegisters ? kk : 0], desc, kk > 0);
        }
        internal::WgmmaCommit();
        internal::WgmmaWait<0>();
      } else {
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
      if (tile_start + kBlockN > unmasked_end) {
        // Keys past key_end, past the row's token (causal) or off its tree path are masked.
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          const int mt = r / 2;
          const int i = r % 2;
          const int32_t token = row_token(r);
          const int32_t row_limit = prefix + token;
          const uint64_t row_tree = tree ? p.tree_mask[qo_start + token] : 0;
#pragma unroll
          for (int nt = 0; nt < kBlockN / 8; ++nt) {
#pragma unroll
            for (int e = 2 * i; e < 2 * i + 2; ++e) {
              const int32_t key = tile_start + nt * 8 + 2 * t + (e & 1);
              const bool visible =
                  key < key_end &&
                  (tree ? (key < prefix || ((row_tree >> (key - prefix)) & 1u) != 0)
                        : key <= row_limit);
              if (!visible) s[mt][nt][e] = -INFINITY;
            }
          }
        }
      }
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
        for (int nt = 0; nt < kBlockN / 8; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) s[mt][nt][e] *= scale_log2;
        }
      }
      // Online softmax; the four lanes of a quad (same g) share a row.
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const int mt = r / 2;
        const int i = r % 2;
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < kBlockN / 8; ++nt) {
          mx = fmaxf(mx, fmaxf(s[mt][nt][2 * i], s[mt][nt][2 * i + 1]));
        }
        mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 2));
        const float m_new = fmaxf(m_row[r], mx);
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;
        const float rescale = exp2f(m_row[r] - m_use);
        m_row[r] = m_new;
        l_row[r] *= rescale;
#pragma unroll
        for (int dt = 0; dt < kDimTiles; ++dt) {
          o_acc[mt][dt][2 * i] *= rescale;
          o_acc[mt][dt][2 * i + 1] *= rescale;
        }
#pragma unroll
        for (int nt = 0; nt < kBlockN / 8; ++nt) {
          s[mt][nt][2 * i] = exp2f(s[mt][nt][2 * i] - m_use);
          s[mt][nt][2 * i + 1] = exp2f(s[mt][nt][2 * i + 1] - m_use);
          l_row[r] += s[mt][nt][2 * i] + s[mt][nt][2 * i + 1];
        }
      }
      // O += P·V: P from the S accumulators (C layout == A layout per 16-key step).
      if constexpr (kWgmma) internal::WgmmaFence();  // o_acc was rescaled above
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        uint32_t a[kMTiles][4];
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          a[mt][0] = internal::PackBf16x2(s[mt][2 * kk][0], s[mt][2 * kk][1]);
          a[mt][1] = internal::PackBf16x2(s[mt][2 * kk][2], s[mt][2 * kk][3]);
          a[mt][2] = internal::PackBf16x2(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
          a[mt][3] = internal::PackBf16x2(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
        }
        if constexpr (kWgmma) {
          // B = the V tile, MN-major (head dims contiguous): keys 16kk.. start 16 rows down;
          // the second 64-column half is 8 KiB on (LBO).
          const uint64_t desc =
              internal::SmemDescSw128(SmemAddr(vb + kk * 16 * 128), kBlockN * 128, 1024);
          if constexpr (kHeadDim == 64) {
            internal::WgmmaM64N64K16<1>(o_acc[0], a[0], desc, true);
          } else {
            internal::WgmmaM64N128K16<1>(o_acc[0], a[0], desc, true);
          }
        } else {
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
      if constexpr (kWgmma) {
        internal::WgmmaCommit();
        internal::WgmmaWait<0>();
      }
      __syncthreads();  // all warps done with buffer `buf` before it is refilled
    }
  }

  const bool split = p.num_chunks > 1;
  float* ws_o = static_cast<float*>(p.workspace);
  float* ws_lse =
      ws_o + static_cast<int64_t>(p.num_chunks) * p.total_q * p.num_qo_heads * kHeadDim;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int mt = r / 2;
    const int i = r % 2;
    float l = l_row[r];
    l += __shfl_xor_sync(kFullMask, l, 1);
    l += __shfl_xor_sync(kFullMask, l, 2);
    const int32_t pr = row_base + mt * kTileM + warp * 16 + g + 8 * i;
    if (pr >= num_rows) continue;
    const int32_t token = pr / group;
    const int32_t j = pr - token * group;
    const int64_t state =
        static_cast<int64_t>(qo_start + token) * p.num_qo_heads + kv_head * group + j;
    const bool empty = m_row[r] == -INFINITY;
    const float inv_l = empty ? 0.0f : 1.0f / l;
    const float lse = empty ? -INFINITY : (m_row[r] + log2f(l)) * kLn2;
    if (split) {
      const int64_t cs = static_cast<int64_t>(chunk) * p.total_q * p.num_qo_heads + state;
      float* dst = ws_o + cs * kHeadDim + 2 * t;
#pragma unroll
      for (int dt = 0; dt < kDimTiles; ++dt) {
        *reinterpret_cast<float2*>(dst + dt * 8) =
            make_float2(o_acc[mt][dt][2 * i] * inv_l, o_acc[mt][dt][2 * i + 1] * inv_l);
      }
      if (t == 0) ws_lse[cs] = lse;
    } else {
      bf16* dst = static_cast<bf16*>(p.o) + state * kHeadDim + 2 * t;
#pragma unroll
      for (int dt = 0; dt < kDimTiles; ++dt) {
        *reinterpret_cast<__nv_bfloat162*>(dst + dt * 8) =
            __floats2bfloat162_rn(o_acc[mt][dt][2 * i] * inv_l, o_acc[mt][dt][2 * i + 1] * inv_l);
      }
      if (t == 0 && p.lse != nullptr) p.lse[state] = lse;
    }
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
    const dim3 grid(p.num_work_items, p.kv.num_kv_heads);
    PrefillAttentionKernel<kHeadDim, kWgmma, kMTiles>
        <<<grid, kThreads, Shape::kSmemBytes, stream>>>(p);
    return cudaGetLastError();
  }
};

// Returns f(Variant<...>{}) for the instance that runs `kernel` at `head_dim` (32, 64 or 128;
// wgmma exists at 64 and 128 only, and head_dim 32 runs mma.sync): the one place that maps
// the runtime choice to a template instance.
template <class F>
auto WithVariant(PrefillKernel kernel, int32_t head_dim, F&& f) {
  const bool wgmma = kernel == PrefillKernel::kWgmma;
  const bool wide = kernel == PrefillKernel::kMmaSyncWide;
  switch (head_dim) {
    case 32:
      return wide ? f(Variant<32, false, 2>{}) : f(Variant<32, false, 1>{});
    case 64:
      return wgmma  ? f(Variant<64, true, 1>{})
             : wide ? f(Variant<64, false, 2>{})
                    : f(Variant<64, false, 1>{});
    default:
      return wgmma  ? f(Variant<128, true, 1>{})
             : wide ? f(Variant<128, false, 2>{})
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

PrefillKernel PrefillKernelFor(PrefillKernel requested, int32_t head_dim, int compute_major,
                               size_t max_shared_memory_per_block) {
  if (requested == PrefillKernel::kWgmma &&
      (compute_major != 9 || !WgmmaPrefillSupported(head_dim))) {
    return PrefillKernel::kMmaSync;
  }
  if (PrefillSharedMemoryBytes(requested, head_dim) > max_shared_memory_per_block) {
    return PrefillKernel::kMmaSync;
  }
  return requested;
}

cudaError_t PlanPrefillAttention(const PrefillPlanInput& in, PrefillPlan* plan) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(plan != nullptr && in.num_seqs >= 0 && in.page_size > 0);
  GLIMPSE_CUDA_RETURN_IF_INVALID(in.num_kv_heads > 0 && in.num_qo_heads > 0 &&
                                 in.num_qo_heads % in.num_kv_heads == 0);
  const int32_t group = in.num_qo_heads / in.num_kv_heads;
  const int32_t block_rows = BlockRows(in.kernel);
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
  plan->chunk_keys = (max_kv + kBlockN - 1) / kBlockN * kBlockN;
  plan->num_chunks = 1;
  // With 83-105 KB of shared memory per block (head_dim 128) two blocks fit on an SM; split
  // the KV when the query tiles alone cannot fill two waves.
  const int64_t blocks = num_tiles * in.num_kv_heads;
  const int64_t target = 2 * static_cast<int64_t>(std::max(in.num_sms, 1));
  if (blocks > 0 && blocks < target) {
    const int64_t want = (target + blocks - 1) / blocks;
    int64_t chunk = (max_kv + want - 1) / want;
    chunk = std::max<int64_t>((chunk + kBlockN - 1) / kBlockN * kBlockN, kMinChunkKeys);
    const int64_t n = (max_kv + chunk - 1) / chunk;
    if (n > 1) {
      plan->chunk_keys = static_cast<int32_t>(chunk);
      plan->num_chunks = static_cast<int32_t>(n);
    }
  }
  for (int32_t s = 0; s < in.num_seqs; ++s) {
    const int32_t qo_len = in.qo_indptr[s + 1] - in.qo_indptr[s];
    const int32_t kv_len = KvLength(in.kv_indptr[s + 1] - in.kv_indptr[s],
                                    in.kv_last_page_len[s], in.page_size);
    const int32_t tiles = (qo_len * group + block_rows - 1) / block_rows;
    const int32_t chunks = NumKvChunks(kv_len, plan->chunk_keys);
    // Under the causal mask later tiles see more keys: start them first.
    for (int32_t tile = tiles - 1; tile >= 0; --tile) {
      for (int32_t c = 0; c < chunks; ++c) {
        plan->work_items.push_back(s);
        plan->work_items.push_back(tile);
        plan->work_items.push_back(c);
      }
    }
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
  }
  // The plan's tiles must be the kernel's (PrefillPlanInput::kernel).
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.block_rows == BlockRows(params.kernel));
  if (params.num_work_items == 0) return cudaSuccess;
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.work_items != nullptr);
  if (params.kernel == PrefillKernel::kWgmma) {
    GLIMPSE_CUDA_RETURN_IF_INVALID(WgmmaPrefillSupported(kv.head_dim));
    GLIMPSE_CUDA_RETURN_IF_INVALID(DeviceMajor() == 9);
  }
  GLIMPSE_CUDA_RETURN_IF_ERROR(WithVariant(params.kernel, kv.head_dim, [&](auto variant) {
    return decltype(variant)::Launch(params, stream);
  }));
  if (params.num_chunks == 1) return cudaSuccess;
  MergeStatesParams merge;
  merge.dtype = DType::kBF16;
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
