// CudaBackend (cuda_backend_impl.h): weights packed to the device (PackMatrix) and MatMul
// through cuBLAS.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cuda/backend/cuda_backend_impl.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/weight_convert.h"
#include "spdlog/spdlog.h"

namespace glimpse::kernels::cuda::internal {

// ---- Weights and matmul ---------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<PackedMatrix>> CudaBackend::PackMatrix(const MatrixView& w) {
  Bind();
  if (graphs_.recording() && !graphs_.empty()) FinishGraphStep(GraphEagerReason::kMidStepSync);
  if (w.data == nullptr || w.rows <= 0 || w.cols <= 0 || w.rows > INT_MAX || w.cols > INT_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot pack a [", w.rows, " x ", w.cols, "] matrix on the device"));
  }
  if (w.type == WeightType::kQ8_0 && w.cols % kQ8_0BlockElements != 0) {
    return absl::InvalidArgumentError(absl::StrCat("Q8_0 matrix has ", w.cols,
                                                   " columns, not a multiple of ",
                                                   kQ8_0BlockElements));
  }
  const bool bf16 = w.type != WeightType::kF32;
  const size_t elements = static_cast<size_t>(w.rows) * static_cast<size_t>(w.cols);
  const size_t packed_bytes = elements * (bf16 ? 2 : 4);
  const std::string what = absl::StrCat("packing a [", w.rows, " x ", w.cols, "] matrix (",
                                        packed_bytes >> 20, " MiB) on the device");
  void* data = nullptr;
  RETURN_IF_ERROR(CudaStatus(cudaMalloc(&data, packed_bytes), what));
  auto packed = std::make_unique<CudaPackedMatrix>(device_, w.rows, w.cols, bf16, data);
  if (w.type == WeightType::kF32 || w.type == WeightType::kBF16) {
    // Stored as used: copy verbatim.
    RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(data, w.data, packed_bytes, cudaMemcpyHostToDevice, stream_), what));
  } else {
    // F16 and Q8_0: the file's bytes to the device, converted there to bf16.
    const WeightFormat format = ToFormat(w.type);
    const size_t raw_bytes = static_cast<size_t>(w.rows) * WeightRowBytes(format, w.cols);
    DeviceBuffer<uint8_t> raw;
    RETURN_IF_ERROR(CudaStatus(raw.Allocate(raw_bytes), what));
    RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(raw.get(), w.data, raw_bytes, cudaMemcpyHostToDevice, stream_), what));
    WeightsToBf16Params p;
    p.format = format;
    p.src = raw.get();
    p.dst = data;
    p.rows = w.rows;
    p.cols = w.cols;
    RETURN_IF_ERROR(CudaStatus(LaunchWeightsToBf16(p, stream_), what));
    RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream_), what));  // before raw is freed
  }
  RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream_), what));
  return std::unique_ptr<PackedMatrix>(std::move(packed));
}

void CudaBackend::MatMul(const float* x, int64_t num_rows, const PackedMatrix& w, float* y) {
  if (num_rows == 0) return;
  Bind();
  const CudaPackedMatrix& m = AsCuda(w);
  if (num_rows > INT_MAX) Fail(absl::StrCat("MatMul with ", num_rows, " rows"));
  if (graphs_.recording() && RecordMatMul(x, num_rows, m, y)) return;
  if (m.bf16()) Reserve(activations_bf16_, static_cast<size_t>(num_rows) * m.cols() * 2);
  GLIMPSE_CUDA_CHECK(EnqueueMatMul(x, num_rows, m, y, activations_bf16_.get(), stream_));
}

void CudaBackend::MatMuls(const float* x, int64_t num_rows,
                          std::span<const PackedMatrix* const> ws, std::span<float* const> ys) {
  if (num_rows == 0 || ws.empty()) return;
  // One bf16 rounding of x serves every matrix when all are bf16 of the same width.
  const bool shared = ws.size() > 1 && std::all_of(ws.begin(), ws.end(), [&](const auto* w) {
    return AsCuda(*w).bf16() && w->cols() == ws[0]->cols();
  });
  if (!shared || num_rows > INT_MAX) {
    Backend::MatMuls(x, num_rows, ws, ys);
    return;
  }
  Bind();
  if (graphs_.recording() && RecordMatMuls(x, num_rows, ws, ys)) return;
  const int64_t elements = num_rows * ws[0]->cols();
  Reserve(activations_bf16_, static_cast<size_t>(elements) * 2);
  GLIMPSE_CUDA_CHECK(LaunchCastF32ToBf16(x, activations_bf16_.get(), elements, stream_));
  for (size_t j = 0; j < ws.size(); ++j) {
    GLIMPSE_CUDA_CHECK(EnqueueGemm(activations_bf16_.get(), num_rows, AsCuda(*ws[j]), ys[j]));
  }
}

cudaError_t CudaBackend::EnqueueMatMul(const float* x, int64_t num_rows,
                                       const CudaPackedMatrix& m, float* y,
                                       uint8_t* bf16_scratch, cudaStream_t stream) {
  if (!m.bf16()) return EnqueueGemm(x, num_rows, m, y);
  // bf16 x bf16 -> fp32 with fp32 accumulation: x is rounded to bf16 first.
  const int64_t elements = num_rows * m.cols();
  const cudaError_t err = LaunchCastF32ToBf16(x, bf16_scratch, elements, stream);
  if (err != cudaSuccess) return err;
  return EnqueueGemm(bf16_scratch, num_rows, m, y);
}

cudaError_t CudaBackend::EnqueueGemm(const void* b, int64_t num_rows, const CudaPackedMatrix& m,
                                     float* y) {
  // cuBLAS is column-major. Row-major buffers read column-major are transposed:
  //   W[N][K] (ld K)  is the K x N matrix Wᵀ;   x[M][K] (ld K) is xᵀ (K x M);
  //   y[M][N] (ld N)  is yᵀ (N x M).
  // y = x Wᵀ  <=>  yᵀ = W xᵀ = op(A) B  with A = the W buffer, op(A) = Aᵀ (CUBLAS_OP_T) = W,
  // B = the x buffer (CUBLAS_OP_N); m = N, n = M, k = K; lda = ldb = K, ldc = N.
  const int n_out = static_cast<int>(m.rows());
  const int k = static_cast<int>(m.cols());
  const int rows = static_cast<int>(num_rows);
  const cudaDataType_t ab_type = m.bf16() ? CUDA_R_16BF : CUDA_R_32F;
  const float alpha = 1.0f;
  const float beta = 0.0f;
  // CUBLAS_COMPUTE_32F with the default math mode: true fp32 products and sums (no TF32),
  // which the fp32 path's 1e-5 agreement with the CPU backend relies on.
  const cublasStatus_t status =
      cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, n_out, rows, k, &alpha, m.data(), ab_type,
                   k, b, ab_type, k, &beta, y, CUDA_R_32F, n_out, CUBLAS_COMPUTE_32F,
                   CUBLAS_GEMM_DEFAULT);
  if (status != CUBLAS_STATUS_SUCCESS) {
    spdlog::critical("CUDA backend: cublasGemmEx of [{} x {}] x [{} x {}]ᵀ failed: {} ({})", rows,
                     k, n_out, k, cublasGetStatusName(status), cublasGetStatusString(status));
    return cudaErrorUnknown;
  }
  return cudaSuccess;
}

}  // namespace glimpse::kernels::cuda::internal
