// CUDA graphs of decode steps (issue #5), the backend-independent half: which steps may be a
// graph, what they are padded to, the recorder that holds a step's launches and index data,
// and the cache of instantiated graphs. The CUDA backend (cuda_backend_graphs.cc) records into
// it.
//
// Why a step can replay a graph at all: every launch of a recorded decode step uses device
// pointers that do not move from step to step —
//   - per-token rows are padded to a bucket (kDecodeBuckets), so grids and GEMM shapes repeat;
//   - the step's index data (token ids, RoPE table, KV slots, page tables, logits rows) lies
//     at fixed offsets of one device arena, uploaded by a cudaMemcpyAsync *before* the graph
//     launches (outside it), so the graph only reads fixed addresses;
//   - page tables are sized for a KV capacity tier (KvCapacityFor) and the attention plan
//     (split count) depends only on (bucket, tier), never on the sequences' actual lengths.
// A graph is keyed by its *signature*: every value baked into its launches (op kinds, model
// and KV pointers, shapes, scalars, arena offsets, internal buffer addresses). A step replays
// a graph only when its signature is identical, so a reallocated activation, a new KV cache or
// another model on the same backend is captured afresh instead of replayed stale.
//
//   step N (bucket B)    Begin ── ops: Record(launch, words...) + ArenaPut(index data) ──┐
//                                                                                        ▼
//   Finish:  arena image ──cudaMemcpyAsync──▶ device arena (fixed address)
//            signature seen with a graph?   yes ──▶ cudaGraphLaunch                (replay)
//                                           seen once ──▶ capture, instantiate, launch
//                                           never ──▶ run the launches eagerly     (warm-up)
#ifndef GLIMPSE_KERNELS_CUDA_BACKEND_DECODE_GRAPHS_H_
#define GLIMPSE_KERNELS_CUDA_BACKEND_DECODE_GRAPHS_H_

#include <cuda_runtime_api.h>

#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/backend.h"

namespace glimpse::kernels::cuda {

// Decode batches are padded up to the next of these sizes (at most 1/4 padding above 16, as
// peers capture up to --max_num_seqs' usual values); larger ones run eagerly.
inline constexpr int32_t kDecodeBuckets[] = {1,  2,  4,   8,   16,  24,  32,  48, 64,
                                             80, 96, 112, 128, 160, 192, 224, 256};
inline constexpr int32_t kMaxGraphBatch = 256;
// KV capacity tiers: powers of two from kMinGraphKvTokens; steps with a longer sequence run
// eagerly. The cap bounds the padded page tables (bucket x capacity pages of int32).
inline constexpr int32_t kMinGraphKvTokens = 256;
inline constexpr int32_t kMaxGraphKvTokens = 1 << 17;

// The bucket `num_tokens` pads to; 0 when it is < 1 or > kMaxGraphBatch.
int32_t DecodeBucketFor(int64_t num_tokens);
// The KV capacity tier (keys per sequence) of a step whose longest sequence has `max_kv_len`
// keys; 0 when above kMaxGraphKvTokens.
int32_t KvCapacityFor(int32_t max_kv_len);

// One recorded launch: enqueues its kernels (or cuBLAS call, or device copy, or collective) on
// `stream` and returns the first error. Must not synchronize, allocate or free: it may run
// under stream capture.
using RecordedLaunch = std::function<cudaError_t(cudaStream_t stream)>;

// Why a step ran eagerly. Every step counts exactly one of: a capture, a replay, or one of these.
enum class GraphEagerReason {
  kDisabled,         // graphs are off (CudaBackendOptions::cuda_graphs, or a failed capture)
  kNotDecode,        // a prefill or mixed prefill + decode step
  kBatchTooLarge,    // more than kMaxGraphBatch sequences
  kLogitsRows,       // the logits rows are not one per token
  kKvCapacity,       // a sequence longer than kMaxGraphKvTokens
  kWarmup,           // the first step with its signature (captured the next time)
  kMidStepSync,      // Free, CopyToBackend or PackMatrix in the middle of a recorded step
  kUnexpectedShape,  // an op whose rows or index arrays do not fit the step's shape
  kCaptureFailed,    // stream capture or instantiation failed (graphs then stay off)
  kTesting,          // CudaBackendOptions::graphs_run_eagerly_for_testing
  kNumReasons,
};
// snake_case name used in counter names, e.g. "not_decode".
const char* GraphEagerReasonName(GraphEagerReason reason);

// Instantiated graphs by signature, at most max_graphs (>= 1; kMaxGraphs unless a test asks
// for fewer; the least recently used is dropped).
// Owns its cudaGraphExec_t objects. Not thread-safe: used by the thread driving the backend,
// with the backend's device current.
class DecodeGraphCache {
 public:
  static constexpr size_t kMaxGraphs = 128;
  enum class Outcome {
    kReplayed,   // an identical signature's graph was launched
    kCaptured,   // `launches` were captured into a new graph, which was launched
    kFirstSeen,  // a signature not seen before: nothing ran; run `launches` eagerly (a warm-up
                 // outside capture: lazy module loads and cuBLAS's first-call setup), and the
                 // next step with this signature is captured
    kFailed,     // capture or instantiation failed (see *error); nothing of `launches` ran
  };

  explicit DecodeGraphCache(size_t max_graphs = kMaxGraphs) : max_graphs_(max_graphs) {}
  ~DecodeGraphCache() { Clear(); }
  DecodeGraphCache(const DecodeGraphCache&) = delete;
  DecodeGraphCache& operator=(const DecodeGraphCache&) = delete;

  // Replays the graph of `signature` on `stream`, or (when the signature was seen before)
  // captures `launches` (in order) into a new one and launches it. On kFailed the stream is
  // left out of capture, the error state is cleared, and the caller should run `launches`
  // eagerly; a launch error of the graph itself is returned in *launch_error (kReplayed and
  // kCaptured only).
  Outcome Run(const std::vector<uint64_t>& signature, const std::vector<RecordedLaunch>& launches,
              cudaStream_t stream, std::string* error, cudaError_t* launch_error);

  size_t size() const { return entries_.size(); }
  // Graphs dropped (least recently used) to make room for a capture, since construction.
  int64_t num_evicted() const { return num_evicted_; }
  // Destroys every graph (in-flight launches complete first: CUDA frees them on completion).
  void Clear();

 private:
  struct Entry {
    uint64_t hash = 0;
    std::vector<uint64_t> signature;
    cudaGraphExec_t exec = nullptr;
    uint64_t last_use = 0;
  };

  size_t max_graphs_;
  std::vector<Entry> entries_;
  std::vector<uint64_t> seen_;  // hashes of signatures run once (warm-up), bounded
  uint64_t clock_ = 0;
  int64_t num_evicted_ = 0;
};

// Records the launches of one decode step at a time, holds their index data in the graph
// arena, and at the end of the step replays, captures or runs them (see the file comment).
// Owns the arena (a pinned host image and its device copy), the graph cache and the counters.
// Not thread-safe: used by the thread driving the backend, with the backend's device current.
class DecodeGraphRecorder {
 public:
  struct Options {
    bool enabled = true;                   // CudaBackendOptions::cuda_graphs
    bool run_eagerly_for_testing = false;  // CudaBackendOptions::graphs_run_eagerly_for_testing
  };
  explicit DecodeGraphRecorder(const Options& options) : options_(options) {}
  ~DecodeGraphRecorder();
  DecodeGraphRecorder(const DecodeGraphRecorder&) = delete;
  DecodeGraphRecorder& operator=(const DecodeGraphRecorder&) = delete;

  // Why a step of `shape` cannot be a graph; kNumReasons when it can.
  GraphEagerReason Ineligibility(const ForwardShape& shape) const;
  void CountEager(GraphEagerReason reason) {
    num_eager_[static_cast<size_t>(reason)].fetch_add(1, std::memory_order_relaxed);
  }

  // Starts recording a step of `shape` (eligible). Waits for the previous step's arena upload
  // to finish reading the host image before this step rewrites it.
  void Begin(const ForwardShape& shape);
  bool recording() const { return recording_; }
  int64_t rows() const { return rows_; }
  int64_t bucket() const { return bucket_; }
  int32_t kv_capacity() const { return kv_capacity_; }
  bool empty() const { return launches_.empty(); }

  // The padded size of an op over the step's rows: num_rows must be the step's rows (then
  // *padded = bucket), or for a flat op n must be rows x width (then *padded = bucket x width).
  // false when it is not (the op does not fit the recorded shape).
  bool PaddedRows(int64_t num_rows, int64_t* padded) const;
  bool PaddedElements(int64_t n, int64_t* padded) const;

  // Copies host[0, num_bytes) into the arena image, followed by `fill` bytes up to
  // padded_bytes, and returns its offset (256-byte aligned). An identical put in this step
  // (same host pointer, sizes, fill and bytes) returns the same offset: the forward pass hands
  // every layer the same per-step arrays. copy_padding = false: the padding is never read, so
  // it is neither filled nor uploaded.
  size_t ArenaPut(const void* host, size_t num_bytes, size_t padded_bytes, uint8_t fill,
                  bool copy_padding);
  // The device address of an arena offset. Resolve it inside a launch (when it runs): the
  // device arena is (re)allocated at Finish.
  template <typename T>
  T* ArenaPtr(size_t offset) const {
    return reinterpret_cast<T*>(device_arena_ + offset);
  }

  // Appends a launch and its signature words: an op tag first, then every value the launch
  // bakes in (pointers, shapes, scalars, arena offsets). Anything it reads at run time other
  // than the arena goes into Finish's `extra_signature`.
  template <typename... Words>
  void Record(RecordedLaunch launch, Words... words) {
    launches_.push_back(std::move(launch));
    signature_.push_back(sizeof...(Words));
    (signature_.push_back(ToWord(words)), ...);
  }
  // Launches recorded so far in this step.
  size_t num_launches() const { return launches_.size(); }
  // Replaces the last recorded launch by `launch`, which does what it did and more (an op
  // after it asked it to, e.g. to also write a bf16 copy of its output), and appends `words`
  // to the signature for what changed. Requires a recorded launch.
  template <typename... Words>
  void AmendLast(RecordedLaunch launch, Words... words) {
    launches_.back() = std::move(launch);
    signature_.push_back(sizeof...(Words));
    (signature_.push_back(ToWord(words)), ...);
  }

  // Ends the step: uploads the arena on `stream` (outside any graph), then replays or captures
  // a graph of the launches, or runs them eagerly: always when `eager_reason` is not
  // kNumReasons (counted under it), in testing mode, on a warm-up and after a failed capture.
  // Returns the first error of an eager launch or a graph launch (the caller aborts on it).
  cudaError_t Finish(cudaStream_t stream, const std::vector<uint64_t>& extra_signature,
                     GraphEagerReason eager_reason);

  std::vector<BackendCounter> Counters() const;
  // One line for logs: captures, replays, eager steps by reason ("" before the first step).
  std::string Summary() const;

  template <typename T>
  static uint64_t ToWord(T v) {
    if constexpr (std::is_pointer_v<T>) {
      return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(v));
    } else if constexpr (std::is_same_v<T, float>) {
      return std::bit_cast<uint32_t>(v);
    } else if constexpr (std::is_enum_v<T>) {
      return static_cast<uint64_t>(v);
    } else {
      static_assert(std::is_integral_v<T>, "signature words are pointers, numbers or enums");
      return static_cast<uint64_t>(v);
    }
  }

 private:
  struct ArenaMemo {
    const void* host = nullptr;
    size_t num_bytes = 0;
    size_t padded_bytes = 0;
    uint8_t fill = 0;
    size_t offset = 0;
  };

  cudaError_t RunEagerly(cudaStream_t stream) const;
  void ClearStep();
  void GrowHostArena(size_t min_bytes);

  Options options_;
  bool recording_ = false;
  bool capture_failed_ = false;  // graphs stay off for the recorder's lifetime
  int64_t rows_ = 0;
  int64_t bucket_ = 0;
  int32_t kv_capacity_ = 0;
  std::vector<RecordedLaunch> launches_;
  std::vector<uint64_t> signature_;
  std::vector<ArenaMemo> arena_memos_;
  std::vector<std::pair<size_t, size_t>> arena_copies_;  // (offset, bytes) to upload

  // Arena: a pinned host image [host_capacity_] bytes (host_used_ written this step) and its
  // device copy [device_capacity_] bytes; uploaded_ is recorded after each upload, so that the
  // image is rewritten only once the copy has read it.
  uint8_t* host_arena_ = nullptr;
  size_t host_capacity_ = 0;
  size_t host_used_ = 0;
  uint8_t* device_arena_ = nullptr;
  size_t device_capacity_ = 0;
  cudaEvent_t uploaded_ = nullptr;

  DecodeGraphCache cache_;
  // Counters are written on the backend's thread and read by Counters() from any thread
  // (metrics scrapes): relaxed atomics, each value monotonic except num_cached_.
  std::atomic<int64_t> num_captures_{0};
  std::atomic<int64_t> num_replays_{0};
  std::array<std::atomic<int64_t>, static_cast<size_t>(GraphEagerReason::kNumReasons)>
      num_eager_{};
  std::atomic<int64_t> num_cached_{0};   // cache_.size() after the last step.
  std::atomic<int64_t> num_evicted_{0};  // cache_.num_evicted() after the last step.
};

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_BACKEND_DECODE_GRAPHS_H_
