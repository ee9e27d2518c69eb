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
                                     TensorParallelRank tp) {
  return static_cast<size_t>(config.num_layers) * 2 * block_size * RankKvHeads(config, tp) *
         config.head_dim * sizeof(float);
}

KvCacheStorage::KvCacheStorage(kernels::Backend& backend, const LlamaConfig& config,
                               int32_t num_blocks, int32_t block_size, TensorParallelRank tp)
    : backend_(backend), num_blocks_(num_blocks), block_size_(block_size) {
  const int32_t num_kv_heads = RankKvHeads(config, tp);
  const size_t kv_dim = static_cast<size_t>(num_kv_heads) * config.head_dim;
  // Every backend keeps a block's KV contiguous within a layer's k and v tensors.
  block_floats_ = static_cast<size_t>(block_size) * kv_dim;
  const size_t per_tensor = static_cast<size_t>(num_blocks) * block_size * kv_dim * sizeof(float);
  for (int32_t i = 0; i < config.num_layers; ++i) {
    kernels::KvLayerView view;
    view.k = static_cast<float*>(backend_.Allocate(per_tensor));
    view.v = static_cast<float*>(backend_.Allocate(per_tensor));
    view.block_size = block_size;
    view.num_kv_heads = num_kv_heads;
    view.head_dim = config.head_dim;
    layers_.push_back(view);
    num_bytes_ += 2 * per_tensor;
  }
}

KvCacheStorage::~KvCacheStorage() {
  for (const kernels::KvLayerView& view : layers_) {
    backend_.Free(view.k);
    backend_.Free(view.v);
  }
}

void KvCacheStorage::CopyBlock(int32_t src, int32_t dst) {
  std::vector<float> staging(block_floats_);
  const size_t bytes = block_floats_ * sizeof(float);
  for (const kernels::KvLayerView& view : layers_) {
    for (float* tensor : {view.k, view.v}) {
      backend_.CopyToHost(staging.data(), tensor + src * block_floats_, bytes);
      backend_.CopyToBackend(tensor + dst * block_floats_, staging.data(), bytes);
    }
  }
}

void KvCacheStorage::SwapOutBlock(int32_t device_block, int32_t host_block) {
  const size_t per_block = layers_.size() * 2 * block_floats_;
  if (host_.empty()) host_.resize(static_cast<size_t>(num_host_blocks_) * per_block);
  float* dst = host_.data() + host_block * per_block;
  const size_t bytes = block_floats_ * sizeof(float);
  for (const kernels::KvLayerView& view : layers_) {
    for (float* tensor : {view.k, view.v}) {
      backend_.CopyToHost(dst, tensor + device_block * block_floats_, bytes);
      dst += block_floats_;
    }
  }
}

void KvCacheStorage::SwapInBlock(int32_t host_block, int32_t device_block) {
  const size_t per_block = layers_.size() * 2 * block_floats_;
  const float* src = host_.data() + host_block * per_block;
  const size_t bytes = block_floats_ * sizeof(float);
  for (const kernels::KvLayerView& view : layers_) {
    for (float* tensor : {view.k, view.v}) {
      backend_.CopyToBackend(tensor + device_block * block_floats_, src, bytes);
      src += block_floats_;
    }
  }
}

}  // namespace glimpse::model
