// A std-only test harness for the CUDA kernels (no GoogleTest, so the same sources build as
// Bazel cc_tests and with plain nvcc on a bare GPU machine).
//
//   GLIMPSE_CUDA_TEST(RmsNormMatchesReference) {
//     DeviceArray<float> out;
//     GLIMPSE_ASSERT_CUDA(out.Allocate(n));      // records the error and returns on failure
//     ...
//     GLIMPSE_EXPECT_CLOSE("out", got, ref, Tolerance::Fp32());
//   }
//
// test_main.cc runs every registered test; with no usable CUDA device it prints
// "SKIPPED: no CUDA device" and exits 0. Tolerance checks require every element within
// atol + rtol * |ref|, relative L2 error ||out - ref|| / ||ref|| under a bound, and no NaN.
#ifndef GLIMPSE_KERNELS_CUDA_TESTING_TEST_HARNESS_H_
#define GLIMPSE_KERNELS_CUDA_TESTING_TEST_HARNESS_H_

#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/device_buffer.h"

namespace glimpse::kernels::cuda::testing {

// ---- Registry ---------------------------------------------------------------------------
using TestFn = void (*)();
struct TestCase {
  const char* name;
  TestFn fn;
};
std::vector<TestCase>& Registry();
struct Registrar {
  Registrar(const char* name, TestFn fn) { Registry().push_back({name, fn}); }
};

#define GLIMPSE_CUDA_TEST(name)                                                     \
  static void name();                                                               \
  static const ::glimpse::kernels::cuda::testing::Registrar name##_registrar(#name, \
                                                                             &name); \
  static void name()

// ---- Failure recording (per test, reset by the runner) ----------------------------------
void RecordFailure(const char* file, int line, const std::string& message);
int NumFailures();  // of the running test
// Adds a line to the test's log (printed, and kept in the JSON report).
void Note(const std::string& message);

#define GLIMPSE_EXPECT(cond, message)                                                     \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      ::glimpse::kernels::cuda::testing::RecordFailure(__FILE__, __LINE__,                \
                                                       std::string(#cond) + ": " +        \
                                                           (message));                    \
    }                                                                                     \
  } while (0)

// Checks a cudaError_t expression; on error records it and returns from the test.
#define GLIMPSE_ASSERT_CUDA(expr)                                                         \
  do {                                                                                    \
    const cudaError_t glimpse_test_err_ = (expr);                                         \
    if (glimpse_test_err_ != cudaSuccess) {                                               \
      ::glimpse::kernels::cuda::testing::RecordFailure(                                   \
          __FILE__, __LINE__,                                                             \
          std::string(#expr) + " -> " + cudaGetErrorName(glimpse_test_err_) + ": " +     \
              cudaGetErrorString(glimpse_test_err_));                                     \
      return;                                                                             \
    }                                                                                     \
  } while (0)

// Returns from the test when an earlier check of it failed.
#define GLIMPSE_RETURN_IF_FAILED()                                   \
  do {                                                               \
    if (::glimpse::kernels::cuda::testing::NumFailures() > 0) return; \
  } while (0)

// ---- Tolerances and comparison ------------------------------------------------------------
struct Tolerance {
  double atol = 0.0;
  double rtol = 0.0;
  double max_rel_l2 = 0.0;
  // fp32 arithmetic on fp32 data.
  static Tolerance Fp32() { return {1e-5, 1e-4, 1e-5}; }
  // bf16 operands or outputs (one bf16 rounding is 2^-9 relative), fp32 accumulation.
  static Tolerance Bf16() { return {2e-2, 2e-2, 1e-2}; }
};

struct CompareResult {
  bool pass = false;
  size_t count = 0;
  size_t num_bad = 0;  // elements outside atol + rtol * |ref|
  size_t num_nan = 0;
  size_t first_bad = 0;
  double max_abs_err = 0.0;
  double max_rel_err = 0.0;  // |out - ref| / max(|ref|, atol)
  double rel_l2 = 0.0;
  std::string Summary() const;
};

CompareResult Compare(const std::vector<float>& out, const std::vector<double>& ref,
                      const Tolerance& tol);

// Records a failure with the comparison summary unless it passes; notes the error figures
// either way.
void ExpectClose(const char* file, int line, const std::string& what,
                 const std::vector<float>& out, const std::vector<double>& ref,
                 const Tolerance& tol);
// Variadic so that a braced Tolerance{...} argument survives the preprocessor.
#define GLIMPSE_EXPECT_CLOSE(what, out, ref, ...) \
  ::glimpse::kernels::cuda::testing::ExpectClose(__FILE__, __LINE__, what, out, ref, __VA_ARGS__)

// ---- Random inputs ------------------------------------------------------------------------
// One generator per process, seeded from --seed or the clock (printed), so every run draws
// fresh inputs and a failure can be replayed.
std::mt19937_64& Rng();
uint64_t Seed();
std::vector<float> RandomUniform(size_t n, float lo, float hi);
std::vector<float> RandomNormal(size_t n, float mean, float stddev);
int32_t RandomInt(int32_t lo, int32_t hi);  // inclusive

// ---- bf16 on the host (bit patterns; round to nearest even) --------------------------------
uint16_t FloatToBf16(float x);
float Bf16ToFloat(uint16_t bits);
std::vector<uint16_t> ToBf16(const std::vector<float>& x);
// Rounds every element through bf16 (what the device sees after upload).
std::vector<float> RoundBf16(const std::vector<float>& x);
std::vector<float> Bf16ToFloat(const std::vector<uint16_t>& x);

// ---- Device arrays ------------------------------------------------------------------------
// A DeviceBuffer (device_buffer.h) that is poisoned on allocation and moves to and from
// host vectors.
template <typename T>
class DeviceArray {
 public:
  // Allocates n elements and fills every byte with 0xFF: NaN for fp32 and bf16, -1 for
  // integers, so any element a kernel fails to write is caught.
  cudaError_t Allocate(size_t n) {
    const cudaError_t err = buffer_.Allocate(n);
    if (err != cudaSuccess || n == 0) return err;
    return Poison();
  }
  cudaError_t Poison() { return cudaMemset(buffer_.get(), 0xFF, buffer_.num_bytes()); }
  cudaError_t Upload(const std::vector<T>& host) {
    cudaError_t err = Allocate(host.size());
    if (err != cudaSuccess || host.empty()) return err;
    return cudaMemcpy(get(), host.data(), buffer_.num_bytes(), cudaMemcpyHostToDevice);
  }
  cudaError_t Download(std::vector<T>* host) const {
    host->resize(size());
    if (size() == 0) return cudaSuccess;
    return cudaMemcpy(host->data(), get(), buffer_.num_bytes(), cudaMemcpyDeviceToHost);
  }
  T* get() const { return buffer_.get(); }
  size_t size() const { return buffer_.size(); }

 private:
  DeviceBuffer<T> buffer_;
};

// Synchronizes and returns the first launch or execution error.
inline cudaError_t SyncAndCheck() {
  const cudaError_t launch = cudaGetLastError();
  if (launch != cudaSuccess) return launch;
  return cudaDeviceSynchronize();
}

// Runs all registered tests (used by test_main.cc). Flags: --filter=TEXT[,-TEXT...] (which
// tests; test_filter.h), --seed=N, --json=PATH.
int RunAllTests(int argc, char** argv);

}  // namespace glimpse::kernels::cuda::testing

#endif  // GLIMPSE_KERNELS_CUDA_TESTING_TEST_HARNESS_H_
