#include "kernels/cuda/testing/test_harness.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "kernels/cuda/testing/test_filter.h"

namespace glimpse::kernels::cuda::testing {
namespace {

struct TestState {
  std::vector<std::string> failures;
  std::vector<std::string> notes;
};

TestState& State() {
  static TestState state;
  return state;
}

uint64_t& SeedStorage() {
  static uint64_t seed = 0;
  return seed;
}

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out;
}

}  // namespace

std::vector<TestCase>& Registry() {
  static std::vector<TestCase> registry;
  return registry;
}

void RecordFailure(const char* file, int line, const std::string& message) {
  std::ostringstream os;
  os << file << ":" << line << ": " << message;
  State().failures.push_back(os.str());
  std::printf("    FAILURE %s\n", os.str().c_str());
}

int NumFailures() { return static_cast<int>(State().failures.size()); }

void Note(const std::string& message) {
  State().notes.push_back(message);
  std::printf("    %s\n", message.c_str());
}

std::string CompareResult::Summary() const {
  char buf[320];
  std::snprintf(buf, sizeof(buf),
                "n=%zu bad=%zu nan=%zu max_abs=%.3e max_rel=%.3e rel_l2=%.3e%s", count,
                num_bad, num_nan, max_abs_err, max_rel_err, rel_l2,
                num_bad > 0 ? (" first_bad=" + std::to_string(first_bad)).c_str() : "");
  return buf;
}

CompareResult Compare(const std::vector<float>& out, const std::vector<double>& ref,
                      const Tolerance& tol) {
  CompareResult r;
  r.count = ref.size();
  if (out.size() != ref.size()) {
    r.num_bad = std::max(out.size(), ref.size());
    return r;
  }
  double err_sq = 0.0;
  double ref_sq = 0.0;
  bool have_bad = false;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double o = out[i];
    const double e = ref[i];
    if (std::isnan(o) || std::isnan(e)) {
      ++r.num_nan;
      if (!have_bad) {
        r.first_bad = i;
        have_bad = true;
      }
      continue;
    }
    const double diff = std::fabs(o - e);
    r.max_abs_err = std::max(r.max_abs_err, diff);
    r.max_rel_err = std::max(r.max_rel_err, diff / std::max(std::fabs(e), tol.atol));
    if (!(diff <= tol.atol + tol.rtol * std::fabs(e))) {
      ++r.num_bad;
      if (!have_bad) {
        r.first_bad = i;
        have_bad = true;
      }
    }
    err_sq += diff * diff;
    ref_sq += e * e;
  }
  r.rel_l2 = ref_sq > 0.0 ? std::sqrt(err_sq / ref_sq) : std::sqrt(err_sq);
  r.pass = r.num_bad == 0 && r.num_nan == 0 && r.rel_l2 <= tol.max_rel_l2 && r.count > 0;
  return r;
}

void ExpectClose(const char* file, int line, const std::string& what,
                 const std::vector<float>& out, const std::vector<double>& ref,
                 const Tolerance& tol) {
  const CompareResult r = Compare(out, ref, tol);
  if (!r.pass) {
    std::string detail = what + ": " + r.Summary();
    if (r.first_bad < out.size() && r.first_bad < ref.size()) {
      char buf[96];
      std::snprintf(buf, sizeof(buf), " (out=%.6g ref=%.6g)", out[r.first_bad],
                    ref[r.first_bad]);
      detail += buf;
    }
    RecordFailure(file, line, detail);
  } else {
    Note(what + ": " + r.Summary());
  }
}

std::mt19937_64& Rng() {
  static std::mt19937_64 rng(SeedStorage());
  return rng;
}

uint64_t Seed() { return SeedStorage(); }

std::vector<float> RandomUniform(size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(Rng());
  return v;
}

std::vector<float> RandomNormal(size_t n, float mean, float stddev) {
  std::normal_distribution<float> dist(mean, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = dist(Rng());
  return v;
}

int32_t RandomInt(int32_t lo, int32_t hi) {
  return std::uniform_int_distribution<int32_t>(lo, hi)(Rng());
}

uint16_t FloatToBf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN stays NaN
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float Bf16ToFloat(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float x;
  std::memcpy(&x, &wide, 4);
  return x;
}

std::vector<uint16_t> ToBf16(const std::vector<float>& x) {
  std::vector<uint16_t> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = FloatToBf16(x[i]);
  return out;
}

std::vector<float> RoundBf16(const std::vector<float>& x) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = Bf16ToFloat(FloatToBf16(x[i]));
  return out;
}

std::vector<float> Bf16ToFloat(const std::vector<uint16_t>& x) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = Bf16ToFloat(x[i]);
  return out;
}

int RunAllTests(int argc, char** argv) {
  std::string filter;
  std::string json_path;
  bool have_seed = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--filter=", 0) == 0) filter = arg.substr(9);
    if (arg.rfind("--json=", 0) == 0) json_path = arg.substr(7);
    if (arg.rfind("--seed=", 0) == 0) {
      SeedStorage() = std::stoull(arg.substr(7));
      have_seed = true;
    }
  }
  if (!have_seed) {
    SeedStorage() = static_cast<uint64_t>(
        std::chrono::steady_clock::now().time_since_epoch().count());
  }
  int num_devices = 0;
  const cudaError_t err = cudaGetDeviceCount(&num_devices);
  if (err != cudaSuccess || num_devices == 0) {
    std::printf("SKIPPED: no CUDA device (%s)\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "device count 0");
    if (!json_path.empty()) {
      std::ofstream(json_path) << "{\"skipped\": true, \"tests\": []}\n";
    }
    return 0;
  }
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
    std::printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor,
                prop.multiProcessorCount);
  }
  std::printf("seed: %llu (replay with --seed=%llu)\n",
              static_cast<unsigned long long>(Seed()), static_cast<unsigned long long>(Seed()));
  std::ostringstream json;
  json << "{\"skipped\": false, \"seed\": " << Seed() << ", \"tests\": [";
  // Bazel's sharding (shard_count): this process runs its shard's tests, and says it shards
  // by touching the status file.
  const char* total_env = std::getenv("TEST_TOTAL_SHARDS");
  const char* index_env = std::getenv("TEST_SHARD_INDEX");
  const int total_shards = total_env != nullptr ? std::atoi(total_env) : 1;
  const int shard_index = index_env != nullptr ? std::atoi(index_env) : 0;
  if (const char* status = std::getenv("TEST_SHARD_STATUS_FILE"); status != nullptr) {
    std::ofstream touch(status);
  }
  if (total_shards > 1) std::printf("shard %d of %d\n", shard_index + 1, total_shards);
  int num_run = 0;
  int num_failed = 0;
  for (size_t i = 0; i < Registry().size(); ++i) {
    const TestCase& test = Registry()[i];
    if (!InTestShard(i, shard_index, total_shards) || !TestSelected(test.name, filter)) continue;
    State() = TestState();
    std::printf("[ RUN  ] %s\n", test.name);
    std::fflush(stdout);
    const auto start = std::chrono::steady_clock::now();
    test.fn();
    // A sticky error from this test (e.g. an illegal address) fails it, not the next one.
    const cudaError_t sticky = cudaDeviceSynchronize();
    if (sticky != cudaSuccess) {
      RecordFailure(__FILE__, __LINE__,
                    std::string("device error after test: ") + cudaGetErrorString(sticky));
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const bool ok = State().failures.empty();
    std::printf("[ %s ] %s (%.2f s)\n", ok ? " OK " : "FAIL", test.name, seconds);
    std::fflush(stdout);
    json << (num_run > 0 ? "," : "") << "\n  {\"name\": \"" << JsonEscape(test.name)
         << "\", \"pass\": " << (ok ? "true" : "false") << ", \"seconds\": " << seconds
         << ", \"failures\": [";
    for (size_t i = 0; i < State().failures.size(); ++i) {
      json << (i > 0 ? ", " : "") << "\"" << JsonEscape(State().failures[i]) << "\"";
    }
    json << "], \"notes\": [";
    for (size_t i = 0; i < State().notes.size(); ++i) {
      json << (i > 0 ? ", " : "") << "\"" << JsonEscape(State().notes[i]) << "\"";
    }
    json << "]}";
    ++num_run;
    if (!ok) ++num_failed;
  }
  json << "\n], \"num_run\": " << num_run << ", \"num_failed\": " << num_failed << "}\n";
  if (!json_path.empty()) std::ofstream(json_path) << json.str();
  std::printf("%d tests, %d failed\n", num_run, num_failed);
  // No test run is a failure (a filter that matches nothing), except in a shard that was
  // dealt none.
  return num_failed == 0 && (num_run > 0 || total_shards > 1) ? 0 : 1;
}

}  // namespace glimpse::kernels::cuda::testing
