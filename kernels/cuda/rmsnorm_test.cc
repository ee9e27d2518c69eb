// RMSNorm + residual add against a float64 reference, bf16 and fp32, vectorized and scalar
// paths (dims that are not a multiple of the vector width), with and without the add.
#include "kernels/cuda/rmsnorm.h"

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cuda/testing/paged_kv_fixture.h"
#include "kernels/cuda/testing/test_harness.h"

namespace glimpse::kernels::cuda {
namespace {

using testing::DeviceActivations;

void RunCase(DType dtype, int32_t rows, int32_t dim, bool with_x) {
  const std::string name = std::string("add_rmsnorm ") + testing::DTypeName(dtype) +
                           " rows=" + std::to_string(rows) + " dim=" + std::to_string(dim) +
                           (with_x ? " +x" : "");
  const size_t n = static_cast<size_t>(rows) * dim;
  const std::vector<float> x = testing::RandomActivations(n, dtype);
  const std::vector<float> res = testing::RandomActivations(n, dtype, 2.0f);
  const std::vector<float> w = testing::RandomActivations(dim, dtype);
  const float eps = 1e-5f;

  // Reference: the residual as the device stores it (fp32 add, then rounding to the dtype),
  // the norm in float64 on that stored value.
  std::vector<float> res_ref(n);
  for (size_t i = 0; i < n; ++i) {
    const float h = with_x ? res[i] + x[i] : res[i];
    res_ref[i] = dtype == DType::kBF16 ? testing::Bf16ToFloat(testing::FloatToBf16(h)) : h;
  }
  std::vector<double> out_ref(n);
  for (int32_t r = 0; r < rows; ++r) {
    double sum_sq = 0.0;
    for (int32_t i = 0; i < dim; ++i) {
      sum_sq += static_cast<double>(res_ref[r * dim + i]) * res_ref[r * dim + i];
    }
    const double inv = 1.0 / std::sqrt(sum_sq / dim + eps);
    for (int32_t i = 0; i < dim; ++i) out_ref[r * dim + i] = res_ref[r * dim + i] * inv * w[i];
  }

  DeviceActivations d_x, d_res, d_w, d_out;
  GLIMPSE_ASSERT_CUDA(d_x.Upload(x, dtype));
  GLIMPSE_ASSERT_CUDA(d_res.Upload(res, dtype));
  GLIMPSE_ASSERT_CUDA(d_w.Upload(w, dtype));
  GLIMPSE_ASSERT_CUDA(d_out.AllocatePoisoned(n, dtype));
  AddRmsNormParams p;
  p.dtype = dtype;
  p.x = with_x ? d_x.ptr : nullptr;
  p.residual = d_res.ptr;
  p.weight = d_w.ptr;
  p.out = d_out.ptr;
  p.num_rows = rows;
  p.dim = dim;
  p.eps = eps;
  GLIMPSE_ASSERT_CUDA(LaunchAddRmsNorm(p, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  std::vector<float> out, res_out;
  GLIMPSE_ASSERT_CUDA(d_out.Download(&out, dtype));
  GLIMPSE_ASSERT_CUDA(d_res.Download(&res_out, dtype));
  GLIMPSE_EXPECT_CLOSE(name + " out", out, out_ref, testing::ToleranceFor(dtype));
  GLIMPSE_EXPECT_CLOSE(name + " residual (exact)", res_out,
                       std::vector<double>(res_ref.begin(), res_ref.end()),
                       testing::Tolerance{0.0, 0.0, 0.0});
}

GLIMPSE_CUDA_TEST(AddRmsNormMatchesReference) {
  for (const DType dtype : {DType::kF32, DType::kBF16}) {
    RunCase(dtype, 1, 64, true);
    RunCase(dtype, 7, 100, true);    // scalar path (100 is not a multiple of 8)
    RunCase(dtype, 3, 4096, true);   // Llama-8B hidden size
    RunCase(dtype, 5, 8200, false);  // more than one vector per thread, no residual add
    RunCase(dtype, 33, 896, true);   // Qwen2.5-0.5B hidden size
    RunCase(dtype, 2, 1, true);      // one element per row
  }
}

}  // namespace
}  // namespace glimpse::kernels::cuda
