#include "kernels/cpu/cpu_backend.h"

#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/matmul.h"

namespace glimpse::kernels::cpu {
namespace {
// Element-wise work below this many elements is not worth waking the pool for.
constexpr int64_t kMinParallelElements = 1 << 14;
}  // namespace

CpuBackend::CpuBackend(int num_threads, KvElementType kv_type)
    : pool_(num_threads > 0 ? num_threads : DefaultNumThreads()), kv_type_(kv_type) {}

CpuBackend::CpuBackend(int num_threads, AllReduceFn all_reduce, KvElementType kv_type)
    : pool_(num_threads > 0 ? num_threads : DefaultNumThreads()),
      all_reduce_(std::move(all_reduce)),
      kv_type_(kv_type) {}

std::string CpuBackend::name() const { return absl::StrCat("cpu (", pool_.num_threads(), " threads)"); }

void* CpuBackend::Allocate(size_t num_bytes) {
  void* ptr = std::aligned_alloc(64, (num_bytes + 63) / 64 * 64);
  CHECK(ptr != nullptr);
  return ptr;
}

void CpuBackend::Free(void* ptr) { std::free(ptr); }

void CpuBackend::CopyToBackend(void* dst, const void* host_src, size_t num_bytes) {
  std::memcpy(dst, host_src, num_bytes);
}

void CpuBackend::CopyToHost(void* host_dst, const void* src, size_t num_bytes) {
  std::memcpy(host_dst, src, num_bytes);
}

void CpuBackend::CopyWithinBackend(void* dst, const void* src, size_t num_bytes) {
  std::memcpy(dst, src, num_bytes);
}

absl::StatusOr<std::unique_ptr<PackedMatrix>> CpuBackend::PackMatrix(const MatrixView& w) {
  auto packed = CpuPackedMatrix::Pack(w);
  if (!packed.ok()) return packed.status();
  return std::unique_ptr<PackedMatrix>(std::move(*packed));
}

void CpuBackend::MatMul(const float* x, int64_t num_rows, const PackedMatrix& w, float* y) {
  cpu::MatMul(x, num_rows, static_cast<const CpuPackedMatrix&>(w), y, pool_);
}

void CpuBackend::EmbeddingLookup(const MatrixView& table, const int32_t* ids, int64_t num_ids,
                                 float* out) {
  for (int64_t i = 0; i < num_ids; ++i) {
    CHECK(ids[i] >= 0 && ids[i] < table.rows);
    WidenRow(table, ids[i], out + i * table.cols);
  }
}

void CpuBackend::RmsNorm(const float* x, const float* weight, int64_t num_rows, int64_t dim,
                         float eps, float* out) {
  auto rows = [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) RmsNormRow(x + r * dim, weight, dim, eps, out + r * dim);
  };
  if (num_rows * dim < kMinParallelElements) {
    rows(0, num_rows);
  } else {
    pool_.ParallelFor(num_rows, rows);
  }
}

void CpuBackend::Rope(const RopeParams& params) {
  if (static_cast<int64_t>(params.num_tokens) * params.num_heads * params.head_dim <
      kMinParallelElements) {
    ApplyRope(params);
    return;
  }
  pool_.ParallelFor(params.num_tokens, [&](int64_t begin, int64_t end) {
    RopeParams part = params;
    part.x = params.x + begin * params.num_heads * params.head_dim;
    part.positions = params.positions + begin;
    part.num_tokens = static_cast<int32_t>(end - begin);
    ApplyRope(part);
  });
}

void CpuBackend::StoreKv(const KvStoreParams& params) { cpu::StoreKv(params, kv_type_); }

void CpuBackend::PagedAttention(const PagedAttentionParams& params) {
  cpu::PagedAttention(params, kv_type_, pool_);
}

void CpuBackend::SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  if (n < kMinParallelElements) {
    cpu::SiluMul(gate, up, n, out);
    return;
  }
  // Split on multiples of 8 so every element takes the same (vector) path in any split.
  const int64_t num_chunks = (n + 7) / 8;
  pool_.ParallelFor(num_chunks, [&](int64_t begin, int64_t end) {
    const int64_t lo = begin * 8;
    const int64_t hi = std::min(end * 8, n);
    cpu::SiluMul(gate + lo, up + lo, hi - lo, out + lo);
  });
}

void CpuBackend::AddInPlace(float* x, const float* y, int64_t n) { cpu::AddInPlace(x, y, n); }

void CpuBackend::GatherRows(const float* x, int64_t dim, const int32_t* rows, int64_t num_rows,
                            float* out) {
  for (int64_t i = 0; i < num_rows; ++i) {
    std::memcpy(out + i * dim, x + static_cast<int64_t>(rows[i]) * dim, dim * sizeof(float));
  }
}

void CpuBackend::AllReduceSum(float* x, int64_t n) {
  // A group of one: the sum over one rank is x itself, bit for bit, which keeps the unsplit
  // model's logits (and batch invariance) exactly as they were before tensor parallelism.
  if (all_reduce_) all_reduce_(x, n);
}

}  // namespace glimpse::kernels::cpu
