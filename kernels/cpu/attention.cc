#include "kernels/cpu/attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/simd_math.h"

namespace glimpse::kernels::cpu {
namespace {

// q · k over head_dim: 8-lane fma accumulation, fixed horizontal sum, scalar fma tail.
inline float Dot(const float* q, const float* k, int32_t n) {
  __m256 acc = _mm256_setzero_ps();
  int32_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), acc);
  float sum = HorizontalSum8(acc);
  for (; i < n; ++i) sum = std::fma(q[i], k[i], sum);
  return sum;
}

// out[i] = fma(p, v[i], out[i]) for i < n.
inline void Axpy(float p, const float* v, float* out, int32_t n) {
  const __m256 pv = _mm256_set1_ps(p);
  int32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_fmadd_ps(pv, _mm256_loadu_ps(v + i), _mm256_loadu_ps(out + i)));
  }
  for (; i < n; ++i) out[i] = std::fma(p, v[i], out[i]);
}

// Turns scores[0..n) into exp(s - max) in place and returns their left-to-right sum.
inline float SoftmaxNumerators(float* scores, int32_t n) {
  float max_score = -INFINITY;
  for (int32_t j = 0; j < n; ++j) max_score = std::max(max_score, scores[j]);
  const __m256 vmax = _mm256_set1_ps(max_score);
  int32_t j = 0;
  for (; j + 8 <= n; j += 8) {
    _mm256_storeu_ps(scores + j, Exp8(_mm256_sub_ps(_mm256_loadu_ps(scores + j), vmax)));
  }
  for (; j < n; ++j) scores[j] = Exp1(scores[j] - max_score);
  float sum = 0.0f;
  for (j = 0; j < n; ++j) sum += scores[j];
  return sum;
}

constexpr int32_t kMaxGroup = 64;  // Query heads per KV head.

// One query row, one KV head and the query heads that share it (GQA group).
struct RowTask {
  int32_t token;
  int32_t kv_head;
  int32_t seq;
};

void AttendRow(const PagedAttentionParams& p, const RowTask& task, std::vector<float>& scores) {
  const KvLayerView& kv = p.kv;
  const int32_t group = p.num_heads / kv.num_kv_heads;
  const int32_t hd = kv.head_dim;
  const int32_t ctx = p.positions[task.token] + 1;
  const int32_t* blocks = p.kv_indices + p.kv_indptr[task.seq];
  const int64_t kv_row = static_cast<int64_t>(kv.num_kv_heads) * hd;
  scores.resize(static_cast<size_t>(group) * ctx);

  const float* q = p.q + (static_cast<int64_t>(task.token) * p.num_heads + task.kv_head * group) * hd;
  for (int32_t j = 0; j < ctx; ++j) {
    const int64_t slot = static_cast<int64_t>(blocks[j / kv.block_size]) * kv.block_size + j % kv.block_size;
    const float* k = kv.k + slot * kv_row + task.kv_head * hd;
    for (int32_t g = 0; g < group; ++g) scores[g * ctx + j] = Dot(q + g * hd, k, hd) * p.scale;
  }
  float inv_sum[kMaxGroup];
  for (int32_t g = 0; g < group; ++g) inv_sum[g] = 1.0f / SoftmaxNumerators(&scores[g * ctx], ctx);

  float* out = p.out + (static_cast<int64_t>(task.token) * p.num_heads + task.kv_head * group) * hd;
  std::fill(out, out + group * hd, 0.0f);
  for (int32_t j = 0; j < ctx; ++j) {
    const int64_t slot = static_cast<int64_t>(blocks[j / kv.block_size]) * kv.block_size + j % kv.block_size;
    const float* v = kv.v + slot * kv_row + task.kv_head * hd;
    for (int32_t g = 0; g < group; ++g) Axpy(scores[g * ctx + j], v, out + g * hd, hd);
  }
  for (int32_t g = 0; g < group; ++g) {
    for (int32_t i = 0; i < hd; ++i) out[g * hd + i] *= inv_sum[g];
  }
}

}  // namespace

void PagedAttention(const PagedAttentionParams& p, ThreadPool& pool) {
  CHECK(p.num_heads % p.kv.num_kv_heads == 0 && p.num_heads / p.kv.num_kv_heads <= kMaxGroup);
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
  pool.Run([&](int t) {
    std::vector<float> scores;
    for (int64_t i = t; i < num_tasks; i += num_threads) AttendRow(p, tasks[i], scores);
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
