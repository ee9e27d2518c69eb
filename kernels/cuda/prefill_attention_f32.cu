// Prefill / tree-verification attention over an fp32 paged KV cache, on CUDA cores.
//
// The fp32 cache is the exact path (the CPU backend's numbers to fp32 rounding), so nothing is
// rounded to bf16 and tensor cores (bf16 or TF32) are not used. Without this kernel a prefill
// chunk of T tokens ran as T decode rows, each reading its whole prefix: T times the KV bytes.
// Here, as in the tensor-core kernels, a block takes 64 packed query rows of one KV head (the
// GQA group's heads of 64 / group tokens, the plan of PrefillKernel::kMmaSync) and reads each
// K/V tile once for all of them:
//
//   block: 4 warps x 16 rows; lane = 8 * rg + kg holds rows 4 rg .. 4 rg + 3 of its warp
//   per 32-key tile:
//     S[64][32] = Q[64][D] · K[32][D]ᵀ   thread: its 4 rows x keys kg, kg + 8, kg + 16, kg + 24
//                                        (float4 reads: Q rows broadcast to the 8 kg lanes,
//                                        8 K rows in 8 different bank groups)
//     online softmax per row             (max and sum across the 8 kg lanes by shuffles)
//     P -> shared (rows private to the warp)
//     O[64][D] += P[64][32] · V[32][D]   thread: its 4 rows x head dims 4 (kg + 8 m) .. + 3
//                                        (V rows read as 128 contiguous bytes per 8 lanes)
//
// K and V have one shared-memory tile each and are loaded with cp.async a phase ahead: the
// next K tile streams in during this tile's softmax and P·V, the next V tile during the next
// tile's Q·Kᵀ. Shared memory: Q 64 rows, K and V 32 rows each (rows padded by 16 bytes), P
// 64 x 36 floats: 75 KiB at head_dim 128.
#include "kernels/cuda/prefill_attention_f32.h"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/mma_utils.cuh"
#include "kernels/cuda/prefill_work.cuh"

namespace glimpse::kernels::cuda::internal {
namespace {

constexpr int kThreads = 128;
constexpr int kBlockRows = kMmaSyncBlockRows;  // packed query rows per block
constexpr int kTileKeys = 32;   // keys per K/V tile
constexpr int kKeyLanes = 8;    // lanes sharing a group of rows, splitting keys and head dims
constexpr int kRowsPerThread = 4;
constexpr int kKeysPerThread = kTileKeys / kKeyLanes;
static_assert(kThreads / 32 * 32 / kKeyLanes * kRowsPerThread == kBlockRows, "rows per block");

template <int kHeadDim>
struct F32Shape {
  static constexpr int kStride = kHeadDim + 4;    // floats per padded Q, K or V row
  static constexpr int kPStride = kTileKeys + 4;  // floats per P row
  static constexpr int kQFloats = kBlockRows * kStride;
  static constexpr int kKvFloats = kTileKeys * kStride;
  static constexpr int kPFloats = kBlockRows * kPStride;
  static constexpr int kSmemBytes =
      (kQFloats + 2 * kKvFloats + kPFloats) * static_cast<int>(sizeof(float));
  static constexpr int kChunksPerRow = kHeadDim / 4;           // 16-byte chunks per row
  static constexpr int kDimVecs = kHeadDim / (4 * kKeyLanes);  // float4s of O per row and lane
  static_assert(kTileKeys * kChunksPerRow % kThreads == 0, "KV tile copies per thread");
  static_assert(kBlockRows * kChunksPerRow % kThreads == 0, "Q tile copies per thread");
};

// Issues the cp.async copies of the KV tile of `cache` at keys tile_start .. +31 into `dst`;
// keys >= key_end become zero rows (their scores are masked, and zero V rows keep P = 0 from
// meeting garbage).
template <int kHeadDim>
__device__ __forceinline__ void LoadKvTile(const PrefillAttentionParams& p, const float* cache,
                                           const FastDivider& page_div, const BlockWork& w,
                                           int32_t tile_start, float* dst) {
  using S = F32Shape<kHeadDim>;
#pragma unroll
  for (int pass = 0; pass < kTileKeys * S::kChunksPerRow / kThreads; ++pass) {
    const int c = pass * kThreads + threadIdx.x;
    const int row = c / S::kChunksPerRow;
    const int col = (c % S::kChunksPerRow) * 4;
    const int32_t key = tile_start + row;
    const bool valid = key < w.key_end;
    int64_t off = 0;
    if (valid) {
      off = PagedKeyOffset(p.kv.kv_indices + w.page_begin, key, w.kv_head, p.kv.num_kv_heads,
                           p.kv.page_size, kHeadDim, page_div) +
            col;
    }
    CpAsync16(SmemAddr(dst + row * S::kStride + col), cache + off, valid);
  }
}

// Issues the cp.async copies of the block's Q rows: packed row r -> (token r / group, query
// head kv_head * group + r % group); rows past num_rows become zeros.
template <int kHeadDim>
__device__ __forceinline__ void LoadQTile(const PrefillAttentionParams& p, const BlockWork& w,
                                          float* dst) {
  using S = F32Shape<kHeadDim>;
  const float* q = static_cast<const float*>(p.q);
#pragma unroll
  for (int pass = 0; pass < kBlockRows * S::kChunksPerRow / kThreads; ++pass) {
    const int c = pass * kThreads + threadIdx.x;
    const int row = c / S::kChunksPerRow;
    const int col = (c % S::kChunksPerRow) * 4;
    const int32_t pr = w.row_base + row;
    const bool valid = pr < w.num_rows;
    int64_t off = 0;
    if (valid) off = PackedRowState(p, w, pr) * kHeadDim + col;
    CpAsync16(SmemAddr(dst + row * S::kStride + col), q + off, valid);
  }
}

__device__ __forceinline__ float Dot4(float acc, const float4& a, const float4& b) {
  acc = fmaf(a.x, b.x, acc);
  acc = fmaf(a.y, b.y, acc);
  acc = fmaf(a.z, b.z, acc);
  return fmaf(a.w, b.w, acc);
}

// Grid: PrefillGridBlocks(p) blocks. Dynamic shared memory: F32Shape::kSmemBytes.
template <int kHeadDim>
__global__ void __launch_bounds__(kThreads) PrefillAttentionF32Kernel(PrefillAttentionParams p) {
  using S = F32Shape<kHeadDim>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* q_s = reinterpret_cast<float*>(smem_raw);  // [kBlockRows][kStride]
  float* k_s = q_s + S::kQFloats;                   // [kTileKeys][kStride]
  float* v_s = k_s + S::kKvFloats;                  // [kTileKeys][kStride]
  float* p_s = v_s + S::kKvFloats;                  // [kBlockRows][kPStride]

  const BlockWork w = DescribeBlock(p, kBlockRows, kTileKeys);
  const FastDivider page_div(p.kv.page_size);
  const int lane = threadIdx.x & 31;
  const int kg = lane % kKeyLanes;
  // This thread's rows: block rows row0 .. row0 + 3.
  const int row0 = (threadIdx.x >> 5) * 16 + (lane / kKeyLanes) * kRowsPerThread;

  float o_acc[kRowsPerThread][S::kDimVecs][4];
  float m_row[kRowsPerThread];  // running max, log2 units
  float l_row[kRowsPerThread];  // this lane's part of the running sum
  RowMask masks[kRowsPerThread];
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
#pragma unroll
    for (int v = 0; v < S::kDimVecs; ++v) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o_acc[i][v][e] = 0.0f;
    }
    m_row[i] = -INFINITY;
    l_row[i] = 0.0f;
    masks[i] = RowMaskOf(p, w, RowToken(w, row0 + i));
  }
  const float scale_log2 = p.sm_scale * kLog2e;
  const float* k_cache = static_cast<const float*>(p.kv.k_cache);
  const float* v_cache = static_cast<const float*>(p.kv.v_cache);

  if (w.num_tiles > 0) {
    // Commit groups, in order: Q + K(0), V(0), then per tile it: K(it + 1), V(it + 1) (empty
    // past the last tile, so that every wait below counts the same groups).
    LoadQTile<kHeadDim>(p, w, q_s);
    LoadKvTile<kHeadDim>(p, k_cache, page_div, w, w.chunk_start, k_s);
    CpAsyncCommit();
    LoadKvTile<kHeadDim>(p, v_cache, page_div, w, w.chunk_start, v_s);
    CpAsyncCommit();
    for (int32_t it = 0; it < w.num_tiles; ++it) {
      const int32_t tile_start = w.chunk_start + it * kTileKeys;
      const bool more = it + 1 < w.num_tiles;
      CpAsyncWait<1>();  // K(it) (and Q) landed; V(it) may still be in flight
      __syncthreads();

      // S = Q·Kᵀ for this thread's 4 rows x 4 keys.
      float s[kRowsPerThread][kKeysPerThread];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
#pragma unroll
        for (int j = 0; j < kKeysPerThread; ++j) s[i][j] = 0.0f;
      }
#pragma unroll 4
      for (int d = 0; d < kHeadDim; d += 4) {
        float4 q4[kRowsPerThread];
        float4 k4[kKeysPerThread];
#pragma unroll
        for (int i = 0; i < kRowsPerThread; ++i) {
          q4[i] = *reinterpret_cast<const float4*>(q_s + (row0 + i) * S::kStride + d);
        }
#pragma unroll
        for (int j = 0; j < kKeysPerThread; ++j) {
          k4[j] = *reinterpret_cast<const float4*>(k_s + (kg + kKeyLanes * j) * S::kStride + d);
        }
#pragma unroll
        for (int i = 0; i < kRowsPerThread; ++i) {
#pragma unroll
          for (int j = 0; j < kKeysPerThread; ++j) s[i][j] = Dot4(s[i][j], q4[i], k4[j]);
        }
      }
      __syncthreads();  // every warp is done with K(it): refill it
      if (more) LoadKvTile<kHeadDim>(p, k_cache, page_div, w, tile_start + kTileKeys, k_s);
      CpAsyncCommit();

      // Online softmax (FlashAttention-2) of each row over this tile's keys.
      const bool masked = tile_start + kTileKeys > w.unmasked_end;
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < kKeysPerThread; ++j) {
          s[i][j] *= scale_log2;
          if (masked && !KeyVisible(w, masks[i], tile_start + kg + kKeyLanes * j)) {
            s[i][j] = -INFINITY;
          }
          mx = fmaxf(mx, s[i][j]);
        }
#pragma unroll
        for (int offset = 1; offset < kKeyLanes; offset <<= 1) {
          mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, offset));
        }
        float m_use;
        const float rescale = FoldTileMax(mx, m_row[i], l_row[i], m_use);
#pragma unroll
        for (int v = 0; v < S::kDimVecs; ++v) {
#pragma unroll
          for (int e = 0; e < 4; ++e) o_acc[i][v][e] *= rescale;
        }
#pragma unroll
        for (int j = 0; j < kKeysPerThread; ++j) {
          const float pj = FastExp2(s[i][j] - m_use);  // 0 for masked keys
          l_row[i] += pj;
          p_s[(row0 + i) * S::kPStride + kg + kKeyLanes * j] = pj;
        }
      }
      CpAsyncWait<1>();  // V(it) landed; K(it + 1) may still be in flight
      __syncthreads();   // V(it) visible to every warp (and P, written by this warp)

      // O += P·V: this thread's 4 rows x its kDimVecs float4 columns of head dims.
#pragma unroll 2
      for (int k = 0; k < kTileKeys; k += 4) {
        float4 p4[kRowsPerThread];
#pragma unroll
        for (int i = 0; i < kRowsPerThread; ++i) {
          p4[i] = *reinterpret_cast<const float4*>(p_s + (row0 + i) * S::kPStride + k);
        }
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
          for (int v = 0; v < S::kDimVecs; ++v) {
            const float4 v4 = *reinterpret_cast<const float4*>(v_s + (k + kk) * S::kStride +
                                                               4 * (kg + kKeyLanes * v));
#pragma unroll
            for (int i = 0; i < kRowsPerThread; ++i) {
              const float pk = kk == 0 ? p4[i].x : kk == 1 ? p4[i].y : kk == 2 ? p4[i].z : p4[i].w;
              o_acc[i][v][0] = fmaf(pk, v4.x, o_acc[i][v][0]);
              o_acc[i][v][1] = fmaf(pk, v4.y, o_acc[i][v][1]);
              o_acc[i][v][2] = fmaf(pk, v4.z, o_acc[i][v][2]);
              o_acc[i][v][3] = fmaf(pk, v4.w, o_acc[i][v][3]);
            }
          }
        }
      }
      __syncthreads();  // every warp is done with V(it) and its P: refill V
      if (more) LoadKvTile<kHeadDim>(p, v_cache, page_div, w, tile_start + kTileKeys, v_s);
      CpAsyncCommit();
    }
  }

  // O / l and lse without a split, else the chunk's normalized partial state.
  const bool split = StoresPartialState(p, w);
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    float l = l_row[i];
#pragma unroll
    for (int offset = 1; offset < kKeyLanes; offset <<= 1) {
      l += __shfl_xor_sync(kFullMask, l, offset);
    }
    const int32_t pr = w.row_base + row0 + i;
    if (pr >= w.num_rows) continue;
    const RowResult row = FinishRow(p, w, pr, m_row[i], l);
    float* dst = split ? SplitPartialO(p) + row.slot * kHeadDim
                       : static_cast<float*>(p.o) + row.state * kHeadDim;
    const float inv_l = row.inv_l;
#pragma unroll
    for (int v = 0; v < S::kDimVecs; ++v) {
      *reinterpret_cast<float4*>(dst + 4 * (kg + kKeyLanes * v)) =
          make_float4(o_acc[i][v][0] * inv_l, o_acc[i][v][1] * inv_l, o_acc[i][v][2] * inv_l,
                      o_acc[i][v][3] * inv_l);
    }
    if (kg == 0) {
      if (split) {
        SplitPartialLse(p, kHeadDim)[row.slot] = row.lse;
      } else if (p.lse != nullptr) {
        p.lse[row.state] = row.lse;
      }
    }
  }
  if (MergesInKernel(p)) {
    MergeTileChunksIfLast<float, kHeadDim>(p, w, kBlockRows, threadIdx.x, kThreads,
                                           [] { __syncthreads(); });
  }
}

template <int kHeadDim>
cudaError_t Launch(const PrefillAttentionParams& p, cudaStream_t stream) {
  using S = F32Shape<kHeadDim>;
  GLIMPSE_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(PrefillAttentionF32Kernel<kHeadDim>,
                                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                    S::kSmemBytes));
  const dim3 grid(internal::PrefillGridBlocks(p));
  PrefillAttentionF32Kernel<kHeadDim><<<grid, kThreads, S::kSmemBytes, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

size_t PrefillF32SharedMemoryBytes(int32_t head_dim) {
  switch (head_dim) {
    case 32:
      return F32Shape<32>::kSmemBytes;
    case 64:
      return F32Shape<64>::kSmemBytes;
    default:
      return F32Shape<128>::kSmemBytes;
  }
}

cudaError_t LaunchPrefillAttentionF32Blocks(const PrefillAttentionParams& params,
                                            cudaStream_t stream) {
  switch (params.kv.head_dim) {
    case 32:
      return Launch<32>(params, stream);
    case 64:
      return Launch<64>(params, stream);
    case 128:
      return Launch<128>(params, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace glimpse::kernels::cuda::internal
