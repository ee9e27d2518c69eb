// Tensor-parallel group: shard arithmetic (host only), the one-rank all-reduce every single-GPU
// run goes through, and — where two or more GPUs exist — a real multi-rank sum against a float64
// reference, issued both from one thread and from one thread per rank.
#include "kernels/cuda/tensor_parallel.h"

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cuda/testing/paged_kv_fixture.h"
#include "kernels/cuda/testing/test_harness.h"

namespace glimpse::kernels::cuda {
namespace {

using testing::DeviceActivations;

GLIMPSE_CUDA_TEST(ShardsCoverEveryItemOnceAndDifferByAtMostOne) {
  for (int64_t n : {1, 7, 8, 14336, 4097}) {
    for (int size : {1, 2, 3, 4, 8}) {
      int64_t next = 0;
      int64_t smallest = n, largest = 0;
      for (int rank = 0; rank < size; ++rank) {
        const ShardRange r = ShardOf(n, rank, size);
        GLIMPSE_EXPECT(r.begin == next, "shards are contiguous, n=" + std::to_string(n));
        next = r.end;
        smallest = std::min(smallest, r.size());
        largest = std::max(largest, r.size());
      }
      GLIMPSE_EXPECT(next == n, "shards cover n=" + std::to_string(n));
      GLIMPSE_EXPECT(largest - smallest <= 1, "balanced, n=" + std::to_string(n));
    }
  }
  // GQA 32/8 over 4 ranks: rank 1 owns KV heads 2..3 and their query heads 8..15.
  const HeadShard h = HeadShardOf(32, 8, 1, 4);
  GLIMPSE_EXPECT(h.kv_heads.begin == 2 && h.kv_heads.end == 4, "kv heads of rank 1");
  GLIMPSE_EXPECT(h.q_heads.begin == 8 && h.q_heads.end == 16, "query heads of rank 1");
  GLIMPSE_EXPECT(CheckHeadSplit(32, 8, 4).empty(), "32/8 splits over 4");
  GLIMPSE_EXPECT(!CheckHeadSplit(32, 8, 3).empty(), "8 KV heads do not split over 3");
}

// Every rank holds fresh random data; after the all-reduce each holds the sum.
void RunAllReduce(const std::vector<int>& devices, DType dtype, size_t count, bool per_rank) {
  const std::string name = std::string("allreduce ") + testing::DTypeName(dtype) + " ranks=" +
                           std::to_string(devices.size()) + (per_rank ? " per-rank threads" : "");
  std::string error;
  std::unique_ptr<TensorParallelGroup> group = TensorParallelGroup::Create(devices, &error);
  GLIMPSE_EXPECT(group != nullptr, name + ": " + error);
  if (group == nullptr) return;
  const size_t ranks = devices.size();
  std::vector<std::vector<float>> inputs(ranks);
  std::vector<double> sum(count, 0.0);
  std::vector<DeviceActivations> buffers(ranks);
  std::vector<cudaStream_t> streams(ranks, nullptr);
  for (size_t r = 0; r < ranks; ++r) {
    GLIMPSE_ASSERT_CUDA(cudaSetDevice(devices[r]));
    inputs[r] = testing::RandomActivations(count, dtype, 2.0f);
    for (size_t i = 0; i < count; ++i) sum[i] += inputs[r][i];
    GLIMPSE_ASSERT_CUDA(buffers[r].Upload(inputs[r], dtype));
    GLIMPSE_ASSERT_CUDA(cudaStreamCreate(&streams[r]));
  }
  if (per_rank) {
    std::vector<ncclResult_t> results(ranks, ncclSuccess);
    std::vector<std::thread> threads;
    for (size_t r = 0; r < ranks; ++r) {
      threads.emplace_back([&, r] {
        cudaSetDevice(devices[r]);
        results[r] = group->AllReduceSumRank(static_cast<int>(r), buffers[r].ptr, count, dtype,
                                             streams[r]);
      });
    }
    for (std::thread& t : threads) t.join();
    for (size_t r = 0; r < ranks; ++r) {
      GLIMPSE_EXPECT(results[r] == ncclSuccess, name + ": " + ncclGetErrorString(results[r]));
    }
  } else {
    std::vector<void*> ptrs;
    for (DeviceActivations& b : buffers) ptrs.push_back(b.ptr);
    const ncclResult_t r = group->AllReduceSum(ptrs, count, dtype, streams);
    GLIMPSE_EXPECT(r == ncclSuccess, name + ": " + ncclGetErrorString(r));
  }
  GLIMPSE_RETURN_IF_FAILED();
  for (size_t r = 0; r < ranks; ++r) {
    GLIMPSE_ASSERT_CUDA(cudaSetDevice(devices[r]));
    GLIMPSE_ASSERT_CUDA(cudaStreamSynchronize(streams[r]));
    GLIMPSE_ASSERT_CUDA(cudaStreamDestroy(streams[r]));
    std::vector<float> out;
    GLIMPSE_ASSERT_CUDA(buffers[r].Download(&out, dtype));
    // A sum of `ranks` bf16 values is rounded to bf16 (NCCL may also round partial sums).
    GLIMPSE_EXPECT_CLOSE(name + " rank " + std::to_string(r), out, sum,
                         testing::ToleranceFor(dtype));
  }
}

GLIMPSE_CUDA_TEST(OneRankAllReduceLeavesTheDataAsItWas) {
  int device = 0;
  GLIMPSE_ASSERT_CUDA(cudaGetDevice(&device));
  for (const DType dtype : {DType::kF32, DType::kBF16}) {
    RunAllReduce({device}, dtype, 4096 * 3 + 5, false);
    RunAllReduce({device}, dtype, 17, true);
  }
}

GLIMPSE_CUDA_TEST(MultiRankAllReduceSumsOverEveryGpu) {
  int count = 0;
  GLIMPSE_ASSERT_CUDA(cudaGetDeviceCount(&count));
  if (count < 2) {
    testing::Note("multi-rank all-reduce not run: needs 2 or more GPUs, this machine has " +
                  std::to_string(count));
    return;
  }
  std::vector<int> devices;
  for (int d = 0; d < count && d < 8; ++d) devices.push_back(d);
  for (const DType dtype : {DType::kF32, DType::kBF16}) {
    RunAllReduce(devices, dtype, 1 << 20, false);
    RunAllReduce(devices, dtype, 4096 * 7 + 3, true);
    RunAllReduce({devices[0], devices[1]}, dtype, 12345, false);
  }
}

}  // namespace
}  // namespace glimpse::kernels::cuda
