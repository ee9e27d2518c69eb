// The KV tensors of a paged cache: for every layer, key and value blocks in backend memory,
// laid out as kernels::KvLayerView describes (block outermost; elements of the backend's
// KvElementBytes()). Storage only: which block belongs to whom is kvcache::BlockPool's business.
//
// Tensor parallelism: the storage of rank `tp.rank` holds only that rank's KV heads
// (LlamaShardOf), so each layer's view has num_kv_heads / tp.size heads; block ids mean the
// same on every rank, and every rank's storage must see the same copies and swaps.
//
// Ownership: owns its buffers (freed through the backend). Thread-safety: used by the
// engine thread only.
#ifndef GLIMPSE_MODEL_KV_CACHE_STORAGE_H_
#define GLIMPSE_MODEL_KV_CACHE_STORAGE_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kernels/backend.h"
#include "kernels/host_buffer.h"
#include "model/llama_config.h"
#include "model/tensor_parallel.h"

namespace glimpse::model {

// One whole-block KV operation, every layer, keys and values.
struct KvBlockMove {
  enum class Kind {
    kCopy,     // device block src -> device block dst (copy-on-write of a shared block)
    kSwapOut,  // device block src -> host block dst
    kSwapIn,   // host block src -> device block dst
  };
  Kind kind = Kind::kCopy;
  int32_t src = 0;
  int32_t dst = 0;
};

class KvCacheStorage {
 public:
  // `backend` is not owned and must outlive this object. `tp` must split `config`'s heads
  // (LlamaShardOf succeeds for it; LlamaModel::Load has checked that for the model's rank).
  KvCacheStorage(kernels::Backend& backend, const LlamaConfig& config, int32_t num_blocks,
                 int32_t block_size, TensorParallelRank tp = {});
  ~KvCacheStorage();
  KvCacheStorage(const KvCacheStorage&) = delete;
  KvCacheStorage& operator=(const KvCacheStorage&) = delete;

  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  kernels::KvLayerView layer(int32_t i) const { return layers_[i]; }
  size_t num_bytes() const { return num_bytes_; }

  // Bytes one block takes over all layers (keys and values) on one rank of `tp`, for KV
  // elements of `element_bytes` (Backend::KvElementBytes()); for sizing a pool from a
  // per-device budget.
  static size_t BytesPerBlock(const LlamaConfig& config, int32_t block_size,
                              TensorParallelRank tp, size_t element_bytes);

  // Applies `moves` in order: block copies, swaps out and swaps in as CopyBlock, SwapOutBlock
  // and SwapInBlock below. Each run of consecutive moves of one kind that touch distinct
  // blocks is one batch of the backend's copies (Backend::BatchCopyToHostAsync and the
  // like: one call for the run's blocks x layers x keys and values), so a step's moves cost
  // a few calls, not 2 x layers each; a move that touches a block an earlier move of its run
  // writes (or, for copies, reads) starts a new run. Swaps are not waited for (WaitForSwaps
  // says why a step need not).
  void ApplyMoves(std::span<const KvBlockMove> moves);

  // Copies block `src`'s keys and values (every layer, every slot) into block `dst`, within
  // backend memory.
  void CopyBlock(int32_t src, int32_t dst);

  // Host swap space: `num_host_blocks` blocks in host memory, allocated here (from
  // Backend::AllocateHost: page-locked on a GPU, which takes the driver a while per GiB: at
  // start-up rather than at the first preemption). Blocks move whole, every layer; ids index
  // the host space. Used for swap preemption.
  void SetNumHostBlocks(int32_t num_host_blocks);
  // Starts the block's copies to the host (Backend::BatchCopyToHostAsync, a layer's k and v
  // at a time); they are complete after WaitForSwaps(). Backend work enqueued after may
  // overwrite the device block.
  void SwapOutBlock(int32_t device_block, int32_t host_block);
  // Starts the block's copies back (Backend::BatchCopyToBackendAsync from the page-locked
  // space: no staging, no wait; CopyToBackend after a wait when the space is plain memory).
  // The host block may be one a swap-out not yet waited for writes: the copies read what it
  // wrote. Backend work enqueued after sees the device block.
  void SwapInBlock(int32_t host_block, int32_t device_block);
  // Waits for the swaps started so far; the destructor and SetNumHostBlocks do so first. A
  // serving step need not: the host never reads the swap space itself, the swap-ins from it
  // are ordered after the swap-outs by the backend, and the swap-outs' device blocks may be
  // overwritten by the work enqueued after them.
  void WaitForSwaps();

 private:
  // The copies of one run of moves of one kind (ApplyMoves), as one backend batch.
  void RunBatch(std::span<const KvBlockMove> run);
  // Where block `block` of layer `layer`'s keys (v: false) or values (v: true) starts: in
  // backend memory, and in the host swap space.
  uint8_t* DeviceBlock(size_t layer, bool v, int32_t block) const;
  uint8_t* HostBlock(size_t layer, bool v, int32_t block);

  kernels::Backend& backend_;
  int32_t num_blocks_;
  int32_t block_size_;
  size_t num_bytes_ = 0;
  std::vector<kernels::KvLayerView> layers_;
  size_t block_bytes_ = 0;  // Bytes of one block in one layer's k (or v) tensor.
  int32_t num_host_blocks_ = 0;
  // Host swap space: [num_host_blocks][num_layers][k then v][block_bytes].
  kernels::HostBuffer<uint8_t> host_;
  bool swaps_pending_ = false;  // copies into or out of host_ not yet waited for
  std::vector<kernels::CopyOp> copies_;  // RunBatch's, reused across calls
};

}  // namespace glimpse::model

#endif  // GLIMPSE_MODEL_KV_CACHE_STORAGE_H_
