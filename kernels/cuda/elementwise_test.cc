// AddInPlace, SiluMulFlat (out of place with its bf16 copy, and in place over gate and over
// up) and GatherRows against float64 references, odd sizes and sizes past one grid-stride
// pass; elements past n stay untouched.
#include "kernels/cuda/elementwise.h"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cuda/testing/test_harness.h"

namespace glimpse::kernels::cuda {
namespace {

using testing::DeviceArray;

// Downloads [0, n) of `array` and checks that its element n (a guard) is still poisoned.
std::vector<float> DownloadChecked(const DeviceArray<float>& array, int64_t n,
                                   const std::string& name) {
  std::vector<float> host;
  if (array.Download(&host) != cudaSuccess) {
    GLIMPSE_EXPECT(false, name + ": download failed");
    return {};
  }
  GLIMPSE_EXPECT(std::isnan(host[n]), name + ": wrote past n");
  host.resize(n);
  return host;
}

void RunAddCase(int64_t n) {
  const std::string name = "add_in_place n=" + std::to_string(n);
  std::vector<float> x = testing::RandomNormal(n + 1, 0.0f, 1.0f);
  x[n] = NAN;  // guard
  const std::vector<float> y = testing::RandomNormal(n, 0.0f, 1.0f);
  std::vector<double> ref(n);
  for (int64_t i = 0; i < n; ++i) ref[i] = static_cast<double>(x[i] + y[i]);  // fp32 add
  DeviceArray<float> d_x, d_y;
  GLIMPSE_ASSERT_CUDA(d_x.Upload(x));
  GLIMPSE_ASSERT_CUDA(d_y.Upload(y));
  GLIMPSE_ASSERT_CUDA(LaunchAddInPlace(d_x.get(), d_y.get(), n, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  // One fp32 addition: the result is exact against the same fp32 addition on the host.
  GLIMPSE_EXPECT_CLOSE(name, DownloadChecked(d_x, n, name), ref,
                       testing::Tolerance{0.0, 0.0, 0.0});
}

enum class Alias { kNone, kGate, kUp };

void RunSiluCase(int64_t n, Alias alias) {
  const std::string name = "silu_mul_flat n=" + std::to_string(n) +
                           (alias == Alias::kGate ? " out=gate"
                                                  : alias == Alias::kUp ? " out=up" : "");
  std::vector<float> gate = testing::RandomNormal(n + 1, 0.0f, 3.0f);
  std::vector<float> up = testing::RandomNormal(n + 1, 0.0f, 1.0f);
  gate[n] = NAN;
  up[n] = NAN;
  std::vector<double> ref(n);
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    ref[i] = g / (1.0 + std::exp(-g)) * up[i];
  }
  DeviceArray<float> d_gate, d_up, d_out;
  GLIMPSE_ASSERT_CUDA(d_gate.Upload(gate));
  GLIMPSE_ASSERT_CUDA(d_up.Upload(up));
  GLIMPSE_ASSERT_CUDA(d_out.Allocate(n + 1));
  // The bf16 copy a bf16 matmul reads, asked for out of place only (in place the backend
  // never asks for it); poisoned with bf16 NaNs, one guard element past the end.
  constexpr uint16_t kBf16Poison = 0x7fc1;
  const bool bf16_copy = alias == Alias::kNone;
  DeviceArray<uint16_t> d_bf16;
  GLIMPSE_ASSERT_CUDA(d_bf16.Upload(std::vector<uint16_t>(n + 1, kBf16Poison)));
  DeviceArray<float>& out = alias == Alias::kGate ? d_gate : alias == Alias::kUp ? d_up : d_out;
  GLIMPSE_ASSERT_CUDA(LaunchSiluMulFlat(d_gate.get(), d_up.get(), n, out.get(), nullptr,
                                        bf16_copy ? d_bf16.get() : nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  const std::vector<float> host_out = DownloadChecked(out, n, name);
  GLIMPSE_EXPECT_CLOSE(name, host_out, ref, testing::Tolerance::Fp32());
  if (bf16_copy && host_out.size() == static_cast<size_t>(n)) {
    std::vector<uint16_t> copy;
    GLIMPSE_ASSERT_CUDA(d_bf16.Download(&copy));
    int64_t wrong = 0;
    for (int64_t i = 0; i < n; ++i) wrong += copy[i] != testing::FloatToBf16(host_out[i]);
    GLIMPSE_EXPECT(wrong == 0, name + ": " + std::to_string(wrong) +
                                   " bf16 copies are not out rounded to nearest even");
    GLIMPSE_EXPECT(copy[n] == kBf16Poison, name + ": the bf16 copy wrote past n");
  }
}

void RunGatherCase(int64_t src_rows, int64_t dim, int64_t num_rows) {
  const std::string name = "gather_rows src=" + std::to_string(src_rows) +
                           " dim=" + std::to_string(dim) + " rows=" + std::to_string(num_rows);
  const std::vector<float> x = testing::RandomNormal(src_rows * dim, 0.0f, 1.0f);
  std::vector<int32_t> rows(num_rows);
  for (int64_t i = 0; i < num_rows; ++i) {
    rows[i] = testing::RandomInt(0, static_cast<int32_t>(src_rows - 1));
  }
  rows[0] = static_cast<int32_t>(src_rows - 1);
  std::vector<double> ref(num_rows * dim);
  for (int64_t i = 0; i < num_rows; ++i) {
    for (int64_t c = 0; c < dim; ++c) ref[i * dim + c] = x[rows[i] * dim + c];
  }
  DeviceArray<float> d_x, d_out;
  DeviceArray<int32_t> d_rows;
  GLIMPSE_ASSERT_CUDA(d_x.Upload(x));
  GLIMPSE_ASSERT_CUDA(d_rows.Upload(rows));
  GLIMPSE_ASSERT_CUDA(d_out.Allocate(num_rows * dim + 1));
  GatherRowsParams p;
  p.x = d_x.get();
  p.dim = dim;
  p.rows = d_rows.get();
  p.num_rows = num_rows;
  p.out = d_out.get();
  GLIMPSE_ASSERT_CUDA(LaunchGatherRows(p, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  GLIMPSE_EXPECT_CLOSE(name, DownloadChecked(d_out, num_rows * dim, name), ref,
                       testing::Tolerance{0.0, 0.0, 0.0});
}

GLIMPSE_CUDA_TEST(AddInPlaceIsOneFp32Addition) {
  for (const int64_t n : {1, 7, 1000, 65537, (1 << 24) + 5}) RunAddCase(n);
}

GLIMPSE_CUDA_TEST(SiluMulFlatMatchesReferenceInAndOutOfPlace) {
  for (const int64_t n : {1, 9, 3072, 1 << 20, (1 << 24) + 3}) {
    RunSiluCase(n, Alias::kNone);
    RunSiluCase(n, Alias::kGate);
    RunSiluCase(n, Alias::kUp);
  }
}

GLIMPSE_CUDA_TEST(GatherRowsCopiesChosenRows) {
  RunGatherCase(1, 1, 1);
  RunGatherCase(37, 192, 5);
  RunGatherCase(100, 4099, 64);
  RunGatherCase(9, 33, 300);  // more output rows than source rows: repeats
  // Narrow rows, one thread per element: single logits out of a step's [rows x vocab] (a
  // biased row's gathered tokens), and a few floats a row.
  RunGatherCase(64 * 1000, 1, 4096);
  RunGatherCase(500, 3, 1000);
  RunGatherCase(40, 31, 70000);  // the widest narrow rows, many of them
}

}  // namespace
}  // namespace glimpse::kernels::cuda
