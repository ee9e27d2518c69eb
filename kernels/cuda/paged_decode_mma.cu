#include "kernels/cuda/paged_decode_mma.h"

#include "kernels/cuda/attention_common.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/mma_utils.cuh"
#include "kernels/cuda/paged_decode_common.cuh"

namespace glimpse::kernels::cuda::internal {
namespace {

constexpr int kTileKeys = 16;  // keys per warp tile: one k-step of P·V
constexpr int kMaxGroup = 8;   // query heads per KV head: rows 0..7 of the m16 tile

// One warp's ring of K/V tiles in shared memory: [kStages][K, V][kTileKeys][kStride] bf16,
// rows padded by 8 elements so that the 8 row addresses of an ldmatrix fall in 8 different
// 16-byte bank groups. Stages: tiles in flight per warp, kStages - 1 loading while one is
// used; two at head_dim 128 keep a block at 68 KiB, under the 99 KiB sm_86/sm_89 allow (three
// blocks, 12 warps and 96 KiB of loads in flight per H200 SM).
template <int kHeadDim>
struct DecodeMmaShape {
  static constexpr int kStages = kHeadDim == 128 ? 2 : 3;
  static constexpr int kStride = kHeadDim + 8;  // elements
  static constexpr int kTileBytes = kTileKeys * kStride * static_cast<int>(sizeof(bf16));
  static constexpr int kWarpBytes = kStages * 2 * kTileBytes;
  static constexpr int kPipelineBytes = kDecodeWarps * kWarpBytes;
  // The end of the block reuses the ring for the warps' states (StoreDecodeStates).
  static constexpr int kStateBytes =
      kDecodeWarps * kMaxGroup * (kHeadDim + 2) * static_cast<int>(sizeof(float));
  static constexpr int kSmemBytes = kPipelineBytes > kStateBytes ? kPipelineBytes : kStateBytes;
  static constexpr int kChunksPerRow = kHeadDim / 8;  // 16-byte chunks per key row
  static_assert(kChunksPerRow % 2 == 0, "two lanes share a key row");
};

// Issues the cp.async copies of the warp tile at `tile_start` into the stage at shared
// addresses k_dst / v_dst. Lanes 2r and 2r + 1 copy key row r, alternate 16-byte chunks, so that
// each instruction reads whole 32-byte sectors of 16 rows; keys >= key_end become zero rows
// (their scores are masked to -inf, and zero V rows keep 0 * garbage from becoming NaN).
template <int kHeadDim>
__device__ __forceinline__ void LoadWarpTile(const PagedDecodeParams& p, const int32_t* pages,
                                             const FastDivider& page_div, int kv_head,
                                             int32_t tile_start, int32_t key_end, uint32_t k_dst,
                                             uint32_t v_dst, int lane) {
  using S = DecodeMmaShape<kHeadDim>;
  const int row = lane >> 1;
  const int32_t key = tile_start + row;
  const bool valid = key < key_end;
  int64_t off = (lane & 1) * 8;
  if (valid) {
    off +=
        PagedKeyOffset(pages, key, kv_head, p.kv.num_kv_heads, p.kv.page_size, kHeadDim, page_div);
  }
  const bf16* k_src = static_cast<const bf16*>(p.kv.k_cache) + off;
  const bf16* v_src = static_cast<const bf16*>(p.kv.v_cache) + off;
  const uint32_t dst = (row * S::kStride + (lane & 1) * 8) * static_cast<int>(sizeof(bf16));
#pragma unroll
  for (int c = 0; c < S::kChunksPerRow / 2; ++c) {  // chunk 2c + (lane & 1) of the row
    CpAsync16(k_dst + dst + 32 * c, k_src + 16 * c, valid);
    CpAsync16(v_dst + dst + 32 * c, v_src + 16 * c, valid);
  }
}

// One 32-bit A-fragment register: columns col and col + 1 of the q row at `row`, as bf16.
template <typename Q>
__device__ __forceinline__ uint32_t LoadQPair(const Q* row, int col);
template <>
__device__ __forceinline__ uint32_t LoadQPair<float>(const float* row, int col) {
  const float2 v = *reinterpret_cast<const float2*>(row + col);
  return PackBf16x2(v.x, v.y);
}
template <>
__device__ __forceinline__ uint32_t LoadQPair<bf16>(const bf16* row, int col) {
  return *reinterpret_cast<const uint32_t*>(row + col);
}

// Grid: (plan.num_chunks, num_kv_heads, batch); 4 warps; dynamic shared memory
// DecodeMmaShape::kSmemBytes.
//
// The group's query heads are the rows of one m16 tile (head j = row j; rows group..15 are
// zero and never stored), so one mma.m16n8k16 computes the scores of 8 keys for the whole group
// and every K/V element is read from shared memory once per KV head. The warps split the
// chunk into 16-key tiles round-robin (warp w takes tiles w, w + 4, ...); each streams its own
// tiles through a kStages-deep cp.async ring (no block barrier in the loop) and keeps its own
// online-softmax state, merged at the end (StoreDecodeStates).
//
// Per 16-key tile a warp issues 2 * kHeadDim / 16 ldmatrix.x4 and kHeadDim / 4 mma (half of
// them S = Q·Kᵀ, half O += P·V), four exp2 per lane, and a rescale of O only when some row's
// maximum grew. The fragments of rows 8..15 (c2, c3 of S and O; a1, a3 of Q and P) stay zero.
template <typename Q, int kHeadDim>
__global__ void __launch_bounds__(kDecodeThreads) PagedDecodeMmaKernel(PagedDecodeParams p) {
  using S = DecodeMmaShape<kHeadDim>;
  constexpr int kStages = S::kStages;
  constexpr int kKSteps = kHeadDim / 16;
  constexpr int kDimTiles = kHeadDim / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  const int chunk = blockIdx.x;
  const int kv_head = blockIdx.y;
  const int seq = blockIdx.z;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int g = lane >> 2;  // this lane's row: query head g of the group
  const int t = lane & 3;
  const int group = p.num_qo_heads / p.kv.num_kv_heads;

  const int32_t page_begin = p.kv.kv_indptr[seq];
  const int32_t num_pages = p.kv.kv_indptr[seq + 1] - page_begin;
  const int32_t kv_len = KvLength(num_pages, p.kv.kv_last_page_len[seq], p.kv.page_size);
  const int32_t chunk_keys = p.plan.chunk_keys;
  // Uniform over the block and before any barrier.
  const int num_seq_chunks = NumKvChunks(kv_len, chunk_keys);
  if (chunk >= num_seq_chunks) return;
  const int32_t chunk_start = chunk * chunk_keys;
  const int32_t chunk_end = min(kv_len, chunk_start + chunk_keys);
  const int32_t* pages = p.kv.kv_indices + page_begin;
  const FastDivider page_div(p.kv.page_size);  // key -> page without a division per tile
  // This warp's tiles: chunk_start + (warp + kDecodeWarps * i) * kTileKeys, i < num_tiles.
  const int32_t chunk_tiles = (chunk_end - chunk_start + kTileKeys - 1) / kTileKeys;
  const int32_t num_tiles =
      chunk_tiles > warp ? (chunk_tiles - warp + kDecodeWarps - 1) / kDecodeWarps : 0;
  auto tile_start = [&](int32_t i) { return chunk_start + (warp + kDecodeWarps * i) * kTileKeys; };
  // Shared addresses: this warp's ring; a stage is a K tile and then a V tile.
  constexpr uint32_t kStageBytes = 2 * S::kTileBytes;
  const uint32_t ring = SmemAddr(smem) + warp * S::kWarpBytes;
  auto load = [&](int32_t i, int stage) {
    const uint32_t k_dst = ring + stage * kStageBytes;
    LoadWarpTile<kHeadDim>(p, pages, page_div, kv_head, tile_start(i), chunk_end, k_dst,
                           k_dst + S::kTileBytes, lane);
  };

  // Prologue: the first kStages - 1 tiles (one commit group each, empty past the end, so that
  // wait_group counts tiles).
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (i < num_tiles) load(i, i);
    CpAsyncCommit();
  }

  // Q's A fragments, rounded to bf16 (rows g >= group, and rows 8..15, are zero).
  uint32_t q_frag[kKSteps][4];
  {
    const Q* q_row = static_cast<const Q*>(p.q) +
                     (static_cast<int64_t>(seq) * p.num_qo_heads + kv_head * group + g) * kHeadDim;
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) {
      const bool real = g < group;
      q_frag[kk][0] = real ? LoadQPair<Q>(q_row, kk * 16 + 2 * t) : 0u;
      q_frag[kk][1] = 0u;
      q_frag[kk][2] = real ? LoadQPair<Q>(q_row, kk * 16 + 2 * t + 8) : 0u;
      q_frag[kk][3] = 0u;
    }
  }

  float o_acc[kDimTiles][4];
#pragma unroll
  for (int dt = 0; dt < kDimTiles; ++dt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) o_acc[dt][e] = 0.0f;
  }
  float m_row = -INFINITY;  // running max of row g, log2 units
  float l_part = 0.0f;      // this lane's part of row g's sum (its keys 2t, 2t + 1 of each 8)
  const float scale_log2 = p.sm_scale * kLog2e;

  // This lane's ldmatrix addresses within a stage: K (the B operand of S = Q·Kᵀ) for k-step
  // 0, + 32 bytes per k-step; V (transposed: the B operand of O += P·V) for dims 0..15, + 32
  // bytes per 16 dims.
  const uint32_t k_lane =
      (((lane & 7) + (lane >> 4) * 8) * S::kStride + ((lane >> 3) & 1) * 8) * sizeof(bf16);
  const uint32_t v_lane =
      S::kTileBytes +
      (((lane & 7) + ((lane >> 3) & 1) * 8) * S::kStride + (lane >> 4) * 8) * sizeof(bf16);
  int read_stage = 0;
  int write_stage = kStages - 1;
  for (int32_t i = 0; i < num_tiles; ++i) {
    // Refill the stage tile i - 1 used (every lane finished reading it: the __syncwarp at the
    // end of the previous iteration).
    if (i + kStages - 1 < num_tiles) load(i + kStages - 1, write_stage);
    CpAsyncCommit();
    write_stage = write_stage == kStages - 1 ? 0 : write_stage + 1;
    CpAsyncWait<kStages - 1>();  // this lane's copies of tile i landed
    __syncwarp();                // ... and every other lane's
    const uint32_t stage = ring + read_stage * kStageBytes;
    read_stage = read_stage == kStages - 1 ? 0 : read_stage + 1;

    // S = Q·Kᵀ over the tile's two 8-key n-tiles.
    float s[2][4];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] = 0.0f;
    }
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) {
      uint32_t b[4];
      LdMatrixX4(b, stage + k_lane + 32 * kk);
      MmaBf16(s[0], q_frag[kk], b[0], b[1]);
      MmaBf16(s[1], q_frag[kk], b[2], b[3]);
    }

    // Online softmax of row g over this lane's four keys: 8 * nt + 2t + e.
    const int32_t start = tile_start(i);
    float x[4];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int32_t key = start + 8 * nt + 2 * t + e;
        x[2 * nt + e] = key < chunk_end ? s[nt][e] * scale_log2 : -INFINITY;
      }
    }
    float mx = fmaxf(fmaxf(x[0], x[1]), fmaxf(x[2], x[3]));
    mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 2));
    const float m_new = fmaxf(m_row, mx);
    // O and l need rescaling only when a row's maximum grew; in decode that stops after the
    // first tiles, so the warp skips the kHeadDim / 4 multiplies when no row needs them.
    if (__any_sync(kFullMask, m_new > m_row)) {
      const float rescale = FastExp2(m_row - m_new);  // m_new is finite: key `start` is valid
      l_part *= rescale;
#pragma unroll
      for (int dt = 0; dt < kDimTiles; ++dt) {
        o_acc[dt][0] *= rescale;
        o_acc[dt][1] *= rescale;
      }
    }
    m_row = m_new;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      x[e] = FastExp2(x[e] - m_new);
      l_part += x[e];
    }

    // O += P·V: P's A fragment for the tile's 16 keys (row g only), V's B fragments by
    // transposing ldmatrix.
    uint32_t a[4];
    a[0] = PackBf16x2(x[0], x[1]);
    a[1] = 0u;
    a[2] = PackBf16x2(x[2], x[3]);
    a[3] = 0u;
#pragma unroll
    for (int dp = 0; dp < kHeadDim / 16; ++dp) {
      uint32_t b[4];
      LdMatrixX4Trans(b, stage + v_lane + 32 * dp);
      MmaBf16(o_acc[2 * dp], a, b[0], b[1]);
      MmaBf16(o_acc[2 * dp + 1], a, b[2], b[3]);
    }
    __syncwarp();  // every lane done with stage i before the next iteration refills it
  }
  CpAsyncWait<0>();  // no copy may land in the ring once it holds the states below

  // The warps' states, through the (now idle) ring: lanes t of row g hold columns 8dt + 2t,
  // + 1 of O and a quarter of l.
  l_part += __shfl_xor_sync(kFullMask, l_part, 1);
  l_part += __shfl_xor_sync(kFullMask, l_part, 2);
  __syncthreads();  // every warp done with its ring
  auto* s_acc = reinterpret_cast<float(*)[kMaxGroup][kHeadDim]>(smem);
  auto* s_m = reinterpret_cast<float(*)[kMaxGroup]>(smem + kDecodeWarps * kMaxGroup * kHeadDim *
                                                               sizeof(float));
  auto* s_l = s_m + kDecodeWarps;
#pragma unroll
  for (int dt = 0; dt < kDimTiles; ++dt) {
    *reinterpret_cast<float2*>(&s_acc[warp][g][dt * 8 + 2 * t]) =
        make_float2(o_acc[dt][0], o_acc[dt][1]);
  }
  if (t == 0) {
    s_m[warp][g] = m_row;
    s_l[warp][g] = l_part;
  }
  __syncthreads();
  StoreDecodeStates<Q, kHeadDim, kMaxGroup>(p, seq, kv_head, chunk, num_seq_chunks, group, s_m, s_l,
                                            s_acc);
}

template <typename Q, int kHeadDim>
cudaError_t LaunchTyped(const PagedDecodeParams& p, cudaStream_t stream) {
  constexpr int kSmemBytes = DecodeMmaShape<kHeadDim>::kSmemBytes;
  GLIMPSE_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
      PagedDecodeMmaKernel<Q, kHeadDim>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  const dim3 grid(p.plan.num_chunks, p.kv.num_kv_heads, p.batch);
  PagedDecodeMmaKernel<Q, kHeadDim><<<grid, kDecodeThreads, kSmemBytes, stream>>>(p);
  return cudaGetLastError();
}

template <typename Q>
cudaError_t DispatchHeadDim(const PagedDecodeParams& p, cudaStream_t stream) {
  switch (p.kv.head_dim) {
    case 32:
      return LaunchTyped<Q, 32>(p, stream);
    case 64:
      return LaunchTyped<Q, 64>(p, stream);
    case 128:
      return LaunchTyped<Q, 128>(p, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t LaunchPagedDecodeMmaChunks(const PagedDecodeParams& params, cudaStream_t stream) {
  return params.fp32_q_and_o ? DispatchHeadDim<float>(params, stream)
                             : DispatchHeadDim<bf16>(params, stream);
}

}  // namespace glimpse::kernels::cuda::internal
