#include "kernels/cuda/backend/decode_graphs.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "spdlog/spdlog.h"

namespace glimpse::kernels::cuda {
namespace {

constexpr size_t kArenaAlign = 256;
constexpr size_t kMinHostArenaBytes = size_t{64} << 10;

constexpr size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

// FNV-1a over the words: a cheap first comparison before the full one.
uint64_t Hash(const std::vector<uint64_t>& words) {
  uint64_t hash = 1469598103934665603ull;
  for (uint64_t w : words) hash = (hash ^ w) * 1099511628211ull;
  return hash;
}

std::string Describe(const std::string& what, cudaError_t err) {
  return absl::StrCat(what, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")");
}

// Resource failures of the arena are as fatal as any failed CUDA call inside an op.
void CheckArena(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  spdlog::critical("CUDA graphs: {}; aborting", Describe(what, err));
  CHECK(err == cudaSuccess);
}

const char* ReasonHelp(GraphEagerReason reason) {
  switch (reason) {
    case GraphEagerReason::kDisabled:
      return "CUDA graphs are off (--cuda_graphs=false, or a capture failed)";
    case GraphEagerReason::kNotDecode:
      return "a prefill or mixed prefill + decode step";
    case GraphEagerReason::kBatchTooLarge:
      return "a decode step of more than 256 sequences";
    case GraphEagerReason::kLogitsRows:
      return "a decode step whose logits rows are not one per sequence";
    case GraphEagerReason::kKvCapacity:
      return "a decode step with a sequence longer than the largest graph KV capacity";
    case GraphEagerReason::kWarmup:
      return "the first decode step of its shape (captured the next time)";
    case GraphEagerReason::kMidStepSync:
      return "a free or host copy in the middle of a recorded step";
    case GraphEagerReason::kUnexpectedShape:
      return "an op that did not fit the recorded step's shape";
    case GraphEagerReason::kCaptureFailed:
      return "the step whose capture failed (graphs then stay off)";
    case GraphEagerReason::kTesting:
      return "testing mode: the graph path run eagerly";
    case GraphEagerReason::kNumReasons:
      break;
  }
  return "";
}

}  // namespace

const char* GraphEagerReasonName(GraphEagerReason reason) {
  switch (reason) {
    case GraphEagerReason::kDisabled:
      return "disabled";
    case GraphEagerReason::kNotDecode:
      return "not_decode";
    case GraphEagerReason::kBatchTooLarge:
      return "batch_too_large";
    case GraphEagerReason::kLogitsRows:
      return "logits_rows";
    case GraphEagerReason::kKvCapacity:
      return "kv_capacity";
    case GraphEagerReason::kWarmup:
      return "warmup";
    case GraphEagerReason::kMidStepSync:
      return "mid_step_sync";
    case GraphEagerReason::kUnexpectedShape:
      return "unexpected_shape";
    case GraphEagerReason::kCaptureFailed:
      return "capture_failed";
    case GraphEagerReason::kTesting:
      return "testing";
    case GraphEagerReason::kNumReasons:
      break;
  }
  return "unknown";
}

int32_t DecodeBucketFor(int64_t num_tokens) {
  if (num_tokens < 1) return 0;
  for (int32_t bucket : kDecodeBuckets) {
    if (num_tokens <= bucket) return bucket;
  }
  return 0;
}

int32_t KvCapacityFor(int32_t max_kv_len) {
  int32_t capacity = kMinGraphKvTokens;
  while (capacity < max_kv_len) {
    if (capacity >= kMaxGraphKvTokens) return 0;
    capacity *= 2;
  }
  return capacity;
}

// ---- DecodeGraphCache -----------------------------------------------------------------------

DecodeGraphCache::Outcome DecodeGraphCache::Run(const std::vector<uint64_t>& signature,
                                                const std::vector<RecordedLaunch>& launches,
                                                cudaStream_t stream, std::string* error,
                                                cudaError_t* launch_error) {
  const uint64_t hash = Hash(signature);
  ++clock_;
  for (Entry& e : entries_) {
    if (e.hash == hash && e.signature == signature) {
      e.last_use = clock_;
      *launch_error = cudaGraphLaunch(e.exec, stream);
      return Outcome::kReplayed;
    }
  }
  if (std::find(seen_.begin(), seen_.end(), hash) == seen_.end()) {
    constexpr size_t kMaxSeen = 1024;
    if (seen_.size() >= kMaxSeen) seen_.clear();
    seen_.push_back(hash);
    return Outcome::kFirstSeen;
  }

  // Thread-local mode: only this thread's unsafe calls (a synchronization or allocation by a
  // recorded launch, which would be a bug) invalidate the capture; other threads are free.
  cudaError_t err = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    *error = Describe("cudaStreamBeginCapture", err);
    return Outcome::kFailed;
  }
  size_t failed_at = launches.size();
  for (size_t i = 0; i < launches.size(); ++i) {
    err = launches[i](stream);
    if (err != cudaSuccess) {
      failed_at = i;
      break;
    }
  }
  // Capture must always be ended, even after a failed launch, to return the stream to normal.
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(stream, &graph);
  if (err != cudaSuccess || end != cudaSuccess || graph == nullptr) {
    if (graph != nullptr) (void)cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    *error = err != cudaSuccess ? Describe(absl::StrCat("capturing launch ", failed_at, " of ",
                                                        launches.size()),
                                           err)
                                : Describe("cudaStreamEndCapture", end);
    return Outcome::kFailed;
  }
  cudaGraphExec_t exec = nullptr;
  err = cudaGraphInstantiate(&exec, graph, 0);
  (void)cudaGraphDestroy(graph);  // the executable graph does not need it
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    *error = Describe("cudaGraphInstantiate", err);
    return Outcome::kFailed;
  }
  if (!entries_.empty() && entries_.size() >= max_graphs_) {
    auto lru = std::min_element(entries_.begin(), entries_.end(),
                                [](const Entry& a, const Entry& b) {
                                  return a.last_use < b.last_use;
                                });
    (void)cudaGraphExecDestroy(lru->exec);
    entries_.erase(lru);
    ++num_evicted_;
  }
  entries_.push_back(Entry{hash, signature, exec, clock_});
  *launch_error = cudaGraphLaunch(exec, stream);
  return Outcome::kCaptured;
}

void DecodeGraphCache::Clear() {
  for (Entry& e : entries_) (void)cudaGraphExecDestroy(e.exec);
  entries_.clear();
  seen_.clear();
}

// ---- DecodeGraphRecorder --------------------------------------------------------------------

DecodeGraphRecorder::~DecodeGraphRecorder() {
  // The owner drained its stream and keeps its device current while members are destroyed.
  cache_.Clear();
  if (uploaded_ != nullptr) (void)cudaEventDestroy(uploaded_);
  if (host_arena_ != nullptr) (void)cudaFreeHost(host_arena_);
  if (device_arena_ != nullptr) (void)cudaFree(device_arena_);
}

GraphEagerReason DecodeGraphRecorder::Ineligibility(const ForwardShape& shape) const {
  if (!options_.enabled || capture_failed_) return GraphEagerReason::kDisabled;
  if (!shape.decode_only || shape.num_tokens != shape.num_seqs) {
    return GraphEagerReason::kNotDecode;
  }
  if (DecodeBucketFor(shape.num_tokens) == 0) return GraphEagerReason::kBatchTooLarge;
  if (shape.num_logits_rows != shape.num_tokens) return GraphEagerReason::kLogitsRows;
  if (KvCapacityFor(shape.max_kv_len) == 0) return GraphEagerReason::kKvCapacity;
  return GraphEagerReason::kNumReasons;
}

void DecodeGraphRecorder::Begin(const ForwardShape& shape) {
  CHECK(!recording_);
  if (uploaded_ == nullptr) {
    CheckArena(cudaEventCreateWithFlags(&uploaded_, cudaEventDisableTiming), "cudaEventCreate");
  } else {
    // The previous step's upload may still be reading the host image this step rewrites.
    CheckArena(cudaEventSynchronize(uploaded_), "waiting for the previous arena upload");
  }
  ClearStep();
  rows_ = shape.num_tokens;
  bucket_ = DecodeBucketFor(shape.num_tokens);
  kv_capacity_ = KvCapacityFor(shape.max_kv_len);
  CHECK(bucket_ > 0 && kv_capacity_ > 0);
  recording_ = true;
}

void DecodeGraphRecorder::ClearStep() {
  launches_.clear();
  signature_.clear();
  arena_memos_.clear();
  arena_copies_.clear();
  host_used_ = 0;
}

bool DecodeGraphRecorder::PaddedRows(int64_t num_rows, int64_t* padded) const {
  if (num_rows != rows_) return false;
  *padded = bucket_;
  return true;
}

bool DecodeGraphRecorder::PaddedElements(int64_t n, int64_t* padded) const {
  if (rows_ <= 0 || n <= 0 || n % rows_ != 0) return false;
  *padded = n / rows_ * bucket_;
  return true;
}

void DecodeGraphRecorder::GrowHostArena(size_t min_bytes) {
  const size_t capacity = std::max({min_bytes, 2 * host_capacity_, kMinHostArenaBytes});
  uint8_t* grown = nullptr;
  CheckArena(cudaHostAlloc(reinterpret_cast<void**>(&grown), capacity, cudaHostAllocDefault),
             "allocating the pinned graph arena");
  if (host_arena_ != nullptr) {
    // Begin waited for the last upload, and this step has not uploaded yet.
    std::memcpy(grown, host_arena_, host_used_);
    CheckArena(cudaFreeHost(host_arena_), "freeing the pinned graph arena");
  }
  host_arena_ = grown;
  host_capacity_ = capacity;
}

size_t DecodeGraphRecorder::ArenaPut(const void* host, size_t num_bytes, size_t padded_bytes,
                                     uint8_t fill, bool copy_padding) {
  CHECK(recording_ && padded_bytes >= num_bytes);
  for (const ArenaMemo& m : arena_memos_) {
    if (m.host == host && m.num_bytes == num_bytes && m.padded_bytes == padded_bytes &&
        m.fill == fill && std::memcmp(host, host_arena_ + m.offset, num_bytes) == 0) {
      return m.offset;
    }
  }
  const size_t offset = RoundUp(host_used_, kArenaAlign);
  const size_t end = offset + std::max<size_t>(padded_bytes, 1);
  if (end > host_capacity_) GrowHostArena(end);
  if (num_bytes > 0) std::memcpy(host_arena_ + offset, host, num_bytes);
  if (copy_padding) std::memset(host_arena_ + offset + num_bytes, fill, padded_bytes - num_bytes);
  host_used_ = end;
  const size_t copy_bytes = copy_padding ? padded_bytes : num_bytes;
  if (copy_bytes > 0) {
    // One upload for neighbouring regions (the alignment gap between them is copied along).
    if (!arena_copies_.empty() &&
        arena_copies_.back().first + arena_copies_.back().second + kArenaAlign >= offset) {
      arena_copies_.back().second = offset + copy_bytes - arena_copies_.back().first;
    } else {
      arena_copies_.emplace_back(offset, copy_bytes);
    }
  }
  arena_memos_.push_back({host, num_bytes, padded_bytes, fill, offset});
  return offset;
}

cudaError_t DecodeGraphRecorder::RunEagerly(cudaStream_t stream) const {
  for (const RecordedLaunch& launch : launches_) {
    const cudaError_t err = launch(stream);
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

cudaError_t DecodeGraphRecorder::Finish(cudaStream_t stream,
                                        const std::vector<uint64_t>& extra_signature,
                                        GraphEagerReason eager_reason) {
  CHECK(recording_);
  recording_ = false;
  if (launches_.empty()) {  // nothing to run (an op abandoned the recording at once)
    if (eager_reason != GraphEagerReason::kNumReasons) CountEager(eager_reason);
    ClearStep();
    return cudaSuccess;
  }
  // The device arena: grown (at a new address, which changes every signature) when the image
  // outgrew it. The stream may still run a graph that reads the old one.
  if (device_capacity_ < host_used_) {
    if (device_arena_ != nullptr) {
      CheckArena(cudaStreamSynchronize(stream), "draining the stream before the arena grows");
      CheckArena(cudaFree(device_arena_), "freeing the graph arena");
      device_arena_ = nullptr;
    }
    // At least the pinned arena's capacity (64 KiB at first, doubling): every growth changes
    // every signature, so the graphs captured before it never replay again. Growing in step
    // with the host arena instead of with each step's image keeps that to the rare step that
    // outgrows the host arena too (found on the CPU emulation of CUDA: without it, the batch-64
    // step's image grew the arena and the smaller buckets all had to be captured again).
    const size_t capacity = std::max({host_used_, 2 * device_capacity_, host_capacity_});
    CheckArena(cudaMalloc(reinterpret_cast<void**>(&device_arena_), capacity),
               "allocating the graph arena");
    device_capacity_ = capacity;
  }
  // The step's index data to its fixed device address, before (and outside) the graph.
  for (const auto& [offset, num_bytes] : arena_copies_) {
    const cudaError_t err = cudaMemcpyAsync(device_arena_ + offset, host_arena_ + offset,
                                            num_bytes, cudaMemcpyHostToDevice, stream);
    if (err != cudaSuccess) return err;
  }
  if (const cudaError_t err = cudaEventRecord(uploaded_, stream); err != cudaSuccess) return err;

  GraphEagerReason reason = eager_reason;
  if (reason == GraphEagerReason::kNumReasons && options_.run_eagerly_for_testing) {
    reason = GraphEagerReason::kTesting;
  }
  if (reason != GraphEagerReason::kNumReasons) {
    CountEager(reason);
    const cudaError_t err = RunEagerly(stream);
    ClearStep();
    return err;
  }
  signature_.insert(signature_.end(), extra_signature.begin(), extra_signature.end());
  signature_.push_back(ToWord(device_arena_));
  std::string error;
  cudaError_t err = cudaSuccess;
  switch (cache_.Run(signature_, launches_, stream, &error, &err)) {
    case DecodeGraphCache::Outcome::kReplayed:
      num_replays_.fetch_add(1, std::memory_order_relaxed);
      break;
    case DecodeGraphCache::Outcome::kCaptured:
      num_captures_.fetch_add(1, std::memory_order_relaxed);
      num_cached_.store(static_cast<int64_t>(cache_.size()), std::memory_order_relaxed);
      num_evicted_.store(cache_.num_evicted(), std::memory_order_relaxed);
      spdlog::debug("CUDA graphs: captured decode bucket {} (KV capacity {} keys, {} launches); "
                    "{} graphs cached", bucket_, kv_capacity_, launches_.size(), cache_.size());
      break;
    case DecodeGraphCache::Outcome::kFirstSeen:
      CountEager(GraphEagerReason::kWarmup);
      err = RunEagerly(stream);
      break;
    case DecodeGraphCache::Outcome::kFailed:
      capture_failed_ = true;
      spdlog::error("CUDA graphs: capturing a decode step failed: {}; every step runs eagerly "
                    "from now on (a bug: please report; --cuda_graphs=false hides it)",
                    error);
      CountEager(GraphEagerReason::kCaptureFailed);
      err = RunEagerly(stream);
      break;
  }
  ClearStep();
  return err;
}

std::vector<BackendCounter> DecodeGraphRecorder::Counters() const {
  std::vector<BackendCounter> counters;
  counters.push_back({"cuda_graph_captures_total", num_captures_.load(std::memory_order_relaxed),
                      "Decode steps captured into a new CUDA graph (which then ran)."});
  counters.push_back({"cuda_graph_replays_total", num_replays_.load(std::memory_order_relaxed),
                      "Decode steps that replayed a captured CUDA graph."});
  for (size_t r = 0; r < num_eager_.size(); ++r) {
    const auto reason = static_cast<GraphEagerReason>(r);
    counters.push_back({absl::StrCat("cuda_graph_eager_", GraphEagerReasonName(reason),
                                     "_steps_total"),
                        num_eager_[r].load(std::memory_order_relaxed),
                        absl::StrCat("Steps run eagerly: ", ReasonHelp(reason),
                                                    ".")});
  }
  counters.push_back({"cuda_graphs_cached", num_cached_.load(std::memory_order_relaxed),
                      "Instantiated CUDA graphs held (a gauge, not monotonic)."});
  counters.push_back({"cuda_graph_evictions_total", num_evicted_.load(std::memory_order_relaxed),
                      absl::StrCat("Captured graphs dropped, least recently used first, to make "
                                   "room in the full cache (",
                                   DecodeGraphCache::kMaxGraphs,
                                   "): a steady rise means decode steps of more shapes (batch "
                                   "bucket x KV tier) than that, each captured again and again.")});
  return counters;
}

std::string DecodeGraphRecorder::Summary() const {
  int64_t total = num_captures_ + num_replays_;
  for (const std::atomic<int64_t>& n : num_eager_) total += n;
  if (total == 0) return "";
  std::string eager;
  for (size_t r = 0; r < num_eager_.size(); ++r) {
    if (num_eager_[r].load() == 0) continue;
    absl::StrAppend(&eager, eager.empty() ? "" : ", ",
                    GraphEagerReasonName(static_cast<GraphEagerReason>(r)), " ", num_eager_[r].load());
  }
  return absl::StrCat(num_captures_.load(), " captures, ", num_replays_.load(), " replays, eager steps: ",
                      eager.empty() ? "none" : eager);
}

}  // namespace glimpse::kernels::cuda
