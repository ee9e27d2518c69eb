#include "model/kv_cache_storage.h"

#include <span>
#include <unordered_set>
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

uint8_t* KvCacheStorage::DeviceBlock(size_t layer, bool v, int32_t block) const {
  void* tensor = v ? layers_[layer].v : layers_[layer].k;
  return static_cast<uint8_t*>(tensor) + static_cast<size_t>(block) * block_bytes_;
}

uint8_t* KvCacheStorage::HostBlock(size_t layer, bool v, int32_t block) {
  CHECK(block >= 0 && block < num_host_blocks_);
  // [num_host_blocks][num_layers][k then v][block_bytes]
  return host_.data() +
         ((static_cast<size_t>(block) * layers_.size() + layer) * 2 + v) * block_bytes_;
}

void KvCacheStorage::CopyBlock(int32_t src, int32_t dst) {
  const KvBlockMove move{KvBlockMove::Kind::kCopy, src, dst};
  ApplyMoves({&move, 1});
}

void KvCacheStorage::SwapOutBlock(int32_t device_block, int32_t host_block) {
  const KvBlockMove move{KvBlockMove::Kind::kSwapOut, device_block, host_block};
  ApplyMoves({&move, 1});
}

void KvCacheStorage::SwapInBlock(int32_t host_block, int32_t device_block) {
  const KvBlockMove move{KvBlockMove::Kind::kSwapIn, host_block, device_block};
  ApplyMoves({&move, 1});
}

void KvCacheStorage::ApplyMoves(std::span<const KvBlockMove> moves) {
  // Blocks the current run writes, and (copies) reads: the block ids of its destinations
  // (and sources). A copy's both ends are device blocks; a swap's are of different spaces,
  // and two swaps reading one block do not conflict.
  std::unordered_set<int32_t> written;
  std::unordered_set<int32_t> read;
  size_t begin = 0;
  for (size_t i = 0; i < moves.size(); ++i) {
    const KvBlockMove& m = moves[i];
    const bool copy = m.kind == KvBlockMove::Kind::kCopy;
    const bool conflicts = i > begin && (m.kind != moves[begin].kind || written.count(m.dst) ||
                                         (copy && (read.count(m.dst) || written.count(m.src))));
    if (conflicts) {
      RunBatch(moves.subspan(begin, i - begin));
      begin = i;
      written.clear();
      read.clear();
    }
    written.insert(m.dst);
    if (copy) read.insert(m.src);
  }
  if (begin < moves.size()) RunBatch(moves.subspan(begin));
}

void KvCacheStorage::RunBatch(std::span<const KvBlockMove> run) {
  const KvBlockMove::Kind kind = run.front().kind;
  const bool device_src = kind != KvBlockMove::Kind::kSwapIn;
  const bool device_dst = kind != KvBlockMove::Kind::kSwapOut;
  copies_.clear();
  for (const KvBlockMove& m : run) {
    // Device block ids checked here, host ones by HostBlock.
    CHECK(!device_src || (m.src >= 0 && m.src < num_blocks_));
    CHECK(!device_dst || (m.dst >= 0 && m.dst < num_blocks_));
    for (size_t layer = 0; layer < layers_.size(); ++layer) {
      for (const bool v : {false, true}) {
        uint8_t* dst = device_dst ? DeviceBlock(layer, v, m.dst) : HostBlock(layer, v, m.dst);
        const uint8_t* src = device_src ? DeviceBlock(layer, v, m.src) : HostBlock(layer, v, m.src);
        copies_.push_back({dst, src, block_bytes_});
      }
    }
  }
  if (kind == KvBlockMove::Kind::kCopy) {
    backend_.BatchCopyWithinBackend(copies_);
    return;
  }
  if (host_.from_backend()) {
    // Page-locked swap space: the copies go straight to or from it, the swap-ins ordered
    // after the swap-outs before them by the backend; host_ must outlive them.
    if (kind == KvBlockMove::Kind::kSwapOut) {
      backend_.BatchCopyToHostAsync(copies_);
    } else {
      backend_.BatchCopyToBackendAsync(copies_);
    }
    swaps_pending_ = true;
    return;
  }
  // Plain memory (the backend could not give it; the batches take the backend's only): a
  // copy at a time. CopyToBackend reads the host at once, so the swap-outs must land first.
  if (kind == KvBlockMove::Kind::kSwapOut) {
    for (const kernels::CopyOp& c : copies_) backend_.CopyToHostAsync(c.dst, c.src, c.num_bytes);
    swaps_pending_ = true;
  } else {
    WaitForSwaps();
    for (const kernels::CopyOp& c : copies_) backend_.CopyToBackend(c.dst, c.src, c.num_bytes);
  }
}

void KvCacheStorage::SetNumHostBlocks(int32_t num_host_blocks) {
  CHECK(num_host_blocks >= 0);
  WaitForSwaps();  // before the space may move
  num_host_blocks_ = num_host_blocks;
  host_.SetBackend(&backend_);
  host_.Resize(static_cast<size_t>(num_host_blocks) * layers_.size() * 2 * block_bytes_);
}

void KvCacheStorage::WaitForSwaps() {
  if (!swaps_pending_) return;
  backend_.WaitForCopiesToHost();
  swaps_pending_ = false;
}

}  // namespace glimpse::model
