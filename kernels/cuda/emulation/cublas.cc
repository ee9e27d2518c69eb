// cublasGemmEx and cublasGemmStridedBatchedEx on the CPU for emulated builds
// (include/cublas_v2.h). fp32 products summed in fp32 along k, as cuBLAS does with
// CUBLAS_COMPUTE_32F and the default math mode (the order of the sums differs; callers compare
// with tolerances). Not thread-safe per handle, as cuBLAS.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

#include "kernels/cuda/emulation/include/cublas_v2.h"
#include "kernels/cuda/emulation/include/cuda_bf16.h"
#include "kernels/cuda/emulation/include/cuda_fp16.h"
#include "kernels/cuda/emulation/launch.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
};

namespace {

bool SupportedType(cudaDataType_t t) {
  return t == CUDA_R_32F || t == CUDA_R_16BF || t == CUDA_R_16F;
}

float Load(const void* base, cudaDataType_t type, size_t i) {
  switch (type) {
    case CUDA_R_32F:
      return static_cast<const float*>(base)[i];
    case CUDA_R_16BF:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
    case CUDA_R_16F:
      return __half2float(static_cast<const __half*>(base)[i]);
  }
  return 0.0f;
}

void Store(void* base, cudaDataType_t type, size_t i, float v) {
  switch (type) {
    case CUDA_R_32F:
      static_cast<float*>(base)[i] = v;
      return;
    case CUDA_R_16BF:
      static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(v);
      return;
    case CUDA_R_16F:
      break;  // not produced by glimpse; rejected below
  }
}

// Eight partial sums, so that the compiler can vectorize the loop.
float Dot(const float* a, const float* b, int k) {
  float partial[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int p = 0;
  for (; p + 8 <= k; p += 8) {
    for (int l = 0; l < 8; ++l) partial[l] += a[p + l] * b[p + l];
  }
  float sum = 0.0f;
  for (; p < k; ++p) sum += a[p] * b[p];
  for (int l = 0; l < 8; ++l) sum += partial[l];
  return sum;
}

}  // namespace

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  *handle = new cublasContext();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void* /*workspace*/, size_t /*bytes*/) {
  return handle == nullptr ? CUBLAS_STATUS_NOT_INITIALIZED : CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t /*mode*/) {
  return handle == nullptr ? CUBLAS_STATUS_NOT_INITIALIZED : CUBLAS_STATUS_SUCCESS;
}
const char* cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}
const char* cublasGetStatusString(cublasStatus_t status) { return cublasGetStatusName(status); }

namespace {

size_t ElementBytes(cudaDataType_t type) { return type == CUDA_R_32F ? 4 : 2; }

// batch_count GEMMs (one for cublasGemmEx), problem i at A + i * stride_a (elements) and so on,
// checked as cuBLAS checks them and run as one piece of work on the handle's stream.
cublasStatus_t StridedBatchedGemm(cublasHandle_t handle, cublasOperation_t transa,
                                  cublasOperation_t transb, int m, int n, int k, const void* alpha,
                                  const void* A, cudaDataType_t Atype, int lda, long long stride_a,
                                  const void* B, cudaDataType_t Btype, int ldb, long long stride_b,
                                  const void* beta, void* C, cudaDataType_t Ctype, int ldc,
                                  long long stride_c, int batch_count,
                                  cublasComputeType_t computeType, const char* what) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (m < 0 || n < 0 || k < 0 || batch_count < 0 || transa == CUBLAS_OP_C ||
      transb == CUBLAS_OP_C || lda < (transa == CUBLAS_OP_N ? m : k) ||
      ldb < (transb == CUBLAS_OP_N ? k : n) || ldc < m || lda < 1 || ldb < 1 || ldc < 1) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (!SupportedType(Atype) || !SupportedType(Btype) || Ctype == CUDA_R_16F ||
      !SupportedType(Ctype) || computeType != CUBLAS_COMPUTE_32F) {
    std::fprintf(stderr,
                 "CUDA emulation: %s with types %d x %d -> %d, compute %d is "
                 "not emulated\n",
                 what, Atype, Btype, Ctype, computeType);
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  const float a_scale = *static_cast<const float*>(alpha);
  const float b_scale = *static_cast<const float*>(beta);
  const cudaError_t err = cuda_emu::RunOnStream(
      handle->stream,
      [=] {
        for (int batch = 0; batch < batch_count; ++batch) {
          const void* a = static_cast<const char*>(A) + batch * stride_a * ElementBytes(Atype);
          const void* b = static_cast<const char*>(B) + batch * stride_b * ElementBytes(Btype);
          void* c = static_cast<char*>(C) + batch * stride_c * ElementBytes(Ctype);
          // op(A) is m x k, op(B) is k x n, C is m x n; all column-major. Both operands are
          // widened to fp32 with k contiguous (rows of op(A), columns of op(B)), then every
          // element of C is one dot product.
          std::vector<float> a_rows(static_cast<size_t>(m) * k);
          std::vector<float> b_cols(static_cast<size_t>(n) * k);
          for (int i = 0; i < m; ++i) {
            for (int p = 0; p < k; ++p) {
              a_rows[static_cast<size_t>(i) * k + p] =
                  Load(a, Atype,
                       transa == CUBLAS_OP_N ? static_cast<size_t>(p) * lda + i
                                             : static_cast<size_t>(i) * lda + p);
            }
          }
          for (int j = 0; j < n; ++j) {
            for (int p = 0; p < k; ++p) {
              b_cols[static_cast<size_t>(j) * k + p] =
                  Load(b, Btype,
                       transb == CUBLAS_OP_N ? static_cast<size_t>(j) * ldb + p
                                             : static_cast<size_t>(p) * ldb + j);
            }
          }
          constexpr int kRowBlock = 256;  // rows of op(A) kept in cache across the columns
          for (int i0 = 0; i0 < m; i0 += kRowBlock) {
            const int i1 = std::min(m, i0 + kRowBlock);
            for (int j = 0; j < n; ++j) {
              const float* b_col = &b_cols[static_cast<size_t>(j) * k];
              for (int i = i0; i < i1; ++i) {
                const size_t c_index = static_cast<size_t>(j) * ldc + i;
                const float prior = b_scale != 0.0f ? b_scale * Load(c, Ctype, c_index) : 0.0f;
                Store(c, Ctype, c_index,
                      a_scale * Dot(&a_rows[static_cast<size_t>(i) * k], b_col, k) + prior);
              }
            }
          }
        }
      },
      what);
  return err == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

}  // namespace

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void* alpha,
                            const void* A, cudaDataType_t Atype, int lda, const void* B,
                            cudaDataType_t Btype, int ldb, const void* beta, void* C,
                            cudaDataType_t Ctype, int ldc, cublasComputeType_t computeType,
                            cublasGemmAlgo_t /*algo*/) {
  return StridedBatchedGemm(handle, transa, transb, m, n, k, alpha, A, Atype, lda, 0, B, Btype, ldb,
                            0, beta, C, Ctype, ldc, 0, 1, computeType, "cublasGemmEx");
}

cublasStatus_t cublasGemmStridedBatchedEx(
    cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
    const void* alpha, const void* A, cudaDataType_t Atype, int lda, long long int strideA,
    const void* B, cudaDataType_t Btype, int ldb, long long int strideB, const void* beta, void* C,
    cudaDataType_t Ctype, int ldc, long long int strideC, int batchCount,
    cublasComputeType_t computeType, cublasGemmAlgo_t /*algo*/) {
  return StridedBatchedGemm(handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B,
                            Btype, ldb, strideB, beta, C, Ctype, ldc, strideC, batchCount,
                            computeType, "cublasGemmStridedBatchedEx");
}
