// KvCacheStorage's swap space over a backend whose copies to the host land late
// (InstrumentedCpuBackend: read at the call, written at the wait), as a GPU's do: a step's
// swaps are not waited for, swap-ins copy straight from the page-locked space (ordered after
// the swap-outs by the backend), and a swap space in plain memory is never read before the
// swap-outs into it have landed.
#include "model/kv_cache_storage.h"

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/testing/instrumented_cpu_backend.h"
#include "model/llama_config.h"
#include "model/step_runner.h"

namespace glimpse::model {
namespace {

class KvCacheStorageTest : public ::testing::Test {
 protected:
  KvCacheStorageTest() {
    config_.num_layers = 3;
    config_.num_kv_heads = 2;
    config_.head_dim = 8;
    kv_ = std::make_unique<KvCacheStorage>(backend_, config_, kBlocks, kBlockSize);
    block_bytes_ = static_cast<size_t>(kBlockSize) * config_.kv_dim() * backend_.KvElementBytes();
    std::mt19937 rng(3);
    for (int32_t l = 0; l < config_.num_layers; ++l) {
      for (void* tensor : {kv_->layer(l).k, kv_->layer(l).v}) {
        std::vector<uint8_t> bytes(kBlocks * block_bytes_);
        for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
        backend_.CopyToBackend(tensor, bytes.data(), bytes.size());
        contents_.push_back(bytes);
      }
    }
  }

  // Block `b` of tensor `t` (layer * 2 + (k: 0, v: 1)) as the device holds it now.
  std::vector<uint8_t> DeviceBlock(int t, int32_t b) {
    const kernels::KvLayerView view = kv_->layer(t / 2);
    const auto* tensor = static_cast<const uint8_t*>(t % 2 == 0 ? view.k : view.v);
    std::vector<uint8_t> bytes(block_bytes_);
    backend_.CopyToHost(bytes.data(), tensor + b * block_bytes_, block_bytes_);
    return bytes;
  }
  // What block `b` of tensor `t` held at the start.
  std::vector<uint8_t> Initial(int t, int32_t b) const {
    return {contents_[t].begin() + b * block_bytes_, contents_[t].begin() + (b + 1) * block_bytes_};
  }
  void Overwrite(int32_t b, uint8_t value) {
    const std::vector<uint8_t> junk(block_bytes_, value);
    for (int32_t l = 0; l < config_.num_layers; ++l) {
      for (void* tensor : {kv_->layer(l).k, kv_->layer(l).v}) {
        backend_.CopyToBackend(static_cast<uint8_t*>(tensor) + b * block_bytes_, junk.data(),
                               block_bytes_);
      }
    }
  }

  static constexpr int32_t kBlocks = 6;
  static constexpr int32_t kBlockSize = 4;
  kernels::cpu::InstrumentedCpuBackend backend_;
  LlamaConfig config_;
  std::unique_ptr<KvCacheStorage> kv_;
  size_t block_bytes_ = 0;
  std::vector<std::vector<uint8_t>> contents_;  // [layer * 2 + (k|v)]
};

TEST_F(KvCacheStorageTest, AStepsSwapsAreLeftToTheBackendsOrder) {
  kv_->SetNumHostBlocks(4);
  EXPECT_EQ(backend_.num_allocations(), 1) << "the swap space is allocated up front";
  const KvBlockMove moves[] = {{KvBlockMove::Kind::kSwapOut, 1, 3},
                               {KvBlockMove::Kind::kSwapOut, 2, 0},
                               {KvBlockMove::Kind::kCopy, 4, 1}};  // reuses swapped-out block 1
  kv_->ApplyMoves(moves);
  EXPECT_EQ(backend_.num_batches_to_host(), 1) << "both swap-outs, every layer, one batch";
  EXPECT_EQ(backend_.num_batches_within(), 1);
  EXPECT_EQ(backend_.num_waits(), 0) << "the host does not wait for the swaps";
  EXPECT_EQ(backend_.num_copies_pending(), 2u * 2 * config_.num_layers)
      << "2 blocks x 3 layers x (k, v) still under way";
  Overwrite(2, 0xab);  // the next step reuses swapped-out block 2
  const KvBlockMove back[] = {{KvBlockMove::Kind::kSwapIn, 3, 5},
                              {KvBlockMove::Kind::kSwapIn, 0, 2}};
  kv_->ApplyMoves(back);
  EXPECT_EQ(backend_.num_batches_to_backend(), 1);
  EXPECT_EQ(backend_.num_async_copies_to_backend(), 2 * 2 * config_.num_layers);
  EXPECT_EQ(backend_.num_waits(), 0);
  for (int t = 0; t < 2 * config_.num_layers; ++t) {
    EXPECT_EQ(DeviceBlock(t, 5), Initial(t, 1)) << "tensor " << t;
    EXPECT_EQ(DeviceBlock(t, 2), Initial(t, 2)) << "tensor " << t;
    EXPECT_EQ(DeviceBlock(t, 1), Initial(t, 4)) << "tensor " << t;
  }
  kv_.reset();
  EXPECT_EQ(backend_.num_waits(), 1) << "the swap space outlives the copies";
}

// A batch's copies run in any order, so a move that touches a block an earlier move of its
// run writes (or a copy reads) starts a new batch (InstrumentedCpuBackend aborts on a batch
// whose copies overlap where one writes); the moves' result is theirs in order.
TEST_F(KvCacheStorageTest, MovesThatDependOnEachOtherGoInSeparateBatches) {
  kv_->SetNumHostBlocks(3);
  const KvBlockMove moves[] = {
      {KvBlockMove::Kind::kCopy, 0, 1},
      {KvBlockMove::Kind::kCopy, 2, 3},     // independent: same batch
      {KvBlockMove::Kind::kCopy, 1, 4},     // reads block 1, which the batch writes
      {KvBlockMove::Kind::kCopy, 5, 2},     // writes block 2, which the first batch read
      {KvBlockMove::Kind::kSwapOut, 4, 0},  // another kind
      {KvBlockMove::Kind::kSwapOut, 3, 1},
      {KvBlockMove::Kind::kSwapOut, 4, 2},  // reads block 4 again: no conflict
      {KvBlockMove::Kind::kSwapOut, 2, 0},  // writes host block 0 again
      {KvBlockMove::Kind::kSwapIn, 1, 5},
      {KvBlockMove::Kind::kSwapIn, 0, 5},  // writes device block 5 again
  };
  kv_->ApplyMoves(moves);
  EXPECT_EQ(backend_.num_batches_within(), 2) << "copies {0->1, 2->3}, {1->4, 5->2}";
  EXPECT_EQ(backend_.num_batches_to_host(), 2) << "swap-outs {4, 3, 4}, {2}";
  EXPECT_EQ(backend_.num_batches_to_backend(), 2) << "swap-ins {1}, {0}";
  // Device blocks after: 1 = 0, 3 = 2, 4 = 0, 2 = 5; host 0 = device 2 (= 5), host 1 = 3
  // (= 2); device 5 = host 0 = 5, written last.
  for (int t = 0; t < 2 * config_.num_layers; ++t) {
    EXPECT_EQ(DeviceBlock(t, 1), Initial(t, 0)) << "tensor " << t;
    EXPECT_EQ(DeviceBlock(t, 3), Initial(t, 2)) << "tensor " << t;
    EXPECT_EQ(DeviceBlock(t, 4), Initial(t, 0)) << "tensor " << t;
    EXPECT_EQ(DeviceBlock(t, 2), Initial(t, 5)) << "tensor " << t;
    EXPECT_EQ(DeviceBlock(t, 5), Initial(t, 5)) << "tensor " << t;
  }
  const KvBlockMove back[] = {{KvBlockMove::Kind::kSwapIn, 1, 0},
                              {KvBlockMove::Kind::kSwapIn, 2, 1}};
  kv_->ApplyMoves(back);
  EXPECT_EQ(backend_.num_batches_to_backend(), 3);
  for (int t = 0; t < 2 * config_.num_layers; ++t) {
    EXPECT_EQ(DeviceBlock(t, 0), Initial(t, 2)) << "tensor " << t;
    EXPECT_EQ(DeviceBlock(t, 1), Initial(t, 0)) << "tensor " << t;
  }
}

// A swap-in right after a swap-out of the same host block, no wait between: it must read what
// the swap-out wrote, not the swap space's stale bytes.
TEST_F(KvCacheStorageTest, ASwapInReadsWhatTheSwapOutsBeforeItWrote) {
  kv_->SetNumHostBlocks(2);
  kv_->SwapOutBlock(3, 1);
  Overwrite(3, 0x5a);
  const int copies_before = backend_.num_copies_to_backend();
  kv_->SwapInBlock(1, 0);
  EXPECT_EQ(backend_.num_async_copies_to_backend(), 2 * config_.num_layers)
      << "straight from the page-locked space, a layer's k and v at a time";
  EXPECT_EQ(backend_.num_copies_to_backend(), copies_before) << "no staged copies";
  EXPECT_EQ(backend_.num_waits(), 0) << "the backend orders the swap-in after the swap-out";
  for (int t = 0; t < 2 * config_.num_layers; ++t) {
    EXPECT_EQ(DeviceBlock(t, 0), Initial(t, 3)) << "tensor " << t;
  }
  EXPECT_EQ(backend_.num_allocations(), 1) << "the swap space is the backend's host memory";
  kv_->WaitForSwaps();
  kv_->SwapInBlock(1, 4);  // nothing else under way
  kv_.reset();
  EXPECT_EQ(backend_.num_waits(), 2) << "the space outlives the last swap-in's copies";
  EXPECT_EQ(backend_.num_live(), 0u);
}

// The backend cannot page-lock the swap space: it is plain memory, which swap-ins copy from
// with CopyToBackend (reading the host at once), so the swap-outs into it must land first.
TEST_F(KvCacheStorageTest, ASwapSpaceInPlainMemoryIsReadOnlyOnceWritten) {
  backend_.set_refuse_host_allocations(true);
  kv_->SetNumHostBlocks(2);
  kv_->SwapOutBlock(3, 1);
  kv_->SwapOutBlock(2, 0);
  Overwrite(3, 0x5a);
  Overwrite(2, 0xa5);
  kv_->SwapInBlock(1, 2);
  kv_->SwapInBlock(0, 3);
  EXPECT_EQ(backend_.num_async_copies_to_backend(), 0);
  for (int t = 0; t < 2 * config_.num_layers; ++t) {
    EXPECT_EQ(DeviceBlock(t, 2), Initial(t, 3)) << "tensor " << t;
    EXPECT_EQ(DeviceBlock(t, 3), Initial(t, 2)) << "tensor " << t;
  }
}

}  // namespace
}  // namespace glimpse::model
