// What --kv_cache_dtype means on each device for each model file, and the CPU's refusal of a
// bf16 cache, through LoadedModel::Load as `glimpse serve` calls it.
#include "server/loaded_model.h"

#include <string>

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
  // Explicit choices stand on CUDA.
  EXPECT_EQ(Resolve(KvCacheDType::kFp32, Device::kCuda, kF16Model), KvCacheDType::kFp32);
  EXPECT_EQ(Resolve(KvCacheDType::kBf16, Device::kCuda, kF32Model), KvCacheDType::kBf16);
}

TEST(KvCacheDTypeTest, CpuRefusesABf16CacheAndSaysWhatToUse) {
  auto loaded = LoadedModel::Load(kF16Model, 1, Device::kCpu, 1, KvCacheDType::kBf16);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.status().message().find("--device=cuda"), std::string::npos)
      << loaded.status();
}

TEST(KvCacheDTypeTest, CpuLoadsWithAutoAndSizesBlocksInFp32) {
  auto loaded = LoadedModel::Load(kF16Model, 1, Device::kCpu, 1, KvCacheDType::kAuto);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const model::LlamaConfig& c = loaded->config();
  EXPECT_EQ(loaded->runner->KvBytesPerBlockPerDevice(16),
            static_cast<size_t>(c.num_layers) * 2 * 16 * c.num_kv_heads * c.head_dim * 4);
}

TEST(KvCacheDTypeTest, FlagParsesTheThreeNamesAndRejectsOthers) {
  KvCacheDType d = KvCacheDType::kAuto;
  std::string error;
  for (const auto& [text, want] : {std::pair{"auto", KvCacheDType::kAuto},
                                   std::pair{"fp32", KvCacheDType::kFp32},
                                   std::pair{"bf16", KvCacheDType::kBf16}}) {
    ASSERT_TRUE(AbslParseFlag(text, &d, &error)) << text;
    EXPECT_EQ(d, want);
    EXPECT_EQ(AbslUnparseFlag(d), text);
  }
  EXPECT_FALSE(AbslParseFlag("fp16", &d, &error));
  EXPECT_NE(error.find("bf16"), std::string::npos);
}

}  // namespace
}  // namespace glimpse::server
