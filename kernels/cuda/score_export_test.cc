// Attention-score export against a float64 reference: chosen query rows of each sequence,
// causal visibility, group sizes 1/4/8, head dims 32/64/128, page sizes 1/16/17, bf16 and
// fp32; positions past kv_len must be written as 0.
#include "kernels/cuda/score_export.h"

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cuda/testing/paged_kv_fixture.h"
#include "kernels/cuda/testing/test_harness.h"

namespace glimpse::kernels::cuda {
namespace {

using testing::DeviceActivations;
using testing::DeviceArray;

void RunCase(DType dtype, int32_t head_dim, int32_t group, int32_t num_kv_heads,
             int32_t page_size, const std::vector<int32_t>& kv_lens, int32_t rows_per_seq) {
  const int32_t num_seqs = static_cast<int32_t>(kv_lens.size());
  const int32_t num_qo_heads = num_kv_heads * group;
  std::string name = std::string("score_export ") + testing::DTypeName(dtype) +
                     " d=" + std::to_string(head_dim) + " group=" + std::to_string(group) +
                     " page=" + std::to_string(page_size) + " rows=" +
                     std::to_string(rows_per_seq);
  testing::HostPagedKv kv =
      testing::MakeRandomPagedKv(kv_lens, num_kv_heads, page_size, head_dim, dtype);
  // Query tokens: the last `rows_per_seq` KV positions of each sequence (an observation
  // window), each seeing keys up to its own position.
  std::vector<int32_t> row_indptr = {0}, rows, last_key;
  int32_t max_len = 1;
  for (int32_t s = 0; s < num_seqs; ++s) {
    const int32_t n = std::min(rows_per_seq, kv_lens[s]);
    for (int32_t r = 0; r < n; ++r) {
      rows.push_back(static_cast<int32_t>(rows.size()));  // token index = row index here
      last_key.push_back(kv_lens[s] - n + r);
    }
    row_indptr.push_back(static_cast<int32_t>(rows.size()));
    max_len = std::max(max_len, kv_lens[s]);
  }
  const int32_t num_tokens = static_cast<int32_t>(rows.size());
  const int32_t stride = max_len + 5;
  const std::vector<float> q =
      testing::RandomActivations(static_cast<size_t>(num_tokens) * num_qo_heads * head_dim,
                                 dtype);
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  std::vector<float> lse(static_cast<size_t>(num_tokens) * num_qo_heads);
  std::vector<double> out(head_dim);
  for (int32_t s = 0; s < num_seqs; ++s) {
    for (int32_t r = row_indptr[s]; r < row_indptr[s + 1]; ++r) {
      for (int32_t h = 0; h < num_qo_heads; ++h) {
        double l;
        testing::ReferenceAttendOne(kv, s, h / group,
                                    &q[(static_cast<size_t>(rows[r]) * num_qo_heads + h) *
                                       head_dim],
                                    scale, [&](int32_t j) { return j <= last_key[r]; },
                                    out.data(), &l);
        lse[static_cast<size_t>(rows[r]) * num_qo_heads + h] = static_cast<float>(l);
      }
    }
  }
  std::vector<double> ref(static_cast<size_t>(num_seqs) * num_kv_heads * stride, 0.0);
  for (int32_t s = 0; s < num_seqs; ++s) {
    for (int32_t kvh = 0; kvh < num_kv_heads; ++kvh) {
      for (int32_t j = 0; j < kv_lens[s]; ++j) {
        const float* key = kv.Key(s, kvh, j);
        double sum = 0.0;
        for (int32_t r = row_indptr[s]; r < row_indptr[s + 1]; ++r) {
          if (j > last_key[r]) continue;
          for (int32_t g = 0; g < group; ++g) {
            const int32_t h = kvh * group + g;
            const float* qv = &q[(static_cast<size_t>(rows[r]) * num_qo_heads + h) * head_dim];
            double dot = 0.0;
            for (int32_t d = 0; d < head_dim; ++d) dot += static_cast<double>(qv[d]) * key[d];
            sum += std::exp(dot * scale - lse[static_cast<size_t>(rows[r]) * num_qo_heads + h]);
          }
        }
        ref[(static_cast<size_t>(s) * num_kv_heads + kvh) * stride + j] = sum;
      }
    }
  }
  testing::DevicePagedKv d_kv;
  GLIMPSE_ASSERT_CUDA(d_kv.Upload(kv, dtype));
  DeviceActivations d_q;
  DeviceArray<float> d_lse, d_scores;
  DeviceArray<int32_t> d_row_indptr, d_rows, d_last;
  GLIMPSE_ASSERT_CUDA(d_q.Upload(q, dtype));
  GLIMPSE_ASSERT_CUDA(d_lse.Upload(lse));
  GLIMPSE_ASSERT_CUDA(d_row_indptr.Upload(row_indptr));
  GLIMPSE_ASSERT_CUDA(d_rows.Upload(rows));
  GLIMPSE_ASSERT_CUDA(d_last.Upload(last_key));
  GLIMPSE_ASSERT_CUDA(d_scores.Allocate(ref.size()));
  ScoreExportParams p;
  p.dtype = dtype;
  p.q = d_q.ptr;
  p.lse = d_lse.get();
  p.sm_scale = static_cast<float>(scale);
  p.kv = d_kv.view;
  p.num_seqs = num_seqs;
  p.num_qo_heads = num_qo_heads;
  p.row_indptr = d_row_indptr.get();
  p.rows = d_rows.get();
  p.row_last_key = d_last.get();
  p.scores = d_scores.get();
  p.score_stride = stride;
  GLIMPSE_ASSERT_CUDA(LaunchScoreExport(p, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  std::vector<float> got;
  GLIMPSE_ASSERT_CUDA(d_scores.Download(&got));
  // The reference sees the same (rounded) inputs; only fp32 accumulation differs.
  GLIMPSE_EXPECT_CLOSE(name, got, ref, testing::Tolerance{1e-5, 1e-4, 1e-5});
}

GLIMPSE_CUDA_TEST(ScoreExportMatchesReference) {
  for (const DType dtype : {DType::kBF16, DType::kF32}) {
    RunCase(dtype, 128, 4, 2, 16, {300, 17, 64}, 8);
    RunCase(dtype, 64, 8, 1, 17, {129, 1000}, 33);
    RunCase(dtype, 32, 1, 3, 1, {70, 5}, 16);
  }
}

}  // namespace
}  // namespace glimpse::kernels::cuda
