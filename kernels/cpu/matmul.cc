#include "kernels/cpu/matmul.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/float16.h"

namespace glimpse::kernels::cpu {
namespace {

size_t ElementBytes(WeightType type) {
  switch (type) {
    case WeightType::kF32: return 4;
    case WeightType::kF16: return 2;
    case WeightType::kBF16: return 2;
    case WeightType::kQ8_0: return 1;
  }
  return 4;
}

constexpr int64_t kQ8BlockElements = 32;
constexpr int64_t kQ8BlockBytes = 34;

const uint8_t* RowStart(const MatrixView& w, int64_t row) {
  const auto* base = static_cast<const uint8_t*>(w.data);
  switch (w.type) {
    case WeightType::kF32: return base + row * w.cols * 4;
    case WeightType::kF16:
    case WeightType::kBF16: return base + row * w.cols * 2;
    case WeightType::kQ8_0: return base + row * (w.cols / kQ8BlockElements) * kQ8BlockBytes;
  }
  return base;
}

// ---- Weight loaders: widen 8 consecutive packed weights of one panel row to fp32. ----

struct LoadF32 {
  static constexpr size_t kBytes = 4;
  static __m256 Load(const uint8_t* p) { return _mm256_loadu_ps(reinterpret_cast<const float*>(p)); }
};
struct LoadF16 {
  static constexpr size_t kBytes = 2;
  static __m256 Load(const uint8_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
};
struct LoadBF16 {
  static constexpr size_t kBytes = 2;
  static __m256 Load(const uint8_t* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
};
struct LoadQ8 {
  static __m256 Load(const uint8_t* p) {
    const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
  }
};

// Computes the MR x (16 * NP) tile y[0..MR)[panels p0..p0+NP) over all of K.
// x rows are `ldx` floats apart, y rows `ldy` floats apart; `n_valid` limits the columns
// stored for the last panel of the matrix.
template <int MR, int NP, typename Loader>
void PlainKernel(const float* x, int64_t ldx, const CpuPackedMatrix& w, int64_t p0, float* y,
                 int64_t ldy) {
  const int64_t K = w.cols();
  constexpr size_t elem = Loader::kBytes;
  __m256 acc[MR][NP][2];
  _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r)
    _Pragma("GCC unroll 8") for (int p = 0; p < NP; ++p) acc[r][p][0] = acc[r][p][1] = _mm256_setzero_ps();
  const uint8_t* panels[NP];
  _Pragma("GCC unroll 8") for (int p = 0; p < NP; ++p) panels[p] = w.panel(p0 + p);
  for (int64_t k = 0; k < K; ++k) {
    __m256 w0[NP], w1[NP];
    _Pragma("GCC unroll 8") for (int p = 0; p < NP; ++p) {
      const uint8_t* row = panels[p] + k * kPanelWidth * elem;
      w0[p] = Loader::Load(row);
      w1[p] = Loader::Load(row + 8 * elem);
    }
    _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) {
      const __m256 a = _mm256_broadcast_ss(x + r * ldx + k);
      _Pragma("GCC unroll 8") for (int p = 0; p < NP; ++p) {
        acc[r][p][0] = _mm256_fmadd_ps(a, w0[p], acc[r][p][0]);
        acc[r][p][1] = _mm256_fmadd_ps(a, w1[p], acc[r][p][1]);
      }
    }
  }
  const int64_t n_total = w.rows();
  _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) {
    _Pragma("GCC unroll 8") for (int p = 0; p < NP; ++p) {
      const int64_t col = (p0 + p) * kPanelWidth;
      float* out = y + r * ldy + col;
      if (col + kPanelWidth <= n_total) {
        _mm256_storeu_ps(out, acc[r][p][0]);
        _mm256_storeu_ps(out + 8, acc[r][p][1]);
      } else {
        alignas(32) float tmp[kPanelWidth];
        _mm256_store_ps(tmp, acc[r][p][0]);
        _mm256_store_ps(tmp + 8, acc[r][p][1]);
        for (int64_t j = 0; col + j < n_total; ++j) out[j] = tmp[j];
      }
    }
  }
}

// Q8_0: the weight is q * d with d constant over 32 k; widening (q * d) first keeps the
// per-element fma sequence identical to the F32 path on dequantized weights.
template <int MR, int NP>
void Q8Kernel(const float* x, int64_t ldx, const CpuPackedMatrix& w, int64_t p0, float* y,
              int64_t ldy) {
  const int64_t K = w.cols();
  __m256 acc[MR][NP][2];
  _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r)
    _Pragma("GCC unroll 8") for (int p = 0; p < NP; ++p) acc[r][p][0] = acc[r][p][1] = _mm256_setzero_ps();
  for (int64_t kb = 0; kb < K; kb += kQ8BlockElements) {
    __m256 d0[NP], d1[NP];
    _Pragma("GCC unroll 8") for (int p = 0; p < NP; ++p) {
      const float* scales = w.panel_scales(p0 + p) + (kb / kQ8BlockElements) * kPanelWidth;
      d0[p] = _mm256_loadu_ps(scales);
      d1[p] = _mm256_loadu_ps(scales + 8);
    }
    for (int64_t k = kb; k < kb + kQ8BlockElements; ++k) {
      __m256 w0[NP], w1[NP];
      _Pragma("GCC unroll 8") for (int p = 0; p < NP; ++p) {
        const uint8_t* row = w.panel(p0 + p) + k * kPanelWidth;
        w0[p] = _mm256_mul_ps(LoadQ8::Load(row), d0[p]);
        w1[p] = _mm256_mul_ps(LoadQ8::Load(row + 8), d1[p]);
      }
      _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) {
        const __m256 a = _mm256_broadcast_ss(x + r * ldx + k);
        _Pragma("GCC unroll 8") for (int p = 0; p < NP; ++p) {
          acc[r][p][0] = _mm256_fmadd_ps(a, w0[p], acc[r][p][0]);
          acc[r][p][1] = _mm256_fmadd_ps(a, w1[p], acc[r][p][1]);
        }
      }
    }
  }
  const int64_t n_total = w.rows();
  _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) {
    _Pragma("GCC unroll 8") for (int p = 0; p < NP; ++p) {
      const int64_t col = (p0 + p) * kPanelWidth;
      float* out = y + r * ldy + col;
      alignas(32) float tmp[kPanelWidth];
      _mm256_store_ps(tmp, acc[r][p][0]);
      _mm256_store_ps(tmp + 8, acc[r][p][1]);
      for (int64_t j = 0; j < kPanelWidth && col + j < n_total; ++j) out[j] = tmp[j];
    }
  }
}

template <int MR, int NP>
void Kernel(const float* x, int64_t ldx, const CpuPackedMatrix& w, int64_t p0, float* y,
            int64_t ldy) {
  switch (w.type()) {
    case WeightType::kF32: return PlainKernel<MR, NP, LoadF32>(x, ldx, w, p0, y, ldy);
    case WeightType::kF16: return PlainKernel<MR, NP, LoadF16>(x, ldx, w, p0, y, ldy);
    case WeightType::kBF16: return PlainKernel<MR, NP, LoadBF16>(x, ldx, w, p0, y, ldy);
    case WeightType::kQ8_0: return Q8Kernel<MR, NP>(x, ldx, w, p0, y, ldy);
  }
}

using KernelFn = void (*)(const float*, int64_t, const CpuPackedMatrix&, int64_t, float*, int64_t);

// Tile shapes by rows in the block: few rows use several panels at once so that enough
// independent accumulators hide the FMA latency (12 of the 16 ymm registers at most).
constexpr int kMaxRows = 6;
struct TileShape {
  KernelFn fn;
  int panels;
};
constexpr TileShape kTiles[kMaxRows + 1] = {
    {nullptr, 0},      {&Kernel<1, 4>, 4}, {&Kernel<2, 3>, 3}, {&Kernel<3, 2>, 2},
    {&Kernel<4, 1>, 1}, {&Kernel<5, 1>, 1}, {&Kernel<6, 1>, 1},
};
constexpr KernelFn kSinglePanel[kMaxRows + 1] = {
    nullptr, &Kernel<1, 1>, &Kernel<2, 1>, &Kernel<3, 1>, &Kernel<4, 1>, &Kernel<5, 1>,
    &Kernel<6, 1>,
};

// Panels are processed in groups that stay cache-resident while all rows pass over them.
constexpr int64_t kPanelGroup = 4;

void MatMulPanels(const float* x, int64_t num_rows, const CpuPackedMatrix& w, float* y,
                  int64_t panel_begin, int64_t panel_end) {
  const int64_t K = w.cols();
  const int64_t N = w.rows();
  for (int64_t g = panel_begin; g < panel_end; g += kPanelGroup) {
    const int64_t g_end = std::min(g + kPanelGroup, panel_end);
    int64_t m = 0;
    for (; m + kMaxRows <= num_rows; m += kMaxRows) {
      for (int64_t p = g; p < g_end; ++p) {
        kSinglePanel[kMaxRows](x + m * K, K, w, p, y + m * N, N);
      }
    }
    const int rest = static_cast<int>(num_rows - m);
    if (rest == 0) continue;
    const TileShape tile = kTiles[rest];
    int64_t p = g;
    for (; p + tile.panels <= g_end; p += tile.panels) tile.fn(x + m * K, K, w, p, y + m * N, N);
    for (; p < g_end; ++p) kSinglePanel[rest](x + m * K, K, w, p, y + m * N, N);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<CpuPackedMatrix>> CpuPackedMatrix::Pack(const MatrixView& w) {
  if (w.rows <= 0 || w.cols <= 0 || w.data == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot pack an empty matrix (", w.rows, " x ", w.cols, ")"));
  }
  if (w.type == WeightType::kQ8_0 && w.cols % kQ8BlockElements != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Q8_0 matrix has ", w.cols, " columns, not a multiple of ", kQ8BlockElements));
  }
  std::unique_ptr<CpuPackedMatrix> packed(new CpuPackedMatrix());
  packed->type_ = w.type;
  packed->rows_ = w.rows;
  packed->cols_ = w.cols;
  const size_t elem = ElementBytes(w.type);
  packed->panel_bytes_ = static_cast<size_t>(w.cols) * kPanelWidth * elem;
  const int64_t num_panels = packed->num_panels();
  const size_t data_bytes = (packed->panel_bytes_ * num_panels + 63) / 64 * 64;
  packed->data_ = static_cast<uint8_t*>(std::aligned_alloc(64, data_bytes));
  std::memset(packed->data_, 0, data_bytes);
  packed->num_bytes_ = data_bytes;
  if (w.type == WeightType::kQ8_0) {
    const size_t scale_bytes =
        (static_cast<size_t>(w.cols / kQ8BlockElements) * kPanelWidth * num_panels * 4 + 63) /
        64 * 64;
    packed->scales_ = static_cast<float*>(std::aligned_alloc(64, scale_bytes));
    std::memset(packed->scales_, 0, scale_bytes);
    packed->num_bytes_ += scale_bytes;
  }
  for (int64_t n = 0; n < w.rows; ++n) {
    const int64_t p = n / kPanelWidth;
    const int64_t j = n % kPanelWidth;
    const uint8_t* src = RowStart(w, n);
    uint8_t* dst = packed->data_ + p * packed->panel_bytes_;
    if (w.type == WeightType::kQ8_0) {
      float* scales = packed->scales_ + p * (w.cols / kQ8BlockElements) * kPanelWidth;
      for (int64_t b = 0; b < w.cols / kQ8BlockElements; ++b) {
        const uint8_t* block = src + b * kQ8BlockBytes;
        uint16_t d;
        std::memcpy(&d, block, 2);
        scales[b * kPanelWidth + j] = HalfToFloat(d);
        for (int64_t i = 0; i < kQ8BlockElements; ++i) {
          dst[(b * kQ8BlockElements + i) * kPanelWidth + j] = block[2 + i];
        }
      }
    } else {
      for (int64_t k = 0; k < w.cols; ++k) {
        std::memcpy(dst + (k * kPanelWidth + j) * elem, src + k * elem, elem);
      }
    }
  }
  return packed;
}

CpuPackedMatrix::~CpuPackedMatrix() {
  std::free(data_);
  std::free(scales_);
}

void MatMul(const float* x, int64_t num_rows, const CpuPackedMatrix& w, float* y,
            ThreadPool& pool) {
  if (num_rows <= 0) return;
  const int64_t num_panels = w.num_panels();
  // Split panels between threads in whole groups where possible, so each thread streams its
  // own slice of the weights exactly once per call.
  const int64_t num_groups = (num_panels + kPanelGroup - 1) / kPanelGroup;
  if (num_groups >= pool.num_threads()) {
    pool.ParallelFor(num_groups, [&](int64_t begin, int64_t end) {
      MatMulPanels(x, num_rows, w, y, begin * kPanelGroup,
                   std::min(end * kPanelGroup, num_panels));
    });
  } else {
    pool.ParallelFor(num_panels, [&](int64_t begin, int64_t end) {
      MatMulPanels(x, num_rows, w, y, begin, end);
    });
  }
}

float WeightAt(const MatrixView& w, int64_t row, int64_t col) {
  const uint8_t* src = RowStart(w, row);
  switch (w.type) {
    case WeightType::kF32: {
      float v;
      std::memcpy(&v, src + col * 4, 4);
      return v;
    }
    case WeightType::kF16: {
      uint16_t h;
      std::memcpy(&h, src + col * 2, 2);
      return HalfToFloat(h);
    }
    case WeightType::kBF16: {
      uint16_t h;
      std::memcpy(&h, src + col * 2, 2);
      return Bf16ToFloat(h);
    }
    case WeightType::kQ8_0: {
      const uint8_t* block = src + (col / kQ8BlockElements) * kQ8BlockBytes;
      uint16_t d;
      std::memcpy(&d, block, 2);
      const auto q = static_cast<int8_t>(block[2 + col % kQ8BlockElements]);
      return static_cast<float>(q) * HalfToFloat(d);
    }
  }
  return 0;
}

void WidenRow(const MatrixView& w, int64_t row, float* out) {
  for (int64_t k = 0; k < w.cols; ++k) out[k] = WeightAt(w, row, k);
}

void MatMulReference(const float* x, int64_t num_rows, const MatrixView& w, float* y) {
  for (int64_t m = 0; m < num_rows; ++m) {
    for (int64_t n = 0; n < w.rows; ++n) {
      float acc = 0.0f;
      for (int64_t k = 0; k < w.cols; ++k) acc = std::fma(x[m * w.cols + k], WeightAt(w, n, k), acc);
      y[m * w.rows + n] = acc;
    }
  }
}

}  // namespace glimpse::kernels::cpu
