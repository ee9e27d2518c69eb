#include "model/kv_cache_storage.h"

namespace glimpse::model {

size_t KvCacheStorage::BytesPerBlock(const LlamaConfig& config, int32_t block_size) {
  return static_cast<size_t>(config.num_layers) * 2 * block_size * config.kv_dim() * sizeof(float);
}

KvCacheStorage::KvCacheStorage(kernels::Backend& backend, const LlamaConfig& config,
                               int32_t num_blocks, int32_t block_size)
    : backend_(backend), num_blocks_(num_blocks), block_size_(block_size) {
  const size_t per_tensor =
      static_cast<size_t>(num_blocks) * block_size * config.kv_dim() * sizeof(float);
  for (int32_t i = 0; i < config.num_layers; ++i) {
    kernels::KvLayerView view;
    view.k = static_cast<float*>(backend_.Allocate(per_tensor));
    view.v = static_cast<float*>(backend_.Allocate(per_tensor));
    view.block_size = block_size;
    view.num_kv_heads = config.num_kv_heads;
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

}  // namespace glimpse::model
