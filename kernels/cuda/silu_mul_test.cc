// SiLU·mul against a float64 reference: separate and fused [gate|up] inputs, vector and
// scalar paths, bf16 and fp32.
#include "kernels/cuda/silu_mul.h"

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cuda/testing/paged_kv_fixture.h"
#include "kernels/cuda/testing/test_harness.h"

namespace glimpse::kernels::cuda {
namespace {

using testing::DeviceActivations;

void RunCase(DType dtype, int32_t rows, int32_t dim, bool fused) {
  const std::string name = std::string("silu_mul ") + testing::DTypeName(dtype) +
                           " rows=" + std::to_string(rows) + " dim=" + std::to_string(dim) +
                           (fused ? " fused" : "");
  const int64_t in_stride = fused ? 2 * dim : dim;
  const int64_t out_stride = dim + (fused ? 8 : 0);  // a padded output row when fused
  const std::vector<float> gate_up =
      testing::RandomActivations(static_cast<size_t>(rows) * in_stride * (fused ? 1 : 2), dtype,
                                 3.0f);
  // Separate inputs: gate = first rows*dim block, up = second.
  const size_t up_offset = fused ? dim : static_cast<size_t>(rows) * dim;
  std::vector<double> ref(static_cast<size_t>(rows) * out_stride, 0.0);
  for (int32_t r = 0; r < rows; ++r) {
    for (int32_t i = 0; i < dim; ++i) {
      const double g = gate_up[r * in_stride + i];
      const double u = gate_up[up_offset + r * in_stride + i];
      ref[r * out_stride + i] = g / (1.0 + std::exp(-g)) * u;
    }
  }
  DeviceActivations d_in, d_out;
  GLIMPSE_ASSERT_CUDA(d_in.Upload(gate_up, dtype));
  GLIMPSE_ASSERT_CUDA(d_out.AllocatePoisoned(static_cast<size_t>(rows) * out_stride, dtype));
  const size_t elem = DTypeSize(dtype);
  SiluMulParams p;
  p.dtype = dtype;
  p.gate = d_in.ptr;
  p.up = static_cast<const char*>(d_in.ptr) + up_offset * elem;
  p.out = d_out.ptr;
  p.in_row_stride = in_stride;
  p.out_row_stride = out_stride;
  p.num_rows = rows;
  p.dim = dim;
  GLIMPSE_ASSERT_CUDA(LaunchSiluMul(p, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  std::vector<float> out;
  GLIMPSE_ASSERT_CUDA(d_out.Download(&out, dtype));
  // Compare only the written columns; the padding must stay poisoned (NaN).
  std::vector<float> got;
  std::vector<double> want;
  bool padding_untouched = true;
  for (int32_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < out_stride; ++i) {
      if (i < dim) {
        got.push_back(out[r * out_stride + i]);
        want.push_back(ref[r * out_stride + i]);
      } else if (!std::isnan(out[r * out_stride + i])) {
        padding_untouched = false;
      }
    }
  }
  GLIMPSE_EXPECT_CLOSE(name, got, want, testing::ToleranceFor(dtype));
  GLIMPSE_EXPECT(padding_untouched, name + ": wrote past dim");
}

GLIMPSE_CUDA_TEST(SiluMulMatchesReference) {
  for (const DType dtype : {DType::kF32, DType::kBF16}) {
    RunCase(dtype, 1, 14336, true);  // Llama-8B intermediate size
    RunCase(dtype, 9, 4864, false);  // Qwen2.5-0.5B
    RunCase(dtype, 4, 1001, true);   // odd: scalar path
    RunCase(dtype, 3, 8, false);
  }
}

}  // namespace
}  // namespace glimpse::kernels::cuda
