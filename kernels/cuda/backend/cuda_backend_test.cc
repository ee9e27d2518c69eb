// Every Backend op of the CUDA backend against the CPU backend (the reference: fp32,
// batch-invariant) on fresh random inputs (seed printed; GLIMPSE_TEST_SEED=N replays), never
// zeros, odd sizes; device outputs are poisoned with NaN first, so an element the op fails to
// write fails the comparison. Skips cleanly (GTEST_SKIP) where no CUDA device exists.
//
// Tolerances, for every element and in the relative L2 norm ‖out − ref‖ / ‖ref‖:
//   fp32 paths:    |out − ref| ≤ 1e-5·rms(ref) + 1e-4·|ref|,   rel L2 < 1e-5
//   bf16 operands: |out − ref| ≤ 2e-2·rms(ref) + 2e-2·|ref|,   rel L2 < 1e-2
//   exact ops (embedding widening, gathers, copies, one fp32 add): bitwise.
// No NaN anywhere. The bf16 matmul is also held to the fp32 bound against a float64 product of
// the same bf16-rounded operands, which isolates the GEMM from the operand rounding.
#include "kernels/cuda/backend/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <initializer_list>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "common/float16.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/argmax_rows.h"
#include "kernels/cuda/backend/counter_value.h"
#include "kernels/cuda/backend/device_skip.h"
#include "model/kv_cache_storage.h"
#include "model/llama_config.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"

namespace glimpse::kernels {
namespace {

struct Tolerance {
  double atol_rms = 0.0;  // absolute tolerance, in units of rms(ref)
  double rtol = 0.0;
  double max_rel_l2 = 0.0;
  static Tolerance Fp32() { return {1e-5, 1e-4, 1e-5}; }
  static Tolerance Bf16() { return {2e-2, 2e-2, 1e-2}; }
  static Tolerance Exact() { return {0.0, 0.0, 0.0}; }
};

constexpr size_t kMinElementsForRelL2 = 64;

// Checks out against ref element by element and in relative L2 (from kMinElementsForRelL2
// elements); reports the worst element.
void ExpectClose(const std::string& what, const std::vector<float>& out,
                 const std::vector<float>& ref, const Tolerance& tol) {
  ASSERT_EQ(out.size(), ref.size()) << what;
  ASSERT_FALSE(ref.empty()) << what;
  double sum_sq_ref = 0.0;
  double sum_sq_err = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_FALSE(std::isnan(ref[i])) << what << ": reference NaN at " << i;
    sum_sq_ref += static_cast<double>(ref[i]) * ref[i];
  }
  const double rms = std::sqrt(sum_sq_ref / static_cast<double>(ref.size()));
  size_t num_bad = 0;
  size_t num_nan = 0;
  size_t worst = 0;
  double worst_excess = -1.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(out[i])) {
      ++num_nan;
      continue;
    }
    const double err = std::fabs(static_cast<double>(out[i]) - ref[i]);
    sum_sq_err += err * err;
    const double bound = tol.atol_rms * rms + tol.rtol * std::fabs(ref[i]);
    if (err > bound) ++num_bad;
    if (err - bound > worst_excess) {
      worst_excess = err - bound;
      worst = i;
    }
  }
  const double rel_l2 = sum_sq_ref > 0 ? std::sqrt(sum_sq_err / sum_sq_ref) : std::sqrt(sum_sq_err);
  EXPECT_EQ(num_nan, 0u) << what << ": NaN elements (unwritten or bad arithmetic)";
  EXPECT_EQ(num_bad, 0u) << what << ": " << num_bad << " of " << ref.size()
                         << " elements out of tolerance; worst at " << worst << ": out "
                         << out[worst] << " ref " << ref[worst];
  // Over a handful of elements the relative L2 error is that of one or two dot products, which
  // cancellation can make arbitrarily large relative to their value (a 1 x 32 bf16 product
  // exceeds 1e-2 now and then); the element-wise bound above still holds them.
  if (ref.size() >= kMinElementsForRelL2) {
    EXPECT_LE(rel_l2, tol.max_rel_l2) << what << ": relative L2 error";
  }
}

struct KvShape {
  int32_t num_heads, num_kv_heads, head_dim, block_size;
};

std::string Describe(const KvShape& s) {
  return "heads " + std::to_string(s.num_heads) + "/" + std::to_string(s.num_kv_heads) + " d " +
         std::to_string(s.head_dim) + " block " + std::to_string(s.block_size);
}

// A KV cache element as stored: fp32 as is, bf16 rounded to nearest even
// (common/float16.h).
float Stored(const Backend& backend, float x) {
  return backend.KvElementBytes() == 2 ? Bf16ToFloat(FloatToBf16(x)) : x;
}

// The cache's elements as floats (bf16 widened), n elements of KvElementBytes()
// at p.
std::vector<float> GetKv(Backend& backend, const void* p, size_t n) {
  if (backend.KvElementBytes() == 4) {
    std::vector<float> host(n);
    backend.CopyToHost(host.data(), p, n * 4);
    return host;
  }
  std::vector<uint16_t> bits(n);
  backend.CopyToHost(bits.data(), p, n * 2);
  std::vector<float> host(n);
  for (size_t i = 0; i < n; ++i) host[i] = Bf16ToFloat(bits[i]);
  return host;
}

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto backend = cuda::CreateCudaBackend({});
    if (!backend.ok()) GLIMPSE_SKIP_WITHOUT_CUDA(backend.status().message());
    cuda_ = std::move(*backend);
    const char* env = std::getenv("GLIMPSE_TEST_SEED");
    const uint64_t seed = env != nullptr ? std::strtoull(env, nullptr, 10) : std::random_device{}();
    std::printf("seed %llu (GLIMPSE_TEST_SEED=%llu replays)\n",
                static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
    rng_.seed(seed);
    cuda::CudaBackendOptions bf16_options;
    bf16_options.kv_cache_dtype = cuda::CudaKvCacheDType::kBFloat16;
    auto bf16 = cuda::CreateCudaBackend(bf16_options);
    ASSERT_TRUE(bf16.ok()) << bf16.status();
    cuda_bf16_kv_ = std::move(*bf16);
  }

  std::vector<float> Normal(size_t n, float stddev = 1.0f) {
    std::normal_distribution<float> dist(0.0f, stddev);
    std::vector<float> v(n);
    for (float& x : v) {
      do {
        x = dist(rng_);
      } while (x == 0.0f);
    }
    return v;
  }
  int32_t Int(int32_t lo, int32_t hi) {
    return std::uniform_int_distribution<int32_t>(lo, hi)(rng_);
  }

  // A buffer of `backend` holding `host`.
  float* Put(Backend& backend, const std::vector<float>& host) {
    auto* p = static_cast<float*>(backend.Allocate(host.size() * sizeof(float)));
    backend.CopyToBackend(p, host.data(), host.size() * sizeof(float));
    owned_.push_back({&backend, p});
    return p;
  }
  // A buffer of `backend` of n floats filled with NaN.
  float* Poisoned(Backend& backend, size_t n) {
    return Put(backend, std::vector<float>(n, std::numeric_limits<float>::quiet_NaN()));
  }
  std::vector<float> Get(Backend& backend, const void* p, size_t n) {
    std::vector<float> host(n);
    backend.CopyToHost(host.data(), p, n * sizeof(float));
    return host;
  }
  // StoreKv into a poisoned cache of `backend`'s KV dtype: the stored slots
  // hold the inputs (rounded as the cache stores them), every other element is
  // untouched.
  void StoreKvCase(Backend& backend, const KvShape& s) {
    const std::string what = backend.name() + ", " + std::to_string(backend.KvElementBytes()) +
                             "-byte KV, " + Describe(s);
    const int32_t num_blocks = 11;
    const int64_t block_elems = static_cast<int64_t>(s.block_size) * s.num_kv_heads * s.head_dim;
    const int64_t total = num_blocks * block_elems;
    const int32_t kv_dim = s.num_kv_heads * s.head_dim;
    // Distinct random slots over the whole pool.
    std::vector<int32_t> slots(num_blocks * s.block_size);
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), rng_);
    slots.resize(std::min<size_t>(slots.size(), 23));
    const int32_t n = static_cast<int32_t>(slots.size());
    const std::vector<float> k = Normal(n * kv_dim);
    const std::vector<float> v = Normal(n * kv_dim);
    KvStoreParams p;
    p.k = Put(backend, k);
    p.v = Put(backend, v);
    // NaN floats are NaN bf16 pairs too (0xFF bytes).
    auto poisoned_bytes = [&](size_t num_bytes) {
      void* buffer = backend.Allocate(num_bytes);
      const std::vector<uint8_t> ff(num_bytes, 0xFF);
      backend.CopyToBackend(buffer, ff.data(), num_bytes);
      owned_.push_back({&backend, buffer});
      return buffer;
    };
    const size_t cache_bytes = total * backend.KvElementBytes();
    p.kv = {poisoned_bytes(cache_bytes), poisoned_bytes(cache_bytes), s.block_size, s.num_kv_heads,
            s.head_dim};
    p.num_tokens = n;
    p.slots = slots.data();
    backend.StoreKv(p);
    const std::vector<float> kc = GetKv(backend, p.kv.k, total);
    const std::vector<float> vc = GetKv(backend, p.kv.v, total);
    std::vector<bool> written(total, false);
    int64_t mismatches = 0;
    for (int32_t t = 0; t < n; ++t) {
      const int64_t block = slots[t] / s.block_size;
      const int64_t slot = slots[t] % s.block_size;
      for (int32_t h = 0; h < s.num_kv_heads; ++h) {
        for (int32_t d = 0; d < s.head_dim; ++d) {
          // kernels/cuda/kv_layout.h: [block][kv_head][slot][head_dim].
          const int64_t off = ((block * s.num_kv_heads + h) * s.block_size + slot) * s.head_dim + d;
          mismatches += kc[off] != Stored(backend, k[t * kv_dim + h * s.head_dim + d]);
          mismatches += vc[off] != Stored(backend, v[t * kv_dim + h * s.head_dim + d]);
          written[off] = true;
        }
      }
    }
    EXPECT_EQ(mismatches, 0) << what;
    int64_t touched = 0;
    for (int64_t i = 0; i < total; ++i) {
      if (!written[i]) touched += !std::isnan(kc[i]) + !std::isnan(vc[i]);
    }
    EXPECT_EQ(touched, 0) << what << ": elements outside the stored slots changed";
  }

  void TearDown() override {
    for (auto& [backend, p] : owned_) backend->Free(p);
  }

  std::unique_ptr<Backend> cuda_;          // fp32 KV cache (the default)
  std::unique_ptr<Backend> cuda_bf16_kv_;  // bf16 KV cache
  cpu::CpuBackend cpu_{2};
  std::mt19937_64 rng_;
  std::vector<std::pair<Backend*, void*>> owned_;
};

// ---- Memory ---------------------------------------------------------------------------------

TEST_F(CudaBackendTest, CopiesRoundTripAtAnySizeAndOffset) {
  // Sizes below and above the staged-copy limit (256 KiB); odd byte offsets.
  for (const size_t n : {size_t{1}, size_t{3}, size_t{1000}, size_t{262145}, size_t{3000001}}) {
    std::vector<uint8_t> host(n);
    for (uint8_t& b : host) b = static_cast<uint8_t>(Int(1, 255));
    auto* dev = static_cast<uint8_t*>(cuda_->Allocate(n + 7));
    cuda_->CopyToBackend(dev + 7, host.data(), n);
    std::vector<uint8_t> back(n, 0);
    cuda_->CopyToHost(back.data(), dev + 7, n);
    EXPECT_EQ(back, host) << n << " bytes";
    cuda_->Free(dev);
  }
}

// AllocateHost's memory is page-locked (what the copy engines reach directly) and takes a
// copy either way, at sizes below and above the staged-copy limit.
TEST_F(CudaBackendTest, HostMemoryIsPageLockedAndTakesCopies) {
  for (const size_t n : {size_t{1000}, size_t{3000001}}) {
    auto* host = static_cast<uint8_t*>(cuda_->AllocateHost(n));
    ASSERT_NE(host, nullptr);
    cudaPointerAttributes attributes{};
    ASSERT_EQ(cudaPointerGetAttributes(&attributes, host), cudaSuccess);
    EXPECT_EQ(attributes.type, cudaMemoryTypeHost) << n << " bytes";
    std::vector<uint8_t> bytes(n);
    for (uint8_t& b : bytes) b = static_cast<uint8_t>(Int(1, 255));
    std::copy(bytes.begin(), bytes.end(), host);
    auto* dev = static_cast<uint8_t*>(cuda_->Allocate(n));
    cuda_->CopyToBackend(dev, host, n);
    std::fill_n(host, n, uint8_t{0});
    cuda_->CopyToHost(host, dev, n);
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), host)) << n << " bytes";
    // Back and forth without waits: into page-locked memory, then from it to another device
    // buffer, ordered after the copy that writes it.
    auto* other = static_cast<uint8_t*>(cuda_->AllocateHost(n));
    ASSERT_NE(other, nullptr);
    std::fill_n(other, n, uint8_t{0});
    auto* dev2 = static_cast<uint8_t*>(cuda_->Allocate(n));
    cuda_->CopyToHostAsync(other, dev, n);
    cuda_->CopyToBackendAsync(dev2, other, n);
    cuda_->WaitForCopiesToHost();
    std::fill_n(host, n, uint8_t{0});
    cuda_->CopyToHost(host, dev2, n);
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), host)) << n << " bytes, async";
    cuda_->Free(dev2);
    cuda_->FreeHost(other);
    cuda_->Free(dev);
    cuda_->FreeHost(host);
  }
  // Ordinary memory is not.
  std::vector<uint8_t> plain(64);
  cudaPointerAttributes attributes{};
  ASSERT_EQ(cudaPointerGetAttributes(&attributes, plain.data()), cudaSuccess);
  EXPECT_EQ(attributes.type, cudaMemoryTypeUnregistered);
}

TEST_F(CudaBackendTest, CopyWithinBackendMovesExactlyTheRange) {
  for (const size_t n : {size_t{1}, size_t{1000}, size_t{3000001}}) {
    std::vector<uint8_t> src(n + 16), dst(n + 16);
    for (uint8_t& b : src) b = static_cast<uint8_t>(Int(1, 255));
    for (uint8_t& b : dst) b = static_cast<uint8_t>(Int(1, 255));
    auto* d_src = static_cast<uint8_t*>(cuda_->Allocate(src.size()));
    auto* d_dst = static_cast<uint8_t*>(cuda_->Allocate(dst.size()));
    cuda_->CopyToBackend(d_src, src.data(), src.size());
    cuda_->CopyToBackend(d_dst, dst.data(), dst.size());
    cuda_->CopyWithinBackend(d_dst + 5, d_src + 3, n);  // odd offsets
    std::copy_n(src.begin() + 3, n, dst.begin() + 5);
    std::vector<uint8_t> back(dst.size());
    cuda_->CopyToHost(back.data(), d_dst, back.size());
    EXPECT_EQ(back, dst) << "n=" << n;
    cuda_->Free(d_src);
    cuda_->Free(d_dst);
  }
}

TEST_F(CudaBackendTest, CopyToBackendLetsTheCallerReuseItsBufferAtOnce) {
  // Many small copies from one host buffer that is rewritten after each: every copy must
  // carry the bytes the buffer held at the call.
  const int kCopies = 2000;
  const size_t kFloats = 97;
  auto* dev = static_cast<float*>(cuda_->Allocate(kCopies * kFloats * sizeof(float)));
  std::vector<float> host(kFloats);
  std::vector<float> expect;
  for (int c = 0; c < kCopies; ++c) {
    host = Normal(kFloats);
    expect.insert(expect.end(), host.begin(), host.end());
    cuda_->CopyToBackend(dev + c * kFloats, host.data(), kFloats * sizeof(float));
  }
  EXPECT_EQ(Get(*cuda_, dev, expect.size()), expect);
  cuda_->Free(dev);
}

// ---- MatMul ---------------------------------------------------------------------------------

struct HostMatrix {
  WeightType type;
  int64_t rows, cols;
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // exact widening
  MatrixView view() const { return {type, bytes.data(), rows, cols}; }
};

HostMatrix MakeMatrix(WeightType type, int64_t rows, int64_t cols,
                      const std::vector<float>& normal) {
  HostMatrix m{type, rows, cols, {}, std::vector<float>(rows * cols)};
  switch (type) {
    case WeightType::kF32:
      m.values = normal;
      m.bytes.resize(rows * cols * 4);
      std::memcpy(m.bytes.data(), normal.data(), m.bytes.size());
      break;
    case WeightType::kF16:
    case WeightType::kBF16:
      m.bytes.resize(rows * cols * 2);
      for (int64_t i = 0; i < rows * cols; ++i) {
        const uint16_t h =
            type == WeightType::kF16 ? FloatToHalf(normal[i]) : FloatToBf16(normal[i]);
        std::memcpy(m.bytes.data() + 2 * i, &h, 2);
        m.values[i] = type == WeightType::kF16 ? HalfToFloat(h) : Bf16ToFloat(h);
      }
      break;
    case WeightType::kQ8_0:
      m.bytes.resize(rows * cols / 32 * 34);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t b = 0; b < cols / 32; ++b) {
          const float* src = normal.data() + r * cols + b * 32;
          float amax = 0.0f;
          for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(src[i]));
          const uint16_t d = FloatToHalf(amax / 127.0f);
          uint8_t* block = m.bytes.data() + (r * cols / 32 + b) * 34;
          std::memcpy(block, &d, 2);
          for (int i = 0; i < 32; ++i) {
            int q = static_cast<int>(std::lround(src[i] / HalfToFloat(d)));
            q = std::clamp(q, -127, 127);
            if (q == 0) q = 1;  // never zero
            block[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(q));
            m.values[r * cols + b * 32 + i] = static_cast<float>(q) * HalfToFloat(d);
          }
        }
      }
      break;
  }
  return m;
}

float RoundBf16(float x) { return Bf16ToFloat(FloatToBf16(x)); }

void RunMatMul(Backend& cuda, Backend& cpu, WeightType type, int64_t n,
               int64_t k, int64_t m, const std::vector<float>& w_normal,
               const std::vector<float>& x, std::vector<float>* out, std::vector<float>* ref,
               HostMatrix* matrix) {
  *matrix = MakeMatrix(type, n, k, w_normal);
  auto cuda_w = cuda.PackMatrix(matrix->view());
  auto cpu_w = cpu.PackMatrix(matrix->view());
  ASSERT_TRUE(cuda_w.ok()) << cuda_w.status();
  ASSERT_TRUE(cpu_w.ok()) << cpu_w.status();
  EXPECT_EQ((*cuda_w)->rows(), n);
  EXPECT_EQ((*cuda_w)->cols(), k);
  std::vector<float> nan(m * n, std::numeric_limits<float>::quiet_NaN());
  auto* dx = static_cast<float*>(cuda.Allocate(x.size() * 4));
  auto* dy = static_cast<float*>(cuda.Allocate(nan.size() * 4));
  cuda.CopyToBackend(dx, x.data(), x.size() * 4);
  cuda.CopyToBackend(dy, nan.data(), nan.size() * 4);
  cuda.MatMul(dx, m, **cuda_w, dy);
  out->resize(m * n);
  cuda.CopyToHost(out->data(), dy, out->size() * 4);
  cuda.Free(dx);
  cuda.Free(dy);
  ref->assign(m * n, 0.0f);
  cpu.MatMul(x.data(), m, **cpu_w, ref->data());
}

struct Shape {
  int64_t n, k, m;  // W[n][k], m rows of x
};

TEST_F(CudaBackendTest, MatMulF32MatchesCpu) {
  for (const Shape s : {Shape{1, 1, 1}, Shape{37, 67, 5}, Shape{192, 192, 33},
                        Shape{4096, 192, 3}, Shape{192, 512, 129}, Shape{1000, 3, 7}}) {
    const std::string what = "f32 W[" + std::to_string(s.n) + "][" + std::to_string(s.k) +
                             "] x " + std::to_string(s.m) + " rows";
    std::vector<float> out, ref;
    HostMatrix w;
    RunMatMul(*cuda_, cpu_, WeightType::kF32, s.n, s.k, s.m, Normal(s.n * s.k),
              Normal(s.m * s.k), &out, &ref, &w);
    ExpectClose(what, out, ref, Tolerance::Fp32());
  }
}

TEST_F(CudaBackendTest, MatMulBf16WeightsMatchCpu) {
  for (const WeightType type : {WeightType::kF16, WeightType::kBF16, WeightType::kQ8_0}) {
    for (const Shape s : {Shape{1, 32, 1}, Shape{37, 96, 5}, Shape{192, 192, 33},
                          Shape{4096, 192, 3}, Shape{192, 512, 129}}) {
      const std::string what = "type " + std::to_string(static_cast<int>(type)) + " W[" +
                               std::to_string(s.n) + "][" + std::to_string(s.k) + "] x " +
                               std::to_string(s.m) + " rows";
      const std::vector<float> x = Normal(s.m * s.k);
      std::vector<float> out, ref;
      HostMatrix w;
      RunMatMul(*cuda_, cpu_, type, s.n, s.k, s.m, Normal(s.n * s.k), x, &out, &ref, &w);
      // Against the CPU's fp32 product of the unrounded operands: bf16 rounding error, bounded
      // per element by rounding theory rather than by |ref| (a short dot product can cancel to
      // far below its terms): rounding both operands to bf16 (2^-9 each, to nearest) moves
      // each product by at most 2^-8 of itself, plus fp32 summation on both sides.
      ASSERT_EQ(out.size(), ref.size());
      int64_t num_bad = 0;
      double err_sq = 0.0, ref_sq = 0.0;
      for (int64_t r = 0; r < s.m; ++r) {
        for (int64_t c = 0; c < s.n; ++c) {
          double abs_sum = 0.0;
          for (int64_t i = 0; i < s.k; ++i) {
            abs_sum += std::fabs(static_cast<double>(x[r * s.k + i]) * w.values[c * s.k + i]);
          }
          const double bound = (std::ldexp(1.0, -8) + s.k * std::ldexp(1.0, -23)) * abs_sum;
          const double err = std::fabs(static_cast<double>(out[r * s.n + c]) - ref[r * s.n + c]);
          num_bad += !(err <= bound);  // NaN counts as bad
          err_sq += err * err;
          ref_sq += static_cast<double>(ref[r * s.n + c]) * ref[r * s.n + c];
        }
      }
      EXPECT_EQ(num_bad, 0) << what << " vs cpu: elements past the bf16 rounding bound";
      if (ref.size() >= kMinElementsForRelL2) {
        EXPECT_LE(std::sqrt(err_sq / ref_sq), Tolerance::Bf16().max_rel_l2) << what << " vs cpu";
      }
      // Against float64 on the operands as the GPU sees them: the GEMM itself is fp32-exact.
      std::vector<float> rounded_ref(s.m * s.n);
      for (int64_t r = 0; r < s.m; ++r) {
        for (int64_t c = 0; c < s.n; ++c) {
          double acc = 0.0;
          for (int64_t i = 0; i < s.k; ++i) {
            acc += static_cast<double>(RoundBf16(x[r * s.k + i])) *
                   RoundBf16(w.values[c * s.k + i]);
          }
          rounded_ref[r * s.n + c] = static_cast<float>(acc);
        }
      }
      ExpectClose(what + " vs float64 on bf16 operands", out, rounded_ref, Tolerance::Fp32());
    }
  }
}

// MatMuls (one input, several matrices: q/k/v, gate/up) gives what MatMul gives per matrix
// (to fp32 summation order: a joined GEMM may sum in another order than one per matrix),
// however the matrices were packed and wherever the outputs are, and saves the cuBLAS calls it
// can: matrices packed together (PackMatrices) run as one GEMM for one input row when their
// outputs are adjacent; same-shape matrices evenly spaced as one strided batch.
TEST_F(CudaBackendTest, MatMulsJoinsProductsAndEqualsOneMatMulPerMatrix) {
  struct Case {
    WeightType type;
    std::vector<int64_t> rows;  // the matrices' rows (outputs); all of width k
    int64_t k, m;
    bool packed_together, adjacent_outputs;
    int64_t joined;  // cuBLAS calls saved; -1: it depends on where separate allocations land
  };
  for (const Case& c : {
           Case{WeightType::kF16, {192, 64, 64}, 192, 1, true, true, 2},   // q|k|v: one GEMM
           Case{WeightType::kF16, {192, 64, 64}, 192, 33, true, true, 1},  // q; k and v batched
           Case{WeightType::kBF16, {96, 96, 96}, 96, 4, true, true, 2},    // one batch of three
           Case{WeightType::kQ8_0, {512, 512}, 192, 1, true, true, 1},     // gate|up: one GEMM
           Case{WeightType::kQ8_0, {512, 512}, 192, 5, true, true, 1},     // batched
           Case{WeightType::kF32, {37, 12}, 67, 1, true, true, 1},         // fp32 joins too
           Case{WeightType::kF32, {37, 12}, 67, 3, true, true, 0},         // two shapes, 3 rows
           Case{WeightType::kF16, {192, 64, 64}, 192, 1, true, false, -1},
           Case{WeightType::kF16, {192, 64, 64}, 192, 6, false, true, -1},
           Case{WeightType::kQ8_0, {512, 512}, 192, 2, false, false, -1},
       }) {
    const std::string what = "type " + std::to_string(static_cast<int>(c.type)) + ", " +
                             std::to_string(c.m) + " rows, packed " +
                             (c.packed_together ? "together" : "apart") + ", outputs " +
                             (c.adjacent_outputs ? "adjacent" : "apart");
    const std::vector<float> x = Normal(c.m * c.k);
    float* dx = Put(*cuda_, x);
    std::vector<HostMatrix> hosts;
    std::vector<MatrixView> views;
    for (const int64_t n : c.rows) hosts.push_back(MakeMatrix(c.type, n, c.k, Normal(n * c.k)));
    for (const HostMatrix& h : hosts) views.push_back(h.view());
    std::vector<std::unique_ptr<PackedMatrix>> packed;
    if (c.packed_together) {
      auto together = cuda_->PackMatrices(views);
      ASSERT_TRUE(together.ok()) << together.status();
      packed = std::move(*together);
    } else {
      for (const MatrixView& v : views) {
        auto w = cuda_->PackMatrix(v);
        ASSERT_TRUE(w.ok()) << w.status();
        packed.push_back(std::move(*w));
      }
    }
    ASSERT_EQ(packed.size(), c.rows.size()) << what;
    std::vector<const PackedMatrix*> ws;
    std::vector<float*> ys, singles;
    const int64_t total_rows = std::accumulate(c.rows.begin(), c.rows.end(), int64_t{0});
    float* adjacent = Poisoned(*cuda_, c.m * total_rows);
    for (size_t j = 0; j < packed.size(); ++j) {
      ws.push_back(packed[j].get());
      ys.push_back(c.adjacent_outputs ? (j == 0 ? adjacent : ys.back() + c.m * c.rows[j - 1])
                                      : Poisoned(*cuda_, c.m * c.rows[j]));
      singles.push_back(Poisoned(*cuda_, c.m * c.rows[j]));
    }
    const int64_t joined_before = testing::CounterValue(*cuda_, "cuda_gemm_calls_joined_total");
    cuda_->MatMuls(dx, c.m, ws, ys);
    const int64_t joined =
        testing::CounterValue(*cuda_, "cuda_gemm_calls_joined_total") - joined_before;
    if (c.joined >= 0) {
      EXPECT_EQ(joined, c.joined) << what;
    }
    EXPECT_LT(joined, static_cast<int64_t>(ws.size())) << what;
    for (size_t j = 0; j < ws.size(); ++j) cuda_->MatMul(dx, c.m, *ws[j], singles[j]);
    for (size_t j = 0; j < ws.size(); ++j) {
      const size_t n = static_cast<size_t>(c.m * c.rows[j]);
      const std::vector<float> got = Get(*cuda_, ys[j], n);
      EXPECT_EQ(std::count_if(got.begin(), got.end(), [](float v) { return std::isnan(v); }), 0)
          << what << ", matrix " << j;
      ExpectClose(what + ", matrix " + std::to_string(j), got, Get(*cuda_, singles[j], n),
                  Tolerance::Fp32());
    }
  }
}

// Matrices packed together share one allocation, yet each is freed on its own: the others
// keep multiplying as before once one (here the first, which starts the allocation) is gone.
// Views of different dtypes or widths are packed apart and still come back in order.
TEST_F(CudaBackendTest, PackMatricesOutliveEachOther) {
  const int64_t k = 64, m = 3;
  std::vector<HostMatrix> hosts;
  for (const int64_t n : {48, 32, 32}) {
    hosts.push_back(MakeMatrix(WeightType::kF16, n, k, Normal(n * k)));
  }
  hosts.push_back(MakeMatrix(WeightType::kF32, 16, k, Normal(16 * k)));        // another dtype
  hosts.push_back(MakeMatrix(WeightType::kF16, 8, k / 2, Normal(8 * k / 2)));  // another width
  std::vector<float*> inputs;
  std::vector<std::vector<float>> expected;
  for (const HostMatrix& h : hosts) {
    inputs.push_back(Put(*cuda_, Normal(m * h.cols)));
    auto alone = cuda_->PackMatrix(h.view());
    ASSERT_TRUE(alone.ok()) << alone.status();
    float* y = Poisoned(*cuda_, m * h.rows);
    cuda_->MatMul(inputs.back(), m, **alone, y);
    expected.push_back(Get(*cuda_, y, m * h.rows));
  }
  for (const size_t last : {size_t{2}, size_t{3}, size_t{4}}) {
    std::vector<size_t> order = {0, 1, 2};
    if (last > 2) order.push_back(last);
    std::vector<MatrixView> views;
    for (const size_t h : order) views.push_back(hosts[h].view());
    auto packed = cuda_->PackMatrices(views);
    ASSERT_TRUE(packed.ok()) << packed.status();
    ASSERT_EQ(packed->size(), views.size());
    (*packed)[0].reset();
    for (size_t j = 1; j < order.size(); ++j) {
      const HostMatrix& h = hosts[order[j]];
      ASSERT_EQ((*packed)[j]->rows(), h.rows) << j;
      ASSERT_EQ((*packed)[j]->cols(), h.cols) << j;
      float* y = Poisoned(*cuda_, m * h.rows);
      cuda_->MatMul(inputs[order[j]], m, *(*packed)[j], y);
      EXPECT_EQ(Get(*cuda_, y, m * h.rows), expected[order[j]])
          << "matrix " << order[j] << " packed with 0..2 and " << last;
    }
  }
}

// ArgMaxRows reduces on the device to what the host rule gives (Backend's default, which the
// CPU backend runs): NaN never chosen, ties to the lowest column, column 0 for a row with
// nothing above -inf; also past the 256 rows reserved for graphs (the output grows), and over
// rows long enough for several blocks a row (ArgMaxRowsSplits), twice each: the split's
// partial maxima and counters must be left zero for the next call.
TEST_F(CudaBackendTest, ArgMaxRowsMatchesTheHostRule) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  for (const auto& [rows, cols_beyond_rows, repeat] :
       {std::tuple{int64_t{1}, int64_t{1000}, 0}, std::tuple{int64_t{7}, int64_t{1000}, 0},
        std::tuple{int64_t{300}, int64_t{1000}, 0}, std::tuple{int64_t{1}, int64_t{50000}, 0},
        std::tuple{int64_t{1}, int64_t{50000}, 1}, std::tuple{int64_t{7}, int64_t{30000}, 0},
        std::tuple{int64_t{7}, int64_t{30000}, 1}}) {
    const int64_t cols = cols_beyond_rows + rows;
    SCOPED_TRACE(::testing::Message() << rows << " rows of " << cols << ", call " << repeat);
    if (cols_beyond_rows > 1000) {
      cudaDeviceProp prop{};
      ASSERT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
      ASSERT_GT(kernels::cuda::ArgMaxRowsSplits(rows, cols, prop.multiProcessorCount), 1)
          << "a split case";
    }
    std::vector<float> x = Normal(rows * cols, 4.0f);
    x[0] = std::numeric_limits<float>::quiet_NaN();
    if (rows > 1) {
      for (int64_t c = 0; c < cols; ++c) x[cols + c] = -kInf;  // row 1: nothing above -inf
      float* last = x.data() + (rows - 1) * cols;              // last row: a three-way tie
      last[cols - 1] = last[cols / 2] = last[cols / 3] = 99.0f;
    }
    std::vector<int32_t> want_index(rows, -1), got_index(rows, -1);
    std::vector<float> want_value(rows), got_value(rows);
    cpu_.ArgMaxRows(Put(cpu_, x), rows, cols, want_index.data(), want_value.data());
    cuda_->ArgMaxRows(Put(*cuda_, x), rows, cols, got_index.data(), got_value.data());
    EXPECT_EQ(got_index, want_index) << rows << " rows";
    EXPECT_EQ(got_value, want_value) << rows << " rows";
    if (rows > 1) {
      EXPECT_EQ(got_index[1], 0);
      EXPECT_EQ(got_value[1], -kInf);
      EXPECT_EQ(got_index[rows - 1], cols / 3);
    }
  }
}

// TopKRows selects on the device what the host rule gives (Backend's default, which the CPU
// backend runs): counts, columns in increasing order and their values, ties at the k-th value
// to the lowest columns; also past 256 rows and for k above 1024.
TEST_F(CudaBackendTest, TopKRowsMatchesTheHostRule) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  for (const auto& [rows, k] : {std::pair<int64_t, int32_t>{1, 1}, {7, 40}, {300, 8}, {3, 1500}}) {
    const int64_t cols = 2000 + rows;
    std::vector<float> x = Normal(rows * cols, 4.0f);
    x[0] = std::numeric_limits<float>::quiet_NaN();
    if (rows > 1) {
      for (int64_t c = 0; c < cols; ++c) x[cols + c] = c % 100 == 0 ? 1.0f : -kInf;  // few
      float* last = x.data() + (rows - 1) * cols;  // last row: ties everywhere
      for (int64_t c = 0; c < cols; ++c) last[c] = std::round(last[c]);
    }
    const size_t pairs = static_cast<size_t>(rows) * k;
    std::vector<int32_t> want_count(rows, -1), got_count(rows, -1);
    std::vector<int32_t> want_index(pairs, -1), got_index(pairs, -1);
    std::vector<float> want_value(pairs, -1.0f), got_value(pairs, -1.0f);
    std::vector<float> want_max(rows, -1.0f), got_max(rows, -1.0f);
    std::vector<double> want_sum(rows, -1.0), got_sum(rows, -1.0);
    std::vector<double> want_sum_t1(rows, -1.0), got_sum_t1(rows, -1.0);
    std::vector<float> temperature(rows);  // the normalizers' (1 for logprobs)
    for (int64_t r = 0; r < rows; ++r) temperature[r] = 0.5f + 0.25f * static_cast<float>(r % 4);
    cpu_.TopKRows(Put(cpu_, x), rows, cols, k, want_count.data(), want_index.data(),
                  want_value.data(), want_max.data(), want_sum.data(), temperature.data(),
                  want_sum_t1.data());
    cuda_->TopKRows(Put(*cuda_, x), rows, cols, k, got_count.data(), got_index.data(),
                    got_value.data(), got_max.data(), got_sum.data(), temperature.data(),
                    got_sum_t1.data());
    ASSERT_EQ(got_count, want_count) << rows << " rows, k " << k;
    // The normalizers: the maximum exactly, the sums (at the row's temperature and at 1) up to
    // their order and expf's last bit.
    EXPECT_EQ(got_max, want_max) << rows << " rows, k " << k;
    for (int64_t r = 0; r < rows; ++r) {
      EXPECT_NEAR(got_sum[r], want_sum[r], 1e-6 * want_sum[r]) << "row " << r;
      EXPECT_NEAR(got_sum_t1[r], want_sum_t1[r], 1e-6 * want_sum_t1[r]) << "row " << r;
      if (temperature[r] != 1.0f && r != 1) {  // row 1's values are all its maximum
        EXPECT_NE(got_sum_t1[r], got_sum[r]) << "row " << r;
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      for (int32_t j = 0; j < want_count[r]; ++j) {
        ASSERT_EQ(got_index[r * k + j], want_index[r * k + j]) << "row " << r << " entry " << j;
        ASSERT_EQ(got_value[r * k + j], want_value[r * k + j]) << "row " << r << " entry " << j;
      }
    }
    if (rows > 1) {
      EXPECT_EQ(got_count[1], std::min<int32_t>(k, (cols + 99) / 100));
    }
  }
}

// DeviceMemory is the device's (serve sizes the KV cache by it): free within total, and an
// allocation of 64 MiB shows in it until freed. The CPU backend allocates host memory: none.
TEST_F(CudaBackendTest, DeviceMemoryShowsAllocations) {
  const std::optional<DeviceMemoryInfo> before = cuda_->DeviceMemory();
  ASSERT_TRUE(before.has_value());
  EXPECT_GT(before->total_bytes, 0u);
  EXPECT_LE(before->free_bytes, before->total_bytes);
  constexpr size_t kBytes = size_t{64} << 20;
  void* p = cuda_->Allocate(kBytes);
  const std::optional<DeviceMemoryInfo> during = cuda_->DeviceMemory();
  ASSERT_TRUE(during.has_value());
  EXPECT_EQ(during->total_bytes, before->total_bytes);
  EXPECT_LE(during->free_bytes + kBytes, before->free_bytes);
  cuda_->Free(p);
  const std::optional<DeviceMemoryInfo> after = cuda_->DeviceMemory();
  ASSERT_TRUE(after.has_value());
  EXPECT_GE(after->free_bytes, during->free_bytes + kBytes);
  EXPECT_FALSE(cpu::CpuBackend(1).DeviceMemory().has_value());
}

TEST_F(CudaBackendTest, PackMatrixRejectsQ8ColumnsNotMultipleOf32) {
  std::vector<uint8_t> bytes(34 * 4, 1);
  const MatrixView view{WeightType::kQ8_0, bytes.data(), 2, 48};
  auto packed = cuda_->PackMatrix(view);
  EXPECT_EQ(packed.status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- Embedding ------------------------------------------------------------------------------

TEST_F(CudaBackendTest, EmbeddingLookupMatchesCpuBitwise) {
  std::deque<HostMatrix> tables;
  for (const WeightType type :
       {WeightType::kF32, WeightType::kF16, WeightType::kBF16, WeightType::kQ8_0}) {
    for (const int64_t cols : {int64_t{32}, int64_t{192}, int64_t{4096}}) {
      const int64_t vocab = 1001;
      // Every table stays alive until the backend goes: it caches device copies by host address
      // and (rightly) fails when the memory behind an address it knows changes, which a freed
      // table's successor at the same address would look like.
      tables.push_back(MakeMatrix(type, vocab, cols, Normal(vocab * cols)));
      const HostMatrix& table = tables.back();
      std::vector<int32_t> ids(37);
      for (int32_t& id : ids) id = Int(0, vocab - 1);
      ids[0] = 0;
      ids[1] = vocab - 1;
      ids[2] = ids[1];
      // Twice: the second lookup uses the cached device table.
      for (int pass = 0; pass < 2; ++pass) {
        float* out = Poisoned(*cuda_, ids.size() * cols);
        cuda_->EmbeddingLookup(table.view(), ids.data(), ids.size(), out);
        std::vector<float> ref(ids.size() * cols);
        cpu_.EmbeddingLookup(table.view(), ids.data(), ids.size(), ref.data());
        ExpectClose("embedding type " + std::to_string(static_cast<int>(type)) + " cols " +
                        std::to_string(cols),
                    Get(*cuda_, out, ref.size()), ref, Tolerance::Exact());
      }
    }
  }
}

// ---- RmsNorm, Rope, element-wise ------------------------------------------------------------

TEST_F(CudaBackendTest, RmsNormMatchesCpu) {
  for (const auto& [rows, dim] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 1}, {7, 100}, {33, 192}, {3, 4099}, {2, 8192}}) {
    const std::vector<float> x = Normal(rows * dim, 3.0f);
    const std::vector<float> w = Normal(dim);
    std::vector<float> ref(rows * dim);
    cpu_.RmsNorm(x.data(), w.data(), rows, dim, 1e-5f, ref.data());
    const std::string what = "rmsnorm " + std::to_string(rows) + "x" + std::to_string(dim);
    float* dx = Put(*cuda_, x);
    float* dw = Put(*cuda_, w);
    float* out = Poisoned(*cuda_, rows * dim);
    cuda_->RmsNorm(dx, dw, rows, dim, 1e-5f, out);
    ExpectClose(what, Get(*cuda_, out, ref.size()), ref, Tolerance::Fp32());
    EXPECT_EQ(Get(*cuda_, dx, x.size()), x) << what << ": input changed";
    cuda_->RmsNorm(dx, dw, rows, dim, 1e-5f, dx);  // in place
    ExpectClose(what + " in place", Get(*cuda_, dx, ref.size()), ref, Tolerance::Fp32());
  }
}

// The residual add fused with the norm: x as AddInPlace leaves it (bitwise), out as RmsNorm
// of it computes it (against the CPU's two ops, and bitwise against CUDA's own two ops, so that
// the model's fused and unfused paths agree).
TEST_F(CudaBackendTest, AddRmsNormIsTheAddThenTheNorm) {
  for (const auto& [rows, dim] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 1}, {7, 100}, {33, 192}, {3, 4099}, {2, 8192}}) {
    const std::vector<float> x = Normal(rows * dim, 3.0f);
    const std::vector<float> y = Normal(rows * dim);
    const std::vector<float> w = Normal(dim);
    const std::string what = "add_rmsnorm " + std::to_string(rows) + "x" + std::to_string(dim);
    std::vector<float> x_ref = x;
    std::vector<float> ref(rows * dim);
    cpu_.AddRmsNorm(x_ref.data(), y.data(), w.data(), rows, dim, 1e-5f, ref.data());
    float* dx = Put(*cuda_, x);
    float* dy = Put(*cuda_, y);
    float* dw = Put(*cuda_, w);
    float* out = Poisoned(*cuda_, rows * dim);
    cuda_->AddRmsNorm(dx, dy, dw, rows, dim, 1e-5f, out);
    const std::vector<float> fused_x = Get(*cuda_, dx, x.size());
    const std::vector<float> fused_out = Get(*cuda_, out, ref.size());
    EXPECT_EQ(fused_x, x_ref) << what << ": the residual add";
    ExpectClose(what, fused_out, ref, Tolerance::Fp32());
    float* dx2 = Put(*cuda_, x);
    float* out2 = Poisoned(*cuda_, rows * dim);
    cuda_->AddInPlace(dx2, dy, rows * dim);
    cuda_->RmsNorm(dx2, dw, rows, dim, 1e-5f, out2);
    EXPECT_EQ(Get(*cuda_, out2, ref.size()), fused_out) << what << ": fused != AddInPlace + RmsNorm";
  }
}

TEST_F(CudaBackendTest, RopeMatchesCpu) {
  struct Case {
    RopeStyle style;
    int32_t tokens, heads, head_dim, rot_dim;
    float base;
  };
  for (const Case c : {Case{RopeStyle::kNormal, 37, 6, 32, 32, 10000.0f},
                       Case{RopeStyle::kNormal, 1, 2, 32, 32, 10000.0f},
                       Case{RopeStyle::kNeox, 5, 3, 64, 40, 10000.0f},
                       Case{RopeStyle::kNeox, 300, 8, 128, 128, 500000.0f},
                       Case{RopeStyle::kNormal, 9, 7, 80, 64, 1000000.0f}}) {
    const std::string what = "rope " + std::to_string(c.tokens) + " tokens, heads " +
                             std::to_string(c.heads) + ", d " + std::to_string(c.head_dim) +
                             ", rot " + std::to_string(c.rot_dim);
    std::vector<int32_t> positions(c.tokens);
    for (int32_t& p : positions) p = Int(0, 4095);
    const std::vector<float> x = Normal(static_cast<size_t>(c.tokens) * c.heads * c.head_dim);
    RopeParams p;
    p.num_tokens = c.tokens;
    p.num_heads = c.heads;
    p.head_dim = c.head_dim;
    p.rot_dim = c.rot_dim;
    p.positions = positions.data();
    p.freq_base = c.base;
    p.style = c.style;
    std::vector<float> ref = x;
    p.x = ref.data();
    cpu_.Rope(p);
    p.x = Put(*cuda_, x);
    cuda_->Rope(p);
    ExpectClose(what, Get(*cuda_, p.x, x.size()), ref, Tolerance::Fp32());
  }
}

TEST_F(CudaBackendTest, SiluMulMatchesCpuInAndOutOfPlace) {
  for (const int64_t n : {int64_t{1}, int64_t{9}, int64_t{3073}, int64_t{100003}}) {
    const std::vector<float> gate = Normal(n, 3.0f);
    const std::vector<float> up = Normal(n);
    std::vector<float> ref(n);
    cpu_.SiluMul(gate.data(), up.data(), n, ref.data());
    float* dg = Put(*cuda_, gate);
    float* du = Put(*cuda_, up);
    float* out = Poisoned(*cuda_, n);
    cuda_->SiluMul(dg, du, n, out);
    ExpectClose("silu_mul n=" + std::to_string(n), Get(*cuda_, out, n), ref, Tolerance::Fp32());
    cuda_->SiluMul(dg, du, n, dg);  // in place, as the forward pass runs it
    ExpectClose("silu_mul in place n=" + std::to_string(n), Get(*cuda_, dg, n), ref,
                Tolerance::Fp32());
  }
}

TEST_F(CudaBackendTest, AddInPlaceMatchesCpuBitwise) {
  for (const int64_t n : {int64_t{1}, int64_t{7}, int64_t{192 * 33}, int64_t{1000003}}) {
    const std::vector<float> x = Normal(n);
    const std::vector<float> y = Normal(n);
    std::vector<float> ref = x;
    cpu_.AddInPlace(ref.data(), y.data(), n);
    float* dx = Put(*cuda_, x);
    cuda_->AddInPlace(dx, Put(*cuda_, y), n);
    ExpectClose("add n=" + std::to_string(n), Get(*cuda_, dx, n), ref, Tolerance::Exact());
  }
}

TEST_F(CudaBackendTest, GatherRowsMatchesCpuBitwise) {
  for (const auto& [src_rows, dim, num_rows] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {1, 1, 1}, {37, 192, 5}, {9, 4099, 30}}) {
    const std::vector<float> x = Normal(src_rows * dim);
    std::vector<int32_t> rows(num_rows);
    for (int32_t& r : rows) r = Int(0, static_cast<int32_t>(src_rows - 1));
    rows[0] = static_cast<int32_t>(src_rows - 1);
    std::vector<float> ref(num_rows * dim);
    cpu_.GatherRows(x.data(), dim, rows.data(), num_rows, ref.data());
    float* out = Poisoned(*cuda_, num_rows * dim);
    cuda_->GatherRows(Put(*cuda_, x), dim, rows.data(), num_rows, out);
    ExpectClose("gather", Get(*cuda_, out, ref.size()), ref, Tolerance::Exact());
  }
}

// ---- KV cache and attention -----------------------------------------------------------------

TEST_F(CudaBackendTest, StoreKvWritesTheCudaLayoutAndNothingElse) {
  for (Backend* backend : {cuda_.get(), cuda_bf16_kv_.get()}) {
    for (const KvShape s : {KvShape{6, 2, 32, 16}, KvShape{8, 8, 64, 17}, KvShape{4, 1, 128, 1}}) {
      StoreKvCase(*backend, s);
    }
  }
}

// One sequence of a mixed batch: `num_query` new tokens ending at position
// `last_pos`, and `extra_keys` keys cached past it (in the page table; causal
// attention must ignore them).
struct SeqCase {
  int32_t last_pos;
  int32_t num_query;
  int32_t extra_keys = 0;
};

// What the CPU reference sees of the random inputs: as given, or rounded to
// bf16 as a bf16 KV cache stores keys and values (kv) and the tensor-core
// kernel takes queries (q).
struct RefRounding {
  bool kv = false;
  bool q = false;
};

std::vector<float> RoundedToBf16(std::vector<float> x) {
  for (float& e : x) e = Bf16ToFloat(FloatToBf16(e));
  return x;
}

// Fills the KV of every position of every sequence through StoreKv (on both
// backends, in each one's own layout), then runs PagedAttention for the query
// tokens and compares.
void RunAttention(Backend& cuda, Backend& cpu, const KvShape& s, const std::vector<SeqCase>& seqs,
                  std::vector<float>* out, std::vector<float>* ref, std::mt19937_64& rng,
                  const std::function<std::vector<float>(size_t)>& normal,
                  RefRounding ref_rounding = {}) {
  const int32_t B = s.block_size;
  const int32_t kv_dim = s.num_kv_heads * s.head_dim;
  // Page tables over a shuffled pool with spare blocks.
  int32_t pages_needed = 0;
  for (const SeqCase& q : seqs) pages_needed += (q.last_pos + q.extra_keys) / B + 1;
  const int32_t num_blocks = pages_needed + 5;
  std::vector<int32_t> pool(num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  std::vector<int32_t> kv_indptr = {0}, kv_indices, last_len, query_start = {0}, positions;
  std::vector<int32_t> all_slots;  // every cached position of every sequence
  size_t next = 0;
  for (const SeqCase& q : seqs) {
    const int32_t last_key = q.last_pos + q.extra_keys;
    const int32_t pages = last_key / B + 1;
    kv_indices.insert(kv_indices.end(), pool.begin() + next, pool.begin() + next + pages);
    next += pages;
    kv_indptr.push_back(static_cast<int32_t>(kv_indices.size()));
    last_len.push_back(last_key % B + 1);
    for (int32_t p = q.last_pos - q.num_query + 1; p <= q.last_pos; ++p) positions.push_back(p);
    query_start.push_back(static_cast<int32_t>(positions.size()));
    for (int32_t p = 0; p <= last_key; ++p) {
      all_slots.push_back(kv_indices[kv_indptr[kv_indptr.size() - 2] + p / B] * B + p % B);
    }
  }
  const int32_t num_tokens = static_cast<int32_t>(positions.size());
  const size_t cache_floats = static_cast<size_t>(num_blocks) * B * kv_dim;
  const std::vector<float> k = normal(all_slots.size() * kv_dim);
  const std::vector<float> v = normal(all_slots.size() * kv_dim);
  const std::vector<float> q = normal(static_cast<size_t>(num_tokens) * s.num_heads * s.head_dim);
  const std::vector<float> nan_cache(cache_floats, std::numeric_limits<float>::quiet_NaN());

  auto run = [&](Backend& be, std::vector<float>* result, const std::vector<float>& k,
                 const std::vector<float>& v, const std::vector<float>& q) {
    auto put = [&](const std::vector<float>& h) {
      auto* p = static_cast<float*>(be.Allocate(h.size() * 4));
      be.CopyToBackend(p, h.data(), h.size() * 4);
      return p;
    };
    KvStoreParams store;
    store.k = put(k);
    store.v = put(v);
    store.kv = {put(nan_cache), put(nan_cache), B, s.num_kv_heads, s.head_dim};
    store.num_tokens = static_cast<int32_t>(all_slots.size());
    store.slots = all_slots.data();
    be.StoreKv(store);
    PagedAttentionParams ap;
    ap.q = put(q);
    ap.out = put(std::vector<float>(q.size(), std::numeric_limits<float>::quiet_NaN()));
    ap.kv = store.kv;
    ap.num_seqs = static_cast<int32_t>(seqs.size());
    ap.num_heads = s.num_heads;
    ap.query_start = query_start.data();
    ap.positions = positions.data();
    ap.kv_indptr = kv_indptr.data();
    ap.kv_indices = kv_indices.data();
    ap.kv_last_page_len = last_len.data();
    ap.scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
    be.PagedAttention(ap);
    be.PagedAttention(ap);  // again: the second call reuses the step's device page tables
    result->resize(q.size());
    be.CopyToHost(result->data(), ap.out, q.size() * 4);
    for (const void* p : std::initializer_list<const void*>{store.k, store.v, store.kv.k,
                                                            store.kv.v, ap.q, ap.out}) {
      be.Free(const_cast<void*>(p));
    }
  };
  run(cuda, out, k, v, q);
  run(cpu, ref, ref_rounding.kv ? RoundedToBf16(k) : k, ref_rounding.kv ? RoundedToBf16(v) : v,
      ref_rounding.q ? RoundedToBf16(q) : q);
}

// Everything spdlog writes while it lives (the default logger swapped for one that writes to
// a string), for tests of what the backend tells the operator.
class CapturedLog {
 public:
  CapturedLog()
      : previous_(spdlog::default_logger()),
        logger_(std::make_shared<spdlog::logger>(
            "captured", std::make_shared<spdlog::sinks::ostream_sink_st>(text_))) {
    spdlog::set_default_logger(logger_);
  }
  ~CapturedLog() { spdlog::set_default_logger(previous_); }
  std::string text() const { return text_.str(); }
  // How many times `piece` occurs.
  int Count(const std::string& piece) const {
    const std::string all = text();
    int n = 0;
    for (size_t at = all.find(piece); at != std::string::npos; at = all.find(piece, at + 1)) ++n;
    return n;
  }

 private:
  std::ostringstream text_;
  std::shared_ptr<spdlog::logger> previous_;
  std::shared_ptr<spdlog::logger> logger_;
};

int64_t TensorCoreCalls(const Backend& backend) {
  return testing::CounterValue(backend, "cuda_attention_tensor_core_calls_total");
}

int64_t Fp32TiledCalls(const Backend& backend) {
  return testing::CounterValue(backend, "cuda_attention_fp32_tiled_calls_total");
}

// The fp32 cache (the default): steps with a multi-token sequence run the tiled fp32 kernel
// (its counter moves by RunAttention's two calls), decode-only steps and steps whose keys run
// past their queries the paged decode kernel per token (it does not); fp32 bounds throughout.
TEST_F(CudaBackendTest, PagedAttentionMatchesCpuOnMixedBatches) {
  // Prefill from 0, a decode token, a chunk in the middle, a first token, a long decode
  // (split-KV in the decode kernel's plan), a long chunk over a long prefix.
  const std::vector<SeqCase> mixed = {{36, 37}, {100, 1}, {24, 5}, {0, 1}, {3000, 1}, {700, 130}};
  auto normal = [this](size_t n) { return Normal(n); };
  for (const KvShape s : {KvShape{6, 2, 32, 16},  // the bundled model (GQA 3)
                          KvShape{6, 2, 32, 17}, KvShape{8, 8, 64, 1},
                          KvShape{32, 8, 128, 16}, KvShape{8, 1, 128, 16},
                          KvShape{4, 4, 64, 16}}) {
    std::vector<float> out, ref;
    int64_t before = Fp32TiledCalls(*cuda_);
    RunAttention(*cuda_, cpu_, s, mixed, &out, &ref, rng_, normal);
    ExpectClose("attention " + Describe(s), out, ref, Tolerance::Fp32());
    EXPECT_EQ(Fp32TiledCalls(*cuda_) - before, 2) << "both calls on the tiled fp32 kernel";
    EXPECT_EQ(TensorCoreCalls(*cuda_), 0) << "an fp32 cache never takes the bf16 kernel";
    const std::vector<SeqCase> ragged = {{40, 9}, {4, 2, 7}};
    before = Fp32TiledCalls(*cuda_);
    RunAttention(*cuda_, cpu_, s, ragged, &out, &ref, rng_, normal);
    ExpectClose("attention, keys past the queries " + Describe(s), out, ref, Tolerance::Fp32());
    EXPECT_EQ(Fp32TiledCalls(*cuda_), before) << "per token: the layout the kernel needs is not";
    // Decode only, a batch wider than the SM count.
    std::vector<SeqCase> decode;
    for (int i = 0; i < 150; ++i) decode.push_back({Int(0, 700), 1});
    before = Fp32TiledCalls(*cuda_);
    RunAttention(*cuda_, cpu_, s, decode, &out, &ref, rng_, normal);
    ExpectClose("decode attention " + Describe(s), out, ref, Tolerance::Fp32());
    EXPECT_EQ(Fp32TiledCalls(*cuda_), before) << "decode steps run the decode kernel";
  }
}

// The bf16 KV option. Decode-only steps run the paged decode kernel on fp32
// queries over the bf16 cache: fp32 bounds against the CPU reading the same
// bf16-rounded keys and values. Steps with a multi-token sequence run the
// tensor-core kernel on bf16 queries (and bf16 probabilities in P·V): bf16
// bounds against the CPU reading rounded keys, values and queries, and a step
// that breaks the kernel's layout contract must still match (per-token
// fallback).
TEST_F(CudaBackendTest, PagedAttentionOverBf16CacheMatchesCpu) {
  const std::vector<SeqCase> mixed = {{36, 37}, {100, 1}, {24, 5}, {0, 1}, {3000, 1}, {700, 130}};
  auto normal = [this](size_t n) { return Normal(n); };
  for (const KvShape s : {KvShape{6, 2, 32, 16}, KvShape{6, 2, 32, 17}, KvShape{8, 8, 64, 1},
                          KvShape{32, 8, 128, 16}, KvShape{8, 1, 128, 16}}) {
    std::vector<float> out, ref;
    const int64_t before = TensorCoreCalls(*cuda_bf16_kv_);
    RunAttention(*cuda_bf16_kv_, cpu_, s, mixed, &out, &ref, rng_, normal, {true, true});
    ExpectClose("bf16-KV attention " + Describe(s), out, ref, Tolerance::Bf16());
    EXPECT_EQ(TensorCoreCalls(*cuda_bf16_kv_) - before, 2) << "both calls on tensor cores";
    // Keys cached past a sequence's last query (its page table holds 12 keys,
    // its queries end at position 4): not the tensor-core kernel's layout, so
    // the per-token path runs (fp32 queries: fp32 bounds).
    const std::vector<SeqCase> ragged = {{40, 9}, {4, 2, 7}};
    const int64_t before_ragged = TensorCoreCalls(*cuda_bf16_kv_);
    RunAttention(*cuda_bf16_kv_, cpu_, s, ragged, &out, &ref, rng_, normal, {true, false});
    ExpectClose("bf16-KV attention, keys past the queries " + Describe(s), out, ref,
                Tolerance::Fp32());
    EXPECT_EQ(TensorCoreCalls(*cuda_bf16_kv_), before_ragged);
    std::vector<SeqCase> decode;
    for (int i = 0; i < 150; ++i) decode.push_back({Int(0, 700), 1});
    RunAttention(*cuda_bf16_kv_, cpu_, s, decode, &out, &ref, rng_, normal, {true, false});
    ExpectClose("bf16-KV decode attention " + Describe(s), out, ref, Tolerance::Fp32());
  }
}

// The same steps on the experimental attention kernels (the emulated device is compute
// capability 9.0): the 128-row mma.sync kernel for every head dim; the wgmma kernels for head
// dims 64 and 128, while 32 keeps mma.sync; the pipelined one at block sizes its TMA boxes
// tile (16, not 1). Each kernel's counter proves which one ran.
TEST_F(CudaBackendTest, PagedAttentionOverBf16CacheWithExperimentalKernelsMatchesCpu) {
  struct Variant {
    cuda::PrefillKernel kernel;
    const char* counter;
    bool needs_head_dim_64_or_128;
    bool needs_block_size_16;
  };
  for (const Variant v :
       {Variant{cuda::PrefillKernel::kMmaSyncWide, "cuda_attention_wide_calls_total", false, false},
        Variant{cuda::PrefillKernel::kWgmma, "cuda_attention_wgmma_calls_total", true, false},
        Variant{cuda::PrefillKernel::kWgmmaPipelined, "cuda_attention_wgmma_pipelined_calls_total",
                true, true},
        Variant{cuda::PrefillKernel::kWgmmaPipelined128,
                "cuda_attention_wgmma_pipelined_128_calls_total", true, true}}) {
    cuda::CudaBackendOptions options;
    options.kv_cache_dtype = cuda::CudaKvCacheDType::kBFloat16;
    options.prefill_attention = v.kernel;
    auto backend = cuda::CreateCudaBackend(options);
    ASSERT_TRUE(backend.ok()) << backend.status();
    const std::vector<SeqCase> mixed = {{36, 37}, {100, 1}, {24, 5}, {700, 130}};
    auto normal = [this](size_t n) { return Normal(n); };
    for (const KvShape s : {KvShape{8, 8, 64, 1}, KvShape{32, 8, 128, 16}, KvShape{6, 2, 32, 16}}) {
      // A backend's shape is its model's, fixed: a fresh one per shape, so that each
      // fallback is its first (the pipelined kernels at block size 1, wgmma at head_dim 32).
      if (s.block_size != 16 || s.head_dim == 32) {
        backend = cuda::CreateCudaBackend(options);
        ASSERT_TRUE(backend.ok()) << backend.status();
      }
      CapturedLog log;
      std::vector<float> out, ref;
      const int64_t before = TensorCoreCalls(**backend);
      const int64_t variant_before = testing::CounterValue(**backend, v.counter);
      RunAttention(**backend, cpu_, s, mixed, &out, &ref, rng_, normal, {true, true});
      ExpectClose(std::string("bf16-KV attention on ") + v.counter + " " + Describe(s), out, ref,
                  Tolerance::Bf16());
      EXPECT_EQ(TensorCoreCalls(**backend) - before, 2);
      const bool runs = !(v.needs_head_dim_64_or_128 && s.head_dim == 32) &&
                        !(v.needs_block_size_16 && s.block_size != 16);
      EXPECT_EQ(testing::CounterValue(**backend, v.counter) - variant_before, runs ? 2 : 0)
          << v.counter << " " << Describe(s);
      // A kernel that cannot run here is said once (two calls ran), with the reason.
      const std::string flag =
          std::string("--cuda_prefill_attention=") + cuda::PrefillKernelName(v.kernel);
      EXPECT_EQ(log.Count(flag + " cannot run here"), runs ? 0 : 1) << Describe(s) << log.text();
      if (!runs) {
        EXPECT_NE(log.text().find(s.head_dim == 32 ? "head_dim 64 and 128" : "pages of 1 tokens"),
                  std::string::npos)
            << log.text();
      }
    }
  }
}

// Kernel flags that do not apply to an fp32 cache are said so when the backend is made, not
// silently ignored.
TEST_F(CudaBackendTest, SaysWhichKernelFlagsAnFp32CacheIgnores) {
  cuda::CudaBackendOptions options;  // an fp32 cache
  options.prefill_attention = cuda::PrefillKernel::kWgmmaPipelined128;
  options.decode_attention = cuda::DecodeKernel::kMmaSync;
  CapturedLog log;
  ASSERT_TRUE(cuda::CreateCudaBackend(options).ok());
  EXPECT_EQ(log.Count("--cuda_prefill_attention=wgmma_pipelined_128 applies to a bf16 KV cache"), 1)
      << log.text();
  EXPECT_EQ(log.Count("--cuda_decode_attention=mma_sync needs a bf16 KV cache"), 1) << log.text();
  CapturedLog defaults;
  ASSERT_TRUE(cuda::CreateCudaBackend({}).ok());
  EXPECT_EQ(defaults.Count("KV cache"), 0)
      << "the default kernels need no word: " << defaults.text();
}

// The tensor-core decode kernel (--cuda_decode_attention=mma_sync) over the bf16 cache: decode
// steps, and the per-token path of a step whose keys run past its queries, run it on queries
// rounded to bf16 (bf16 bounds against the CPU reading rounded keys, values and queries);
// its counter shows every such call (RunAttention makes two) and none of a step the prefill
// kernel takes. An fp32 cache ignores the option.
TEST_F(CudaBackendTest, PagedAttentionOnTheTensorCoreDecodeKernelMatchesCpu) {
  const char* kCounter = "cuda_attention_mma_decode_calls_total";
  cuda::CudaBackendOptions options;
  options.kv_cache_dtype = cuda::CudaKvCacheDType::kBFloat16;
  options.decode_attention = cuda::DecodeKernel::kMmaSync;
  auto backend = cuda::CreateCudaBackend(options);
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto normal = [this](size_t n) { return Normal(n); };
  for (const KvShape s : {KvShape{6, 2, 32, 16}, KvShape{6, 2, 32, 17}, KvShape{8, 8, 64, 1},
                          KvShape{32, 8, 128, 16}, KvShape{8, 1, 128, 16}}) {
    std::vector<float> out, ref;
    std::vector<SeqCase> decode;
    for (int i = 0; i < 150; ++i) decode.push_back({Int(0, 700), 1});
    int64_t before = testing::CounterValue(**backend, kCounter);
    RunAttention(**backend, cpu_, s, decode, &out, &ref, rng_, normal, {true, true});
    ExpectClose("mma decode attention " + Describe(s), out, ref, Tolerance::Bf16());
    EXPECT_EQ(testing::CounterValue(**backend, kCounter) - before, 2) << Describe(s);

    const std::vector<SeqCase> ragged = {{40, 9}, {4, 2, 7}};
    before = testing::CounterValue(**backend, kCounter);
    RunAttention(**backend, cpu_, s, ragged, &out, &ref, rng_, normal, {true, true});
    ExpectClose("mma decode kernel, keys past the queries " + Describe(s), out, ref,
                Tolerance::Bf16());
    EXPECT_EQ(testing::CounterValue(**backend, kCounter) - before, 2) << Describe(s);

    const std::vector<SeqCase> mixed = {{36, 37}, {100, 1}, {700, 130}};
    before = testing::CounterValue(**backend, kCounter);
    RunAttention(**backend, cpu_, s, mixed, &out, &ref, rng_, normal, {true, true});
    ExpectClose("prefill beside the mma decode kernel " + Describe(s), out, ref, Tolerance::Bf16());
    EXPECT_EQ(testing::CounterValue(**backend, kCounter), before) << "a prefill kernel step";
  }
  options.kv_cache_dtype = cuda::CudaKvCacheDType::kFloat32;
  auto fp32 = cuda::CreateCudaBackend(options);
  ASSERT_TRUE(fp32.ok()) << fp32.status();
  std::vector<float> out, ref;
  const KvShape s{8, 2, 64, 16};
  RunAttention(**fp32, cpu_, s, {{300, 1}, {20, 1}}, &out, &ref, rng_, normal);
  ExpectClose("fp32-KV decode with the option set " + Describe(s), out, ref, Tolerance::Fp32());
  EXPECT_EQ(testing::CounterValue(**fp32, kCounter), 0);
}

// ---- KvCacheStorage on the device
// -----------------------------------------------------------

// Block copies (device to device) and swaps move exactly one block of every
// layer's k and v, for either KV element size.
TEST_F(CudaBackendTest, KvCacheStorageCopiesAndSwapsBlocksOnTheDevice) {
  model::LlamaConfig config;
  config.num_layers = 3;
  config.num_kv_heads = 2;
  config.head_dim = 32;
  const int32_t num_blocks = 7;
  const int32_t block_size = 17;
  for (Backend* backend : {cuda_.get(), cuda_bf16_kv_.get()}) {
    const std::string what = std::to_string(backend->KvElementBytes()) + "-byte KV";
    model::KvCacheStorage kv(*backend, config, num_blocks, block_size);
    const size_t block_bytes =
        static_cast<size_t>(block_size) * config.kv_dim() * backend->KvElementBytes();
    const size_t tensor_bytes = num_blocks * block_bytes;
    EXPECT_EQ(kv.num_bytes(), 2 * config.num_layers * tensor_bytes) << what;
    EXPECT_EQ(
        model::KvCacheStorage::BytesPerBlock(config, block_size, {}, backend->KvElementBytes()),
        2 * config.num_layers * block_bytes)
        << what;
    auto get = [&](const void* tensor) {
      std::vector<uint8_t> bytes(tensor_bytes);
      backend->CopyToHost(bytes.data(), tensor, tensor_bytes);
      return bytes;
    };
    auto block = [&](const std::vector<uint8_t>& t, int32_t b) {
      return std::vector<uint8_t>(t.begin() + b * block_bytes, t.begin() + (b + 1) * block_bytes);
    };
    std::vector<std::vector<uint8_t>> host;  // [layer * 2 + (k|v)]
    for (int32_t l = 0; l < config.num_layers; ++l) {
      for (void* tensor : {kv.layer(l).k, kv.layer(l).v}) {
        host.emplace_back(tensor_bytes);
        for (uint8_t& b : host.back()) b = static_cast<uint8_t>(Int(0, 255));
        backend->CopyToBackend(tensor, host.back().data(), tensor_bytes);
      }
    }
    kv.CopyBlock(3, 5);
    for (int32_t l = 0; l < config.num_layers; ++l) {
      const void* tensors[2] = {kv.layer(l).k, kv.layer(l).v};
      for (int i = 0; i < 2; ++i) {
        std::vector<uint8_t>& expect = host[l * 2 + i];
        std::copy_n(expect.begin() + 3 * block_bytes, block_bytes,
                    expect.begin() + 5 * block_bytes);
        EXPECT_EQ(get(tensors[i]), expect) << what << ": CopyBlock, layer " << l;
      }
    }
    // Two swap-outs under way at once (one batch of asynchronous copies), the device blocks
    // overwritten right after: the host space must still get what they held.
    kv.SetNumHostBlocks(3);
    const model::KvBlockMove swap_outs[] = {{model::KvBlockMove::Kind::kSwapOut, 1, 1},
                                            {model::KvBlockMove::Kind::kSwapOut, 2, 0}};
    kv.ApplyMoves(swap_outs);
    const std::vector<uint8_t> junk(block_bytes, 7);
    for (int32_t l = 0; l < config.num_layers; ++l) {
      for (void* tensor : {kv.layer(l).k, kv.layer(l).v}) {
        for (int32_t b : {1, 2}) {
          backend->CopyToBackend(static_cast<uint8_t*>(tensor) + b * block_bytes, junk.data(),
                                 block_bytes);
        }
      }
    }
    const model::KvBlockMove swap_ins[] = {
        {model::KvBlockMove::Kind::kSwapIn, 1, 6},  // to a different block
        {model::KvBlockMove::Kind::kSwapIn, 0, 4}};
    kv.ApplyMoves(swap_ins);
    kv.WaitForSwaps();  // the swap-ins' copies (from page-locked memory: asynchronous)
    for (int32_t l = 0; l < config.num_layers; ++l) {
      EXPECT_EQ(block(get(kv.layer(l).k), 6), block(host[l * 2], 1)) << what;
      EXPECT_EQ(block(get(kv.layer(l).v), 6), block(host[l * 2 + 1], 1)) << what;
      EXPECT_EQ(block(get(kv.layer(l).k), 4), block(host[l * 2], 2)) << what;
      EXPECT_EQ(block(get(kv.layer(l).v), 4), block(host[l * 2 + 1], 2)) << what;
    }
  }
}

}  // namespace
}  // namespace glimpse::kernels
