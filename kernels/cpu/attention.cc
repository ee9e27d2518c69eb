#include "kernels/cpu/attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/kv_layout.h"
#include "kernels/cpu/simd_math.h"

namespace glimpse::kernels::cpu {
namespace {

// Asks for [p, p + bytes) in cache ahead of use. Pages of the KV cache sit anywhere in memory,
// so the hardware prefetcher stops at each tile's end; fetching the next tile while this one
// is computed keeps the memory busy. Changes no value.
inline void PrefetchTile(const void* p, size_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (size_t off = 0; off < bytes; off += 64) _mm_prefetch(c + off, _MM_HINT_T0);
}

// Scores of G query heads against slots [0, n) of one key tile ([head_dim][block_size]):
//   s[g][i] = scale * (sum over d, in order, of q_g[d] * k[d][i])   (an fma chain from 0)
// Slots are taken 8 at a time in vector lanes, the rest one by one with the same chain, so a
// score never depends on where its slot falls.
template <class Kv, int G, int NC>
inline void ScoreChunks(const float* const* q, const typename Kv::Storage* col, int32_t head_dim,
                        int32_t block_size, float scale, float* const* scores, int32_t i) {
  // NC chunks of 8 slots and G heads in flight: G * NC independent fma chains.
  __m256 acc[NC][G];
  _Pragma("GCC unroll 4") for (int c = 0; c < NC; ++c)
    _Pragma("GCC unroll 4") for (int g = 0; g < G; ++g) acc[c][g] = _mm256_setzero_ps();
  for (int32_t d = 0; d < head_dim; ++d) {
    const typename Kv::Storage* row = col + static_cast<int64_t>(d) * block_size;
    __m256 qd[G];
    _Pragma("GCC unroll 4") for (int g = 0; g < G; ++g) qd[g] = _mm256_broadcast_ss(q[g] + d);
    _Pragma("GCC unroll 4") for (int c = 0; c < NC; ++c) {
      const __m256 k = Kv::Load8(row + 8 * c);
      _Pragma("GCC unroll 4") for (int g = 0; g < G; ++g) acc[c][g] = _mm256_fmadd_ps(qd[g], k, acc[c][g]);
    }
  }
  const __m256 vscale = _mm256_set1_ps(scale);
  _Pragma("GCC unroll 4") for (int c = 0; c < NC; ++c)
    _Pragma("GCC unroll 4") for (int g = 0; g < G; ++g) _mm256_storeu_ps(scores[g] + i + 8 * c, _mm256_mul_ps(acc[c][g], vscale));
}

template <class Kv, int G>
void ScoreTile(const float* const* q, const typename Kv::Storage* tile, int32_t head_dim,
               int32_t block_size, int32_t n, float scale, float* const* scores) {
  int32_t i = 0;
  for (; i + 16 <= n; i += 16)
    ScoreChunks<Kv, G, 2>(q, tile + i, head_dim, block_size, scale, scores, i);
  for (; i + 8 <= n; i += 8)
    ScoreChunks<Kv, G, 1>(q, tile + i, head_dim, block_size, scale, scores, i);
  for (; i < n; ++i) {
    _Pragma("GCC unroll 4") for (int g = 0; g < G; ++g) {
      float acc = 0.0f;
      for (int32_t d = 0; d < head_dim; ++d) {
        acc = std::fma(q[g][d], Kv::Load(tile[static_cast<int64_t>(d) * block_size + i]), acc);
      }
      scores[g][i] = acc * scale;
    }
  }
}

template <class Kv>
using ScoreTileFn = void (*)(const float* const*, const typename Kv::Storage*, int32_t, int32_t,
                             int32_t, float, float* const*);

// Query heads per KV head handled together; larger groups are split into chunks of this many.
constexpr int kMaxScoreGroup = 4;
template <class Kv>
constexpr ScoreTileFn<Kv> kScoreTile[kMaxScoreGroup + 1] = {
    nullptr, &ScoreTile<Kv, 1>, &ScoreTile<Kv, 2>, &ScoreTile<Kv, 3>, &ScoreTile<Kv, 4>};

// Turns scores[0..n) into exp(s - max) in place and returns their sum, accumulated in 8
// lanes (lane l takes j = l mod 8 over the whole chunks, added in HorizontalSum8's fixed
// order) and then the tail left to right: a fixed order for a given n.
inline float SoftmaxNumerators(float* scores, int32_t n) {
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  int32_t j = 0;
  for (; j + 8 <= n; j += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(scores + j));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  float max_score = -INFINITY;
  for (float l : lanes) max_score = std::max(max_score, l);
  for (; j < n; ++j) max_score = std::max(max_score, scores[j]);

  const __m256 vmax_all = _mm256_set1_ps(max_score);
  __m256 vsum = _mm256_setzero_ps();
  for (j = 0; j + 8 <= n; j += 8) {
    const __m256 e = Exp8(_mm256_sub_ps(_mm256_loadu_ps(scores + j), vmax_all));
    _mm256_storeu_ps(scores + j, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  float sum = HorizontalSum8(vsum);
  for (; j < n; ++j) {
    scores[j] = Exp1(scores[j] - max_score);
    sum += scores[j];
  }
  return sum;
}

// For GH heads of a group and the CH*8 dims starting at d0:
//   out_g[d] = inv_sum_g * (sum over slots j, in order, of p_g[j] * v_j[d])
// one fma chain per element, accumulators in registers. All GH heads share each value load,
// so a KV head's values stream from cache once per CH*8 dims instead of once per head.
template <class Kv, int GH, int CH>
void AccumulateValueChunk(const KvLayerView& kv, const int32_t* blocks, int32_t kv_head,
                          int32_t ctx, const float* const* probs, const float* inv_sum,
                          float* const* out, int32_t d0) {
  __m256 acc[GH][CH];
  _Pragma("GCC unroll 4") for (int g = 0; g < GH; ++g)
    _Pragma("GCC unroll 8") for (int c = 0; c < CH; ++c) acc[g][c] = _mm256_setzero_ps();
  const int32_t hd = kv.head_dim;
  const size_t tile_bytes = sizeof(typename Kv::Storage) * hd * kv.block_size;
  for (int32_t j0 = 0, page = 0; j0 < ctx; j0 += kv.block_size, ++page) {
    const int32_t n = std::min(kv.block_size, ctx - j0);
    if (j0 + kv.block_size < ctx) {
      PrefetchTile(ValueTile<typename Kv::Storage>(kv, blocks[page + 1], kv_head), tile_bytes);
    }
    const typename Kv::Storage* tile =
        ValueTile<typename Kv::Storage>(kv, blocks[page], kv_head) + d0;
    for (int32_t i = 0; i < n; ++i) {
      const typename Kv::Storage* v = tile + static_cast<int64_t>(i) * hd;
      __m256 vc[CH];
      _Pragma("GCC unroll 8") for (int c = 0; c < CH; ++c) vc[c] = Kv::Load8(v + 8 * c);
      _Pragma("GCC unroll 4") for (int g = 0; g < GH; ++g) {
        const __m256 pj = _mm256_broadcast_ss(probs[g] + j0 + i);
        _Pragma("GCC unroll 8") for (int c = 0; c < CH; ++c) acc[g][c] = _mm256_fmadd_ps(pj, vc[c], acc[g][c]);
      }
    }
  }
  _Pragma("GCC unroll 4") for (int g = 0; g < GH; ++g) {
    const __m256 scale = _mm256_set1_ps(inv_sum[g]);
    _Pragma("GCC unroll 8") for (int c = 0; c < CH; ++c) {
      _mm256_storeu_ps(out[g] + d0 + 8 * c, _mm256_mul_ps(acc[g][c], scale));
    }
  }
}

// The same sums for any head_dim, one element at a time (head dims not a multiple of 8).
template <class Kv>
void AccumulateValuesScalar(const KvLayerView& kv, const int32_t* blocks, int32_t kv_head,
                            int32_t ctx, const float* probs, float inv_sum, float* out) {
  const int32_t hd = kv.head_dim;
  std::fill(out, out + hd, 0.0f);
  for (int32_t j0 = 0, page = 0; j0 < ctx; j0 += kv.block_size, ++page) {
    const int32_t n = std::min(kv.block_size, ctx - j0);
    const typename Kv::Storage* tile = ValueTile<typename Kv::Storage>(kv, blocks[page], kv_head);
    for (int32_t i = 0; i < n; ++i) {
      const typename Kv::Storage* v = tile + static_cast<int64_t>(i) * hd;
      for (int32_t d = 0; d < hd; ++d) out[d] = std::fma(probs[j0 + i], Kv::Load(v[d]), out[d]);
    }
  }
  for (int32_t d = 0; d < hd; ++d) out[d] *= inv_sum;
}

// Accumulates the outputs of `count` heads, up to 12 accumulators at a time.
template <class Kv>
void AccumulateValues(const KvLayerView& kv, const int32_t* blocks, int32_t kv_head, int32_t ctx,
                      const float* const* probs, const float* inv_sum, float* const* out,
                      int32_t count) {
  const int32_t hd = kv.head_dim;
  if (hd % 8 != 0) {
    for (int32_t g = 0; g < count; ++g) {
      AccumulateValuesScalar<Kv>(kv, blocks, kv_head, ctx, probs[g], inv_sum[g], out[g]);
    }
    return;
  }
  for (int32_t g = 0; g < count;) {
    const int32_t gh = std::min(count - g, 3);
    for (int32_t d0 = 0; d0 < hd;) {
      const int32_t chunks = (hd - d0) / 8;
      // Chunk counts per pass: 8 for one head, 4 for two or three.
      if (gh == 1 && chunks >= 8) {
        AccumulateValueChunk<Kv, 1, 8>(kv, blocks, kv_head, ctx, probs + g, inv_sum + g, out + g,
                                       d0);
        d0 += 64;
      } else if (gh == 1) {
        AccumulateValueChunk<Kv, 1, 1>(kv, blocks, kv_head, ctx, probs + g, inv_sum + g, out + g,
                                       d0);
        d0 += 8;
      } else if (chunks >= 4) {
        if (gh == 2) {
          AccumulateValueChunk<Kv, 2, 4>(kv, blocks, kv_head, ctx, probs + g, inv_sum + g, out + g,
                                         d0);
        } else {
          AccumulateValueChunk<Kv, 3, 4>(kv, blocks, kv_head, ctx, probs + g, inv_sum + g, out + g,
                                         d0);
        }
        d0 += 32;
      } else {
        if (gh == 2) {
          AccumulateValueChunk<Kv, 2, 1>(kv, blocks, kv_head, ctx, probs + g, inv_sum + g, out + g,
                                         d0);
        } else {
          AccumulateValueChunk<Kv, 3, 1>(kv, blocks, kv_head, ctx, probs + g, inv_sum + g, out + g,
                                         d0);
        }
        d0 += 8;
      }
    }
    g += gh;
  }
}

// One query row, one KV head and the query heads that share it (GQA group).
struct RowTask {
  int32_t token;
  int32_t kv_head;
  int32_t seq;
};

// One thread's buffers, reused across its row tasks so that a row allocates nothing once they
// have grown: scores [group][ctx] fp32 (softmax numerators after SoftmaxNumerators), and per
// query head of the group its probability row, 1 / sum and output row.
struct RowScratch {
  std::vector<float> scores;
  std::vector<const float*> probs;
  std::vector<float> inv_sum;
  std::vector<float*> outs;
};

template <class Kv>
void AttendRow(const PagedAttentionParams& p, const RowTask& task, RowScratch& scratch) {
  const KvLayerView& kv = p.kv;
  const int32_t group = p.num_heads / kv.num_kv_heads;
  const int32_t hd = kv.head_dim;
  const int32_t ctx = p.positions[task.token] + 1;
  const int32_t* blocks = p.kv_indices + p.kv_indptr[task.seq];
  std::vector<float>& scores = scratch.scores;
  scores.resize(static_cast<size_t>(group) * ctx);
  const int64_t first_head = static_cast<int64_t>(task.token) * p.num_heads + task.kv_head * group;

  const size_t tile_bytes = sizeof(typename Kv::Storage) * hd * kv.block_size;
  for (int32_t g0 = 0; g0 < group; g0 += kMaxScoreGroup) {
    const int32_t g_count = std::min(kMaxScoreGroup, group - g0);
    const float* q[kMaxScoreGroup];
    float* rows[kMaxScoreGroup];
    for (int32_t j0 = 0, page = 0; j0 < ctx; j0 += kv.block_size, ++page) {
      if (j0 + kv.block_size < ctx) {
        PrefetchTile(KeyTile<typename Kv::Storage>(kv, blocks[page + 1], task.kv_head), tile_bytes);
      }
      for (int32_t g = 0; g < g_count; ++g) {
        q[g] = p.q + (first_head + g0 + g) * hd;
        rows[g] = scores.data() + static_cast<int64_t>(g0 + g) * ctx + j0;
      }
      kScoreTile<Kv>[g_count](q, KeyTile<typename Kv::Storage>(kv, blocks[page], task.kv_head), hd,
                              kv.block_size, std::min(kv.block_size, ctx - j0), p.scale, rows);
    }
  }
  std::vector<const float*>& probs = scratch.probs;
  std::vector<float>& inv_sum = scratch.inv_sum;
  std::vector<float*>& outs = scratch.outs;
  probs.resize(group);
  inv_sum.resize(group);
  outs.resize(group);
  for (int32_t g = 0; g < group; ++g) {
    float* row = scores.data() + static_cast<int64_t>(g) * ctx;
    inv_sum[g] = 1.0f / SoftmaxNumerators(row, ctx);
    probs[g] = row;
    outs[g] = p.out + (first_head + g) * hd;
  }
  AccumulateValues<Kv>(kv, blocks, task.kv_head, ctx, probs.data(), inv_sum.data(), outs.data(),
                       group);
}

}  // namespace

void PagedAttention(const PagedAttentionParams& p, KvElementType kv_type, ThreadPool& pool) {
  CHECK(p.num_heads % p.kv.num_kv_heads == 0);
  std::vector<RowTask> tasks;
  for (int32_t s = 0; s < p.num_seqs; ++s) {
    for (int32_t t = p.query_start[s]; t < p.query_start[s + 1]; ++t) {
      for (int32_t h = 0; h < p.kv.num_kv_heads; ++h) tasks.push_back({t, h, s});
    }
  }
  const int num_threads = pool.num_threads();
  const int64_t num_tasks = static_cast<int64_t>(tasks.size());
  // Tasks are dealt round-robin: later rows of a prompt see more keys, so contiguous ranges
  // would leave one thread with most of the work.
  WithKvElement(kv_type, [&](auto kv) {
    using Kv = decltype(kv);
    pool.Run([&](int t) {
      RowScratch scratch;
      for (int64_t i = t; i < num_tasks; i += num_threads) AttendRow<Kv>(p, tasks[i], scratch);
    });
  });
}

void AttentionReference(const float* q, const float* k, const float* v, int32_t ctx,
                        int32_t num_heads, int32_t num_kv_heads, int32_t head_dim, float scale,
                        float* out) {
  const int32_t group = num_heads / num_kv_heads;
  std::vector<double> s(ctx);
  for (int32_t h = 0; h < num_heads; ++h) {
    const int32_t kvh = h / group;
    double max_s = -INFINITY;
    for (int32_t j = 0; j < ctx; ++j) {
      double dot = 0;
      for (int32_t i = 0; i < head_dim; ++i) {
        dot += static_cast<double>(q[h * head_dim + i]) * k[(j * num_kv_heads + kvh) * head_dim + i];
      }
      s[j] = dot * scale;
      max_s = std::max(max_s, s[j]);
    }
    double sum = 0;
    for (int32_t j = 0; j < ctx; ++j) sum += (s[j] = std::exp(s[j] - max_s));
    for (int32_t i = 0; i < head_dim; ++i) {
      double acc = 0;
      for (int32_t j = 0; j < ctx; ++j) acc += s[j] * v[(j * num_kv_heads + kvh) * head_dim + i];
      out[h * head_dim + i] = static_cast<float>(acc / sum);
    }
  }
}

}  // namespace glimpse::kernels::cpu
