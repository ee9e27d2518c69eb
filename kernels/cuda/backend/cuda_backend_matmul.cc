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

namespace {

// A device allocation of `num_bytes` for packed matrices, freed (on its device) by the last
// CudaPackedMatrix that shares it.
absl::StatusOr<std::shared_ptr<void>> PackedAllocation(int device, size_t num_bytes,
                                                       const std::string& what) {
  void* data = nullptr;
  RETURN_IF_ERROR(CudaStatus(cudaMalloc(&data, num_bytes), what));
  return std::shared_ptr<void>(data, [device, num_bytes](void* p) {
    // cudaFree synchronizes the device, so no enqueued matmul still reads the weights.
    if (cudaSetDevice(device) != cudaSuccess || cudaFree(p) != cudaSuccess) {
      spdlog::error("CUDA backend: freeing {} bytes of packed weights failed", num_bytes);
    }
  });
}

absl::Status CheckPackable(const MatrixView& w) {
  if (w.data == nullptr || w.rows <= 0 || w.cols <= 0 || w.rows > INT_MAX || w.cols > INT_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot pack a [", w.rows, " x ", w.cols, "] matrix on the device"));
  }
  if (w.type == WeightType::kQ8_0 && w.cols % kQ8_0BlockElements != 0) {
    return absl::InvalidArgumentError(absl::StrCat("Q8_0 matrix has ", w.cols,
                                                   " columns, not a multiple of ",
                                                   kQ8_0BlockElements));
  }
  return absl::OkStatus();
}

size_t PackedBytes(const MatrixView& w) {
  return static_cast<size_t>(w.rows) * static_cast<size_t>(w.cols) *
         (w.type == WeightType::kF32 ? 4 : 2);
}

}  // namespace

absl::StatusOr<std::unique_ptr<PackedMatrix>> CudaBackend::PackMatrix(const MatrixView& w) {
  ASSIGN_OR_RETURN(std::vector<std::unique_ptr<PackedMatrix>> packed,
                   PackMatrices(std::span<const MatrixView>(&w, 1)));
  return std::move(packed[0]);
}

absl::StatusOr<std::vector<std::unique_ptr<PackedMatrix>>> CudaBackend::PackMatrices(
    std::span<const MatrixView> ws) {
  Bind();
  if (graphs_.recording() && !graphs_.empty()) FinishGraphStep(GraphEagerReason::kMidStepSync);
  std::vector<std::unique_ptr<PackedMatrix>> packed;
  if (ws.empty()) return packed;
  for (const MatrixView& w : ws) RETURN_IF_ERROR(CheckPackable(w));
  const bool bf16 = ws[0].type != WeightType::kF32;
  const bool together = std::all_of(ws.begin(), ws.end(), [&](const MatrixView& w) {
    return w.cols == ws[0].cols && (w.type != WeightType::kF32) == bf16;
  });
  if (!together && ws.size() > 1) {
    for (const MatrixView& w : ws) {
      ASSIGN_OR_RETURN(std::unique_ptr<PackedMatrix> one, PackMatrix(w));
      packed.push_back(std::move(one));
    }
    return packed;
  }
  size_t total_bytes = 0;
  for (const MatrixView& w : ws) total_bytes += PackedBytes(w);
  const std::string what = absl::StrCat(
      "packing ",
      ws.size() == 1 ? absl::StrCat("a [", ws[0].rows, " x ", ws[0].cols, "] matrix")
                     : absl::StrCat(ws.size(), " matrices of ", ws[0].cols, " columns"),
      " (", total_bytes >> 20, " MiB) on the device");
  ASSIGN_OR_RETURN(std::shared_ptr<void> allocation, PackedAllocation(device_, total_bytes, what));
  uint8_t* next = static_cast<uint8_t*>(allocation.get());
  for (const MatrixView& w : ws) {
    RETURN_IF_ERROR(PackInto(w, next));
    packed.push_back(std::make_unique<CudaPackedMatrix>(allocation, w.rows, w.cols, bf16, next));
    next += PackedBytes(w);
  }
  return packed;
}

absl::Status CudaBackend::PackInto(const MatrixView& w, void* dst) {
  const std::string what = absl::StrCat("packing a [", w.rows, " x ", w.cols, "] matrix (",
                                        PackedBytes(w) >> 20, " MiB) on the device");
  if (w.type == WeightType::kF32 || w.type == WeightType::kBF16) {
    // Stored as used: copy verbatim.
    RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(dst, w.data, PackedBytes(w), cudaMemcpyHostToDevice, stream_), what));
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
    p.dst = dst;
    p.rows = w.rows;
    p.cols = w.cols;
    RETURN_IF_ERROR(CudaStatus(LaunchWeightsToBf16(p, stream_), what));
    RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream_), what));  // before raw is freed
  }
  return CudaStatus(cudaStreamSynchronize(stream_), what);
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
  // One input for every matrix (one bf16 rounding of x, or x itself) when all are of one width
  // and dtype.
  const bool bf16 = AsCuda(*ws[0]).bf16();
  const bool shared = ws.size() > 1 && std::all_of(ws.begin(), ws.end(), [&](const auto* w) {
                        return AsCuda(*w).bf16() == bf16 && w->cols() == ws[0]->cols();
                      });
  if (!shared || num_rows > INT_MAX) {
    Backend::MatMuls(x, num_rows, ws, ys);
    return;
  }
  Bind();
  if (graphs_.recording() && RecordMatMuls(x, num_rows, ws, ys)) return;
  const void* input = x;
  if (bf16) {
    const int64_t elements = num_rows * ws[0]->cols();
    Reserve(activations_bf16_, static_cast<size_t>(elements) * 2);
    GLIMPSE_CUDA_CHECK(LaunchCastF32ToBf16(x, activations_bf16_.get(), elements, stream_));
    input = activations_bf16_.get();
  }
  const std::vector<ProjectionGemm> gemms = PlanProjectionGemms(ws, ys, num_rows);
  for (const ProjectionGemm& g : gemms) {
    GLIMPSE_CUDA_CHECK(EnqueueProjectionGemm(input, num_rows, g));
  }
  gemm_calls_joined_ += static_cast<int64_t>(ws.size() - gemms.size());
}

std::vector<ProjectionGemm> PlanProjectionGemms(std::span<const PackedMatrix* const> ws,
                                                std::span<float* const> ys, int64_t num_rows) {
  std::vector<ProjectionGemm> gemms;
  for (size_t j = 0; j < ws.size(); ++j) {
    const CudaPackedMatrix& m = AsCuda(*ws[j]);
    float* const y = ys[j];
    if (!gemms.empty()) {
      ProjectionGemm& g = gemms.back();
      const auto* w_bytes = static_cast<const uint8_t*>(m.data());
      const auto* g_bytes = static_cast<const uint8_t*>(g.w);
      const int64_t element = static_cast<int64_t>(m.element_bytes());
      // One input row: the output rows of matrices packed together are one row of theirs, so
      // one GEMM over the joined rows writes every output, if the outputs are adjacent too.
      if (num_rows == 1 && g.batch == 1 &&
          w_bytes == g_bytes + static_cast<int64_t>(g.n_out) * g.k * element &&
          y == g.y + g.n_out && g.n_out + m.rows() <= INT_MAX) {
        g.n_out += static_cast<int>(m.rows());
        ++g.matrices;
        continue;
      }
      // Same shape as every problem of a batch: its next problem, if evenly spaced after the
      // last (weights at any distance; outputs not overlapping).
      if (g.matrices == g.batch && g.n_out == m.rows()) {
        const int64_t w_gap = w_bytes - g_bytes;
        const int64_t y_gap = y - g.y;
        const int64_t w_stride = g.batch == 1 ? w_gap / element : g.w_stride;
        const int64_t y_stride = g.batch == 1 ? y_gap : g.y_stride;
        if (w_gap > 0 && w_gap % element == 0 && w_gap == g.batch * w_stride * element &&
            y_stride >= num_rows * g.n_out && y_gap == g.batch * y_stride) {
          g.w_stride = w_stride;
          g.y_stride = y_stride;
          ++g.batch;
          ++g.matrices;
          continue;
        }
      }
    }
    gemms.push_back(ProjectionGemm::Of(m, y));
  }
  return gemms;
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
  return EnqueueProjectionGemm(b, num_rows, ProjectionGemm::Of(m, y));
}

cudaError_t CudaBackend::EnqueueProjectionGemm(const void* b, int64_t num_rows,
                                               const ProjectionGemm& g) {
  // cuBLAS is column-major. Row-major buffers read column-major are transposed:
  //   W[N][K] (ld K)  is the K x N matrix Wᵀ;   x[M][K] (ld K) is xᵀ (K x M);
  //   y[M][N] (ld N)  is yᵀ (N x M).
  // y = x Wᵀ  <=>  yᵀ = W xᵀ = op(A) B  with A = the W buffer, op(A) = Aᵀ (CUBLAS_OP_T) = W,
  // B = the x buffer (CUBLAS_OP_N); m = N, n = M, k = K; lda = ldb = K, ldc = N. A batch's
  // problems share B (stride 0).
  const int rows = static_cast<int>(num_rows);
  const cudaDataType_t ab_type = g.bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const float alpha = 1.0f;
  const float beta = 0.0f;
  // CUBLAS_COMPUTE_32F with the default math mode: true fp32 products and sums (no TF32),
  // which the fp32 path's 1e-5 agreement with the CPU backend relies on.
  const cublasStatus_t status =
      g.batch == 1 ? cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, g.n_out, rows, g.k, &alpha,
                                  g.w, ab_type, g.k, b, ab_type, g.k, &beta, g.y, CUDA_R_32F,
                                  g.n_out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)
                   : cublasGemmStridedBatchedEx(
                         cublas_, CUBLAS_OP_T, CUBLAS_OP_N, g.n_out, rows, g.k, &alpha, g.w,
                         ab_type, g.k, g.w_stride, b, ab_type, g.k, 0, &beta, g.y, CUDA_R_32F,
                         g.n_out, g.y_stride, g.batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (status != CUBLAS_STATUS_SUCCESS) {
    spdlog::critical("CUDA backend: {} of {} x [{} x {}] x [{} x {}]ᵀ failed: {} ({})",
                     g.batch == 1 ? "cublasGemmEx" : "cublasGemmStridedBatchedEx", g.batch, rows,
                     g.k, g.n_out, g.k, cublasGetStatusName(status), cublasGetStatusString(status));
    return cudaErrorUnknown;
  }
  return cudaSuccess;
}

}  // namespace glimpse::kernels::cuda::internal
