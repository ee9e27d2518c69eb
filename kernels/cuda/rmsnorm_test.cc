// RMSNorm + residual add against a float64 reference, bf16 and fp32, vectorized and scalar
// paths (dims that are not a multiple of the vector width), with and without the add.
#include "kernels/cuda/rmsnorm.h"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cuda/testing/paged_kv_fixture.h"
#include "kernels/cuda/testing/test_harness.h"

namespace glimpse::kernels::cuda {
namespace {

using testing::DeviceActivations;
using testing::DeviceArray;

constexpr uint16_t kBf16Poison = 0x7fc1;  // a bf16 NaN no rounding produces from these inputs

// bf16_copy (fp32 only): out_bf16 takes out rounded to bf16, checked bit for bit against the
// host's round-to-nearest-even of the fp32 out the kernel wrote.
void RunCase(DType dtype, int32_t rows, int32_t dim, bool with_x, bool bf16_copy = false) {
  const std::string name = std::string("add_rmsnorm ") + testing::DTypeName(dtype) +
                           " rows=" + std::to_string(rows) + " dim=" + std::to_string(dim) +
                           (with_x ? " +x" : "") + (bf16_copy ? " +bf16 copy" : "");
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
  // Poisoned with bf16 NaNs, one guard element past the end.
  DeviceArray<uint16_t> d_out_bf16;
  GLIMPSE_ASSERT_CUDA(d_out_bf16.Upload(std::vector<uint16_t>(n + 1, kBf16Poison)));
  AddRmsNormParams p;
  p.dtype = dtype;
  p.x = with_x ? d_x.ptr : nullptr;
  p.residual = d_res.ptr;
  p.weight = d_w.ptr;
  p.out = d_out.ptr;
  p.out_bf16 = bf16_copy ? d_out_bf16.get() : nullptr;
  p.num_rows = rows;
  p.dim = dim;
  p.eps = eps;
  GLIMPSE_ASSERT_CUDA(LaunchAddRmsNorm(p, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  std::vector<float> out, res_out;
  GLIMPSE_ASSERT_CUDA(d_out.Download(&out, dtype));
  GLIMPSE_ASSERT_CUDA(d_res.Download(&res_out, dtype));
  if (bf16_copy) {
    std::vector<uint16_t> copy;
    GLIMPSE_ASSERT_CUDA(d_out_bf16.Download(&copy));
    size_t wrong = 0;
    for (size_t i = 0; i < n; ++i) wrong += copy[i] != testing::FloatToBf16(out[i]);
    GLIMPSE_EXPECT(wrong == 0, name + ": " + std::to_string(wrong) + " of " + std::to_string(n) +
                                   " bf16 copies are not out rounded to nearest even");
    GLIMPSE_EXPECT(copy[n] == kBf16Poison, name + ": the bf16 copy wrote past the end");
  }
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

// The fp32 norm with the bf16 copy a bf16 matmul reads (the CUDA backend's decode graphs fold
// the matmul's cast into the norm this way): vectorized and scalar, with and without the add.
GLIMPSE_CUDA_TEST(AddRmsNormWritesItsBf16CopyRoundedToNearestEven) {
  RunCase(DType::kF32, 1, 64, true, true);
  RunCase(DType::kF32, 7, 102, true, true);    // scalar path (102 is not a multiple of 4)
  RunCase(DType::kF32, 3, 4096, true, true);   // Llama-8B hidden size
  RunCase(DType::kF32, 5, 8200, false, true);  // several vectors per thread, no residual add
  RunCase(DType::kF32, 2, 1, true, true);      // one element per row
  AddRmsNormParams p;
  p.dtype = DType::kBF16;
  void* const some_device_address = reinterpret_cast<void*>(256);  // never reached
  p.residual = p.out = p.out_bf16 = some_device_address;
  p.weight = some_device_address;
  p.num_rows = 1;
  p.dim = 64;
  GLIMPSE_EXPECT(LaunchAddRmsNorm(p, nullptr) == cudaErrorInvalidValue,
                 "a bf16 copy of a bf16 norm must be refused");
}

}  // namespace
}  // namespace glimpse::kernels::cuda
