#include "model/kv_cache_storage.h"

#include <vector>

#include "common/check.h"

namespace glimpse::model {
namespace {

// The KV heads a rank stores: all of them when unsplit.
int32_t RankKvHeads(const LlamaConfig& config, TensorParallelRank tp) {
  if (tp.size == 1) return config.num_kv_heads;
  CHECK(tp.rank >= 0 && tp.rank < tp.size &&
        kernels::CheckHeadSplit(config.num_heads, config.num_kv_heads, tp.size).empty());
  return static_cast<int32_t>(
      kernels::HeadShardOf(config.num_heads, config.num_kv_heads, tp.rank, tp.size)
          .kv_heads.size());
}

}  // namespace

size_t KvCacheStorage::BytesPerBlock(const LlamaConfig& config, int32_t block_size,
                                     TensorParallelRank tp, size_t element_bytes) {
  return static_cast<size_t>(config.num_layers) * 2 * block_size * RankKvHeads(config, tp) *
         config.head_dim * element_bytes;
}

KvCacheStorage::KvCacheStorage(kernels::Backend& backend, const LlamaConfig& config,
                               int32_t num_blocks, int32_t block_size, TensorParallelRank tp)
    : backend_(backend), num_blocks_(num_blocks), block_size_(block_size) {
  const int32_t num_kv_heads = RankKvHeads(config, tp);
  // Every backend keeps a block's KV contiguous within a layer's k and v tensors.
  block_bytes_ = static_cast<size_t>(block_size) * num_kv_heads * config.head_dim *
                 backend_.KvElementBytes();
  const size_t per_tensor = static_cast<size_t>(num_blocks) * block_bytes_;
  for (int32_t i = 0; i < config.num_layers; ++i) {
    kernels::KvLayerView view;
    view.k = backend_.Allocate(per_tensor);
    view.v = backend_.Allocate(per_tensor);
    view.block_size = block_size;
    view.num_kv_heads = num_kv_heads;
    view.head_dim = config.head_dim;
    layers_.push_back(view);
    num_bytes_ += 2 * per_tensor;
  }
}

KvCacheStorage::~KvCacheStorage() {
  WaitForSwaps();  // before host_ goes
  for (const kernels::KvLayerView& view : layers_) {
    backend_.Free(view.k);
    backend_.Free(view.v);
  }
}

namespace {

// Byte address of block `block` of a layer tensor whose blocks are `block_bytes` long.
uint8_t* BlockAt(void* tensor, int64_t block, size_t block_bytes) {
  return static_cast<uint8_t*>(tensor) + block * block_bytes;
}

}  // namespace

void KvCacheStorage::CopyBlock(int32_t src, int32_t dst) {
  for (const kernels::KvLayerView& view : layers_) {
    for (void* tensor : {view.k, view.v}) {
      backend_.CopyWithinBackend(BlockAt(tensor, dst, block_bytes_),
                                 BlockAt(tensor, src, block_bytes_), block_bytes_);
    }
  }
}

void KvCacheStorage::SetNumHostBlocks(int32_t num_host_blocks) {
  CHECK(num_host_blocks >= 0);
  WaitForSwaps();  // before the space may move
  num_host_blocks_ = num_host_blocks;
  host_.SetBackend(&backend_);
  host_.Resize(static_cast<size_t>(num_host_blocks) * layers_.size() * 2 * block_bytes_);
}

void KvCacheStorage::SwapOutBlock(int32_t device_block, int32_t host_block) {
  CHECK(host_block >= 0 && host_block < num_host_blocks_);
  const size_t per_block = layers_.size() * 2 * block_bytes_;
  uint8_t* dst = host_.data() + host_block * per_block;
  for (const kernels::KvLayerView& view : layers_) {
    for (void* tensor : {view.k, view.v}) {
      backend_.CopyToHostAsync(dst, BlockAt(tensor, device_block, block_bytes_), block_bytes_);
      dst += block_bytes_;
    }
  }
  swaps_pending_ = true;
}

void KvCacheStorage::WaitForSwaps() {
  if (!swaps_pending_) return;
  backend_.WaitForCopiesToHost();
  swaps_pending_ = false;
}

void KvCacheStorage::SwapInBlock(int32_t host_block, int32_t device_block) {
  CHECK(host_block >= 0 && host_block < num_host_blocks_);
  const size_t per_block = layers_.size() * 2 * block_bytes_;
  const uint8_t* src = host_.data() + host_block * per_block;
  // From the backend's (page-locked) memory the copies go straight from it, ordered after the
  // swap-outs before them by the backend; from plain memory (the backend could not give it)
  // CopyToBackend reads the host now, so the swap-outs must have landed first.
  const bool async = host_.from_backend();
  if (async) {
    swaps_pending_ = true;  // host_ must outlive the copies
  } else {
    WaitForSwaps();
  }
  for (const kernels::KvLayerView& view : layers_) {
    for (void* tensor : {view.k, view.v}) {
      void* dst = BlockAt(tensor, device_block, block_bytes_);
      if (async) {
        backend_.CopyToBackendAsync(dst, src, block_bytes_);
      } else {
        backend_.CopyToBackend(dst, src, block_bytes_);
      }
      src += block_bytes_;
    }
  }
}

}  // namespace glimpse::model
