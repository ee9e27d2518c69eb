// Batch-invariant fp32 matrix multiplication against packed weights (F32, F16, BF16, Q8_0).
//
// Numerics: every output element y[m][n] is computed as
//     acc = 0; for k in 0..K-1: acc = fma(x[m][k], W[n][k], acc)
// with W[n][k] widened exactly to fp32 (Q8_0: q * d, exact in fp32). The order never depends
// on how many rows are in the batch, which tile a row lands in, or how work is split between
// threads, so a row's result is bitwise the same in any batch — the property DESIGN.md calls
// batch invariance. MatMulReference computes the same thing with scalar std::fma.
//
// Packed layout (outer-product friendly): output features are grouped in panels of 16.
//
//   panel p, F32/F16/BF16:  w[k][j]  = W[16p + j][k],  k < K, j < 16   (stored type)
//   panel p, Q8_0:          q[k][j]  int8,  d[k/32][j] fp32 scales
//
// Features past N in the last panel are zero and never stored to y.
#ifndef GLIMPSE_KERNELS_CPU_MATMUL_H_
#define GLIMPSE_KERNELS_CPU_MATMUL_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/cpu/thread_pool.h"

namespace glimpse::kernels::cpu {

inline constexpr int kPanelWidth = 16;

class CpuPackedMatrix final : public PackedMatrix {
 public:
  static absl::StatusOr<std::unique_ptr<CpuPackedMatrix>> Pack(const MatrixView& w);
  ~CpuPackedMatrix() override;

  int64_t rows() const override { return rows_; }
  int64_t cols() const override { return cols_; }
  size_t num_bytes() const override { return num_bytes_; }
  WeightType type() const { return type_; }
  int64_t num_panels() const { return (rows_ + kPanelWidth - 1) / kPanelWidth; }
  // Start of panel p's weights (stored type; int8 for Q8_0).
  const uint8_t* panel(int64_t p) const { return data_ + p * panel_bytes_; }
  // Q8_0 only: panel p's scales, [cols/32][16] fp32.
  const float* panel_scales(int64_t p) const { return scales_ + p * (cols_ / 32) * kPanelWidth; }

 private:
  CpuPackedMatrix() = default;

  WeightType type_ = WeightType::kF32;
  int64_t rows_ = 0;
  int64_t cols_ = 0;
  size_t panel_bytes_ = 0;
  size_t num_bytes_ = 0;
  uint8_t* data_ = nullptr;  // Owned, 64-byte aligned.
  float* scales_ = nullptr;  // Owned (Q8_0 only).
};

// y[m][n] = sum_k x[m][k] * W[n][k]; x: [num_rows][K] contiguous, y: [num_rows][N] contiguous.
void MatMul(const float* x, int64_t num_rows, const CpuPackedMatrix& w, float* y,
            ThreadPool& pool);

// The same result computed from the unpacked matrix with scalar fma; the test reference.
void MatMulReference(const float* x, int64_t num_rows, const MatrixView& w, float* y);

// W[row][col] of an unpacked matrix widened to fp32 (slow; tests and embedding lookups).
float WeightAt(const MatrixView& w, int64_t row, int64_t col);
// Widens one whole row of an unpacked matrix into out[0..cols).
void WidenRow(const MatrixView& w, int64_t row, float* out);

}  // namespace glimpse::kernels::cpu

#endif  // GLIMPSE_KERNELS_CPU_MATMUL_H_
