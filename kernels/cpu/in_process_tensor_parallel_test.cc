#include "kernels/cpu/in_process_tensor_parallel.h"

#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"

namespace glimpse::kernels::cpu {
namespace {

TEST(CpuBackendAllReduceTest, GroupOfOneLeavesDataBitwiseUnchanged) {
  CpuBackend backend(1);
  std::vector<float> x = {1.5f, -0.0f, 3e-38f, 7.0f};
  const std::vector<float> before = x;
  backend.AllReduceSum(x.data(), static_cast<int64_t>(x.size()));
  EXPECT_EQ(std::memcmp(x.data(), before.data(), x.size() * sizeof(float)), 0);
}

TEST(InProcessTensorParallelGroupTest, EveryRankEndsWithTheSameRankOrderedSum) {
  for (int size : {1, 2, 3, 4}) {
    InProcessTensorParallelGroup group(size);
    std::vector<std::unique_ptr<CpuBackend>> backends;
    for (int r = 0; r < size; ++r) backends.push_back(group.CreateRankBackend(r, 1));
    // Many rounds of varying length, back to back, as the forward pass issues them.
    constexpr int kRounds = 40;
    std::vector<std::vector<std::vector<float>>> data(size);  // [rank][round][i]
    std::mt19937 rng(size);
    std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
    for (int r = 0; r < size; ++r) {
      for (int round = 0; round < kRounds; ++round) {
        std::vector<float> v(static_cast<size_t>(round * 37 % 101));
        for (float& f : v) f = dist(rng);
        data[r].push_back(std::move(v));
      }
    }
    const auto inputs = data;
    std::vector<std::thread> threads;
    for (int r = 0; r < size; ++r) {
      threads.emplace_back([&, r] {
        for (int round = 0; round < kRounds; ++round) {
          backends[r]->AllReduceSum(data[r][round].data(),
                                    static_cast<int64_t>(data[r][round].size()));
        }
      });
    }
    for (std::thread& t : threads) t.join();
    for (int round = 0; round < kRounds; ++round) {
      for (size_t i = 0; i < inputs[0][round].size(); ++i) {
        float want = inputs[0][round][i];
        for (int r = 1; r < size; ++r) want += inputs[r][round][i];
        for (int r = 0; r < size; ++r) {
          ASSERT_EQ(data[r][round][i], want) << "size " << size << " rank " << r;
        }
      }
    }
  }
}

}  // namespace
}  // namespace glimpse::kernels::cpu
