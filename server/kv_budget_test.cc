#include "server/kv_budget.h"

#include <cstdint>
#include <optional>

#include "gtest/gtest.h"

namespace glimpse::server {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

kernels::DeviceMemoryInfo Gpu(int64_t free_bytes, int64_t total_bytes) {
  return {static_cast<size_t>(free_bytes), static_cast<size_t>(total_bytes)};
}

TEST(KvBudgetTest, BytesFlagWithoutAFraction) {
  KvBudgetInputs in;
  in.kv_cache_bytes = 3 * kGiB;
  in.host_memory_bytes = 64 * kGiB;
  in.devices = {Gpu(100 * kGiB, 141 * kGiB), Gpu(90 * kGiB, 141 * kGiB)};
  auto budget = KvBudgetPerDevice(in);
  ASSERT_TRUE(budget.ok()) << budget.status();
  EXPECT_EQ(budget->bytes_per_device, 3 * kGiB);
  in.devices = {std::nullopt};
  budget = KvBudgetPerDevice(in);
  ASSERT_TRUE(budget.ok()) << budget.status();
  EXPECT_EQ(budget->bytes_per_device, 3 * kGiB);
}

// On GPUs: the fraction of what the device with the least free memory has left after the
// weights, not of its total (TensorRT-LLM's kv_cache_free_gpu_mem_fraction).
TEST(KvBudgetTest, FractionOfTheLeastFreeDeviceMemory) {
  KvBudgetInputs in;
  in.kv_cache_bytes = 1;
  in.kv_cache_fraction = 0.9;
  in.host_memory_bytes = 24 * kGiB;
  in.devices = {Gpu(125 * kGiB, 141 * kGiB)};
  auto budget = KvBudgetPerDevice(in);
  ASSERT_TRUE(budget.ok()) << budget.status();
  EXPECT_EQ(budget->bytes_per_device, static_cast<int64_t>(0.9 * 125 * kGiB));
  EXPECT_NE(budget->rule.find("free"), std::string::npos) << budget->rule;

  in.kv_cache_fraction = 0.5;
  in.devices = {Gpu(120 * kGiB, 141 * kGiB), Gpu(100 * kGiB, 141 * kGiB),
                Gpu(130 * kGiB, 141 * kGiB)};
  budget = KvBudgetPerDevice(in);
  ASSERT_TRUE(budget.ok()) << budget.status();
  EXPECT_EQ(budget->bytes_per_device, 50 * kGiB);
}

// On the host: the fraction of physical memory, which CPU ranks share.
TEST(KvBudgetTest, FractionOfHostMemorySharedByCpuRanks) {
  KvBudgetInputs in;
  in.kv_cache_fraction = 0.5;
  in.host_memory_bytes = 24 * kGiB;
  in.devices = {std::nullopt};
  auto budget = KvBudgetPerDevice(in);
  ASSERT_TRUE(budget.ok()) << budget.status();
  EXPECT_EQ(budget->bytes_per_device, 12 * kGiB);
  in.devices = {std::nullopt, std::nullopt, std::nullopt, std::nullopt};
  budget = KvBudgetPerDevice(in);
  ASSERT_TRUE(budget.ok()) << budget.status();
  EXPECT_EQ(budget->bytes_per_device, 3 * kGiB);
}

TEST(KvBudgetTest, RefusesAnEmptyBudgetAndMixedRanks) {
  KvBudgetInputs in;
  in.kv_cache_fraction = 0.9;
  in.host_memory_bytes = 24 * kGiB;
  in.devices = {Gpu(0, 141 * kGiB)};  // the weights took everything
  auto budget = KvBudgetPerDevice(in);
  EXPECT_EQ(budget.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(budget.status().message().find("free device memory"), std::string::npos)
      << budget.status();

  in.devices = {Gpu(10 * kGiB, 141 * kGiB), std::nullopt};
  EXPECT_EQ(KvBudgetPerDevice(in).status().code(), absl::StatusCode::kInvalidArgument);

  in.kv_cache_fraction = 0;
  in.kv_cache_bytes = 0;
  in.devices = {std::nullopt};
  EXPECT_EQ(KvBudgetPerDevice(in).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace glimpse::server
