// What --kv_cache_dtype means on each device for each model file, the CPU's 16-bit caches and
// CUDA's refusal of an fp16 one, through LoadedModel::Load as `glimpse serve` calls it.
#include "server/loaded_model.h"

#include <string>
#include <tuple>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "model/gguf.h"

namespace glimpse::server {
namespace {

constexpr char kF16Model[] = "models/tinycode-4m-f16.gguf";
constexpr char kF32Model[] = "tests/data/tinycode-4m.gguf";
constexpr char kQ8Model[] = "tests/data/tinycode-4m-q8_0.gguf";

KvCacheDType Resolve(KvCacheDType requested, Device device, const std::string& path) {
  auto file = model::GgufFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  auto resolved = ResolveKvCacheDType(requested, device, **file);
  EXPECT_TRUE(resolved.ok()) << resolved.status();
  return resolved.ok() ? *resolved : KvCacheDType::kAuto;
}

TEST(KvCacheDTypeTest, AutoFollowsTheWeightsOnCudaAndIsFp32OnTheCpu) {
  EXPECT_EQ(Resolve(KvCacheDType::kAuto, Device::kCuda, kF16Model), KvCacheDType::kBf16);
  EXPECT_EQ(Resolve(KvCacheDType::kAuto, Device::kCuda, kQ8Model), KvCacheDType::kBf16);
  EXPECT_EQ(Resolve(KvCacheDType::kAuto, Device::kCuda, kF32Model), KvCacheDType::kFp32);
  EXPECT_EQ(Resolve(KvCacheDType::kAuto, Device::kCpu, kF16Model), KvCacheDType::kFp32);
  // Explicit choices stand.
  EXPECT_EQ(Resolve(KvCacheDType::kF16, Device::kCpu, kF32Model), KvCacheDType::kF16);
  EXPECT_EQ(Resolve(KvCacheDType::kBf16, Device::kCpu, kF32Model), KvCacheDType::kBf16);
  EXPECT_EQ(Resolve(KvCacheDType::kFp32, Device::kCuda, kF16Model), KvCacheDType::kFp32);
  EXPECT_EQ(Resolve(KvCacheDType::kBf16, Device::kCuda, kF32Model), KvCacheDType::kBf16);
}

TEST(KvCacheDTypeTest, CudaRefusesAnF16CacheAndSaysWhatToUse) {
  auto file = model::GgufFile::Open(kF16Model);
  ASSERT_TRUE(file.ok()) << file.status();
  auto resolved = ResolveKvCacheDType(KvCacheDType::kF16, Device::kCuda, **file);
  ASSERT_FALSE(resolved.ok());
  EXPECT_EQ(resolved.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(resolved.status().message().find("--kv_cache_dtype=bf16"), std::string::npos)
      << resolved.status();
  auto backend = CreateBackend(Device::kCuda, 1, KvCacheDType::kF16);
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kInvalidArgument) << backend.status();
}

// Bytes of one KV block (16 slots) of the bundled model with `element_bytes` per element.
size_t BlockBytes(const model::LlamaConfig& c, size_t element_bytes) {
  return static_cast<size_t>(c.num_layers) * 2 * 16 * c.num_kv_heads * c.head_dim * element_bytes;
}

TEST(KvCacheDTypeTest, CpuLoadsEachCacheTypeAndSizesBlocksByIt) {
  for (const auto& [requested, name, bytes] :
       {std::tuple{KvCacheDType::kAuto, "fp32", 4}, std::tuple{KvCacheDType::kFp32, "fp32", 4},
        std::tuple{KvCacheDType::kF16, "f16", 2}, std::tuple{KvCacheDType::kBf16, "bf16", 2}}) {
    auto loaded = LoadedModel::Load(kF16Model, 1, Device::kCpu, 1, requested);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->kv_cache_dtype_name(), name);
    EXPECT_EQ(loaded->runner->KvBytesPerBlockPerDevice(16), BlockBytes(loaded->config(), bytes))
        << name;
  }
  // Tensor-parallel CPU ranks take the cache type too.
  auto split = LoadedModel::Load(kF16Model, 2, Device::kCpu, 2, KvCacheDType::kF16);
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_EQ(split->rank_backend(1).KvElementBytes(), 2u);
}

TEST(KvCacheDTypeTest, FlagParsesTheNamesAndAliasesAndRejectsOthers) {
  KvCacheDType d = KvCacheDType::kAuto;
  std::string error;
  for (const auto& [text, want, canonical] :
       {std::tuple{"auto", KvCacheDType::kAuto, "auto"},
        std::tuple{"fp32", KvCacheDType::kFp32, "fp32"},
        std::tuple{"f32", KvCacheDType::kFp32, "fp32"},
        std::tuple{"f16", KvCacheDType::kF16, "f16"}, std::tuple{"fp16", KvCacheDType::kF16, "f16"},
        std::tuple{"bf16", KvCacheDType::kBf16, "bf16"}}) {
    ASSERT_TRUE(AbslParseFlag(text, &d, &error)) << text;
    EXPECT_EQ(d, want) << text;
    EXPECT_EQ(AbslUnparseFlag(d), canonical);
  }
  EXPECT_FALSE(AbslParseFlag("fp8", &d, &error));
  EXPECT_NE(error.find("bf16"), std::string::npos);
}

TEST(CudaPrefillAttentionFlagTest, ParsesTheFiveKernelsAndRejectsOthers) {
  using kernels::cuda::PrefillKernel;
  PrefillKernel k = PrefillKernel::kMmaSync;
  std::string error;
  for (const auto& [text, want] :
       {std::pair{"mma_sync", PrefillKernel::kMmaSync},
        std::pair{"mma_sync_wide", PrefillKernel::kMmaSyncWide},
        std::pair{"wgmma", PrefillKernel::kWgmma},
        std::pair{"wgmma_pipelined", PrefillKernel::kWgmmaPipelined},
        std::pair{"wgmma_pipelined_128", PrefillKernel::kWgmmaPipelined128}}) {
    ASSERT_TRUE(AbslParseFlag(text, &k, &error)) << text;
    EXPECT_EQ(k, want) << text;
    EXPECT_EQ(AbslUnparseFlag(k), text);
  }
  EXPECT_FALSE(AbslParseFlag("wmma", &k, &error));
  EXPECT_NE(error.find("wgmma_pipelined"), std::string::npos) << error;
}

TEST(CudaDecodeAttentionFlagTest, ParsesTheTwoKernelsAndRejectsOthers) {
  using kernels::cuda::DecodeKernel;
  DecodeKernel k = DecodeKernel::kCudaCores;
  std::string error;
  for (const auto& [text, want] : {std::pair{"cuda_cores", DecodeKernel::kCudaCores},
                                   std::pair{"mma_sync", DecodeKernel::kMmaSync}}) {
    ASSERT_TRUE(AbslParseFlag(text, &k, &error)) << text;
    EXPECT_EQ(k, want) << text;
    EXPECT_EQ(AbslUnparseFlag(k), text);
  }
  EXPECT_FALSE(AbslParseFlag("tensor_cores", &k, &error));
  EXPECT_NE(error.find("cuda_cores"), std::string::npos) << error;
}

}  // namespace
}  // namespace glimpse::server
