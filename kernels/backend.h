// The compute interface the transformer forward is written against. Two implementations:
// `cpu/` (fp32 arithmetic, batch-invariant) and `cuda/` (later). Every pointer an op takes is
// memory of that backend (host memory for the CPU backend, device memory for CUDA) unless
// the parameter says "host"; per-step index data (ids, positions, page tables) always comes as
// host arrays in the op's params, and a device backend uploads it once per step.
//
// Thread-safety: a Backend is driven by one thread (the engine thread); implementations may
// use their own worker threads inside an op.
#ifndef GLIMPSE_KERNELS_BACKEND_H_
#define GLIMPSE_KERNELS_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/host_work.h"

namespace glimpse::kernels {

// Storage type of a weight tensor, as stored in the model file.
enum class WeightType { kF32, kF16, kBF16, kQ8_0 };

// A row-major weight matrix W[rows][cols] as it lies in the model file (host memory).
// For y = W x, rows = output features, cols = input features. Q8_0 rows are blocks of
// 32 elements: an fp16 scale followed by 32 int8 values (34 bytes).
struct MatrixView {
  WeightType type = WeightType::kF32;
  const void* data = nullptr;  // Not owned.
  int64_t rows = 0;
  int64_t cols = 0;
};

// A weight matrix in the backend's preferred layout and memory. Opaque to callers.
class PackedMatrix {
 public:
  virtual ~PackedMatrix() = default;
  virtual int64_t rows() const = 0;
  virtual int64_t cols() const = 0;
  virtual size_t num_bytes() const = 0;
};

// One layer's paged KV storage: `k` and `v` each hold num_blocks * block_size * num_kv_heads
// * head_dim elements of Backend::KvElementBytes() bytes (fp32 on the CPU; fp32 or bf16 on
// CUDA) in a layout private to the backend (the CPU's is in kernels/cpu/kv_layout.h). Only
// StoreKv and PagedAttention look inside, but every layout keeps the block index outermost:
// block b is the contiguous range [b*S, (b+1)*S) of each tensor, S = block_size * num_kv_heads
// * head_dim elements, so blocks can be copied and swapped whole as bytes.
struct KvLayerView {
  void* k = nullptr;
  void* v = nullptr;
  int32_t block_size = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
};

// Page tables in CSR form (FlashInfer's convention), host memory, int32:
//   the blocks of sequence s are kv_indices[kv_indptr[s] .. kv_indptr[s+1]);
//   its last block holds kv_last_page_len[s] valid slots.
// Queries: the tokens of sequence s are rows query_start[s] .. query_start[s+1] of q, at
// consecutive positions ending at the sequence's last cached position (causal attention:
// a query at position p sees keys 0..p).
struct PagedAttentionParams {
  const float* q = nullptr;  // [num_tokens][num_heads][head_dim]
  float* out = nullptr;      // [num_tokens][num_heads][head_dim]
  KvLayerView kv;
  int32_t num_seqs = 0;
  int32_t num_heads = 0;
  const int32_t* query_start = nullptr;       // host, [num_seqs + 1]
  const int32_t* positions = nullptr;         // host, [num_tokens]
  const int32_t* kv_indptr = nullptr;         // host, [num_seqs + 1]
  const int32_t* kv_indices = nullptr;        // host, [kv_indptr[num_seqs]]
  const int32_t* kv_last_page_len = nullptr;  // host, [num_seqs]
  float scale = 1.0f;                         // Applied to q·k before the softmax.
};

// Writes the new tokens' keys and values into their KV slots.
struct KvStoreParams {
  const float* k = nullptr;  // [num_tokens][num_kv_heads][head_dim]
  const float* v = nullptr;  // [num_tokens][num_kv_heads][head_dim]
  KvLayerView kv;
  int32_t num_tokens = 0;
  const int32_t* slots = nullptr;  // host, [num_tokens]: block * block_size + slot
};

enum class RopeStyle {
  kNormal,  // llama.cpp "normal": rotates adjacent pairs (x[2i], x[2i+1]).
  kNeox,    // llama.cpp "NeoX": rotates (x[i], x[i + rot_dim/2]).
};

struct RopeParams {
  float* x = nullptr;  // [num_tokens][num_heads][head_dim], rotated in place
  int32_t num_tokens = 0;
  int32_t num_heads = 0;
  int32_t head_dim = 0;
  int32_t rot_dim = 0;  // Leading dims of each head that rotate (== head_dim for Llama).
  const int32_t* positions = nullptr;  // host, [num_tokens]
  float freq_base = 10000.0f;
  RopeStyle style = RopeStyle::kNormal;
};

// ---- Step hooks (CUDA graphs, issue #5) ----------------------------------------------------
// What the forward pass tells a backend about a step before running its ops
// (Backend::BeginForward).
struct ForwardShape {
  int64_t num_tokens = 0;
  int32_t num_seqs = 0;
  int64_t num_logits_rows = 0;
  int32_t max_kv_len = 0;    // longest sequence's KV length after the step (its last position + 1)
  bool decode_only = false;  // every sequence contributes exactly one token
};

// A backend's answer to BeginForward.
struct ForwardPlan {
  // > 0: the backend may run every per-token op of this step on padded_rows rows (>= the
  // step's tokens and logits rows), so the forward pass must size its per-token activations
  // and its logits rows for padded_rows rows. Ops still take the step's own row counts; rows
  // past them hold unspecified values. 0: no padding.
  int64_t padded_rows = 0;
};

// One of a backend's own counters (e.g. CUDA graph captures and replays), for logs,
// `glimpse bench` and metrics. Monotonic unless `help` says otherwise.
struct BackendCounter {
  std::string name;  // snake_case, e.g. "cuda_graph_replays_total"
  int64_t value = 0;
  std::string help;
};

// The memory a device backend allocates from (Backend::DeviceMemory), in bytes, as its driver
// reports it now: other processes on the device count too.
struct DeviceMemoryInfo {
  size_t free_bytes = 0;
  size_t total_bytes = 0;
};

// The host rules of Backend::ArgMaxRows and Backend::TopKRows over rows in host memory
// ([num_rows][cols]; outputs as those take them): what their defaults run after copying the
// rows over, and what a backend whose memory is the host's runs in place.
void ArgMaxRowsOnHost(const float* rows, int64_t num_rows, int64_t cols, int32_t* index,
                      float* value);
void TopKRowsOnHost(const float* rows, int64_t num_rows, int64_t cols, int32_t k, int32_t* count,
                    int32_t* index, float* value, float* row_max, double* row_exp_sum,
                    const float* temperature, double* row_exp_sum_t1);

// One copy of a batch (Backend::BatchCopyToHostAsync and the like): num_bytes from src to dst.
struct CopyOp {
  void* dst = nullptr;
  const void* src = nullptr;
  size_t num_bytes = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // Memory of this backend, 64-byte aligned. Free with Free().
  virtual void* Allocate(size_t num_bytes) = 0;
  virtual void Free(void* ptr) = 0;
  // Host memory for what this backend's copies move often and in bulk (a step's logits
  // rows, swapped-out KV blocks): page-locked on a GPU, so that its copy engines reach it
  // directly at full link speed instead of through the driver's bounce buffer, plain memory
  // elsewhere (this default). 64-byte aligned, any thread; free with FreeHost() of the same
  // backend. Usable by every backend of the process (a tensor-parallel group's copies too).
  // Null when the backend cannot (page-locked memory is limited): use plain memory then
  // (kernels::HostBuffer does).
  virtual void* AllocateHost(size_t num_bytes);
  virtual void FreeHost(void* ptr);
  // Copies between host and backend memory. CopyToHost returns with the bytes on the host.
  virtual void CopyToBackend(void* dst, const void* host_src, size_t num_bytes) = 0;
  virtual void CopyToHost(void* host_dst, const void* src, size_t num_bytes) = 0;
  // CopyToHost that may still be under way on return: the bytes are on the host after the
  // next WaitForCopiesToHost() or CopyToHost(); until then host_dst must stay allocated and
  // unread, and src unwritten by the host (backend work enqueued after it is ordered after
  // it). Many of them with one wait cost one round trip instead of one each (a preempted
  // sequence's KV blocks, layer by layer). This default copies at once.
  virtual void CopyToHostAsync(void* host_dst, const void* src, size_t num_bytes) {
    CopyToHost(host_dst, src, num_bytes);
  }
  virtual void WaitForCopiesToHost() {}
  // CopyToBackend from host memory this backend's AllocateHost gave, which may still be under
  // way on return (on a GPU the copy engine reads the page-locked bytes when the stream gets
  // there: no staging copy on the host, no wait). Ordered after the copies and work enqueued
  // before it (host_src may be the destination of a CopyToHostAsync not yet waited for) and
  // before the work enqueued after it (which sees dst written); host_src must stay allocated
  // and unwritten by the host until the next WaitForCopiesToHost() or CopyToHost(). For
  // plain host memory use CopyToBackend. This default waits for the copies to the host, then
  // copies at once.
  virtual void CopyToBackendAsync(void* dst, const void* host_src, size_t num_bytes) {
    WaitForCopiesToHost();
    CopyToBackend(dst, host_src, num_bytes);
  }
  // Greedy decoding's reduction of a step's logits, by the host sampler's greedy rule: for
  // each of num_rows rows of x ([num_rows][cols] fp32, backend memory) the column of its
  // largest value into host_index[r] (NaN never chosen, ties to the lowest column, 0 when no
  // value is above -inf) and that value into host_value[r] (-inf then). Host arrays, written
  // when it returns (as CopyToHost). The default copies the rows over and reduces them here;
  // the CUDA backend reduces on the device, so that 8 bytes a row cross instead of the row.
  virtual void ArgMaxRows(const float* x, int64_t num_rows, int64_t cols, int32_t* host_index,
                          float* host_value);
  // Top-k sampling's reduction of a step's logits (what Sampler::SampleFromCandidates takes):
  // for each of num_rows rows of x ([num_rows][cols] fp32, backend memory), its most likely
  // min(k, number of values above -inf) columns by the sampler's top-k order (value
  // descending, column ascending; NaN and -inf never chosen): their number into
  // host_count[r], the columns in increasing order into host_index[r * k + j] and their values
  // into host_value[r * k + j], j < host_count[r]. k >= 1. With host_row_max and
  // host_row_exp_sum (both or neither), also each row's softmax normalizer at temperature
  // host_temperature[r] (null: 1), what logprobs or a nucleus need of the rest of the row
  // (kernels/cuda/topk_rows.h says what they hold; the host rule sums in column order, the
  // CUDA kernel in a tree), and with host_row_exp_sum_t1 (only with them) the exp sums at
  // temperature 1 besides (a nucleus row's logprobs at another temperature). Host arrays, written
  // (read) when it returns (as CopyToHost). The default copies the rows over and selects here; the
  // CUDA backend selects on the device (kernels/cuda/topk_rows.h), so that k pairs a row cross.
  virtual void TopKRows(const float* x, int64_t num_rows, int64_t cols, int32_t k,
                        int32_t* host_count, int32_t* host_index, float* host_value,
                        float* host_row_max, double* host_row_exp_sum,
                        const float* host_temperature, double* host_row_exp_sum_t1);
  // Copies between two non-overlapping ranges of backend memory, without a trip through the
  // host (KV block copies for copy-on-write prefix sharing).
  virtual void CopyWithinBackend(void* dst, const void* src, size_t num_bytes) = 0;
  // Batches of the copies above, for many small ones at once (a swapped or copied KV block
  // moves a layer's keys and values at a time: 64 copies a block for Llama-3 8B): on a GPU
  // one call and one submission for the lot instead of one each. Each copy is as the single
  // copy of the same name, with its contract; the batch is ordered as a whole as one of them
  // would be, but its copies run in any order: none may write where another of the batch
  // reads or writes. The host sides of the first two must be memory from AllocateHost (on a
  // GPU the batch is a cudaMemcpyBatchAsync, whose pageable-memory handling this does not
  // rely on). These defaults make the copies one at a time.
  virtual void BatchCopyToHostAsync(std::span<const CopyOp> copies);
  virtual void BatchCopyToBackendAsync(std::span<const CopyOp> copies);
  virtual void BatchCopyWithinBackend(std::span<const CopyOp> copies);

  // Bytes of one element of this backend's KV tensors (KvLayerView): how KvCacheStorage sizes
  // blocks and what a memory budget divides by.
  virtual size_t KvElementBytes() const = 0;

  // OK when PagedAttention runs layers of `num_heads` query heads over `num_kv_heads` KV heads
  // (this rank's) of `head_dim` each; otherwise InvalidArgument saying what the backend lacks
  // and what to do. LlamaModel::Load asks before it packs a weight, so that a model the
  // backend's kernels cannot run is refused at load, not at its first step.
  virtual absl::Status CheckAttentionShape(int32_t head_dim, int32_t num_heads,
                                           int32_t num_kv_heads) const {
    (void)head_dim;
    (void)num_heads;
    (void)num_kv_heads;
    return absl::OkStatus();
  }

  // Repacks a weight matrix into this backend's layout. InvalidArgument for shapes the
  // layout cannot hold (e.g. Q8_0 columns not a multiple of 32).
  virtual absl::StatusOr<std::unique_ptr<PackedMatrix>> PackMatrix(const MatrixView& w) = 0;
  // Packs matrices that are multiplied together (MatMuls: q, k and v; gate and up), results in
  // the order of `ws`, each owned and freed on its own. A backend may place them so that
  // MatMuls runs them as fewer products (the CUDA backend: one allocation, rows adjacent).
  // Errors as PackMatrix's, for the first matrix that fails.
  virtual absl::StatusOr<std::vector<std::unique_ptr<PackedMatrix>>> PackMatrices(
      std::span<const MatrixView> ws) {
    std::vector<std::unique_ptr<PackedMatrix>> packed;
    packed.reserve(ws.size());
    for (const MatrixView& w : ws) {
      absl::StatusOr<std::unique_ptr<PackedMatrix>> one = PackMatrix(w);
      if (!one.ok()) return one.status();
      packed.push_back(std::move(*one));
    }
    return packed;
  }

  // y[m][n] = sum_k x[m][k] * W[n][k] for m < num_rows. x: [num_rows][W.cols] fp32,
  // y: [num_rows][W.rows] fp32.
  virtual void MatMul(const float* x, int64_t num_rows, const PackedMatrix& w, float* y) = 0;
  // ys[j] = x ws[j]ᵀ for every j: one input, several matrices of its width (a Llama block's
  // q, k and v; gate and up). Results as MatMul per matrix (to the backend's rounding); a
  // backend may prepare x once for all of them (the CUDA backend rounds it to bf16 once
  // instead of once per matrix) and join their products (the CUDA backend: matrices packed
  // together whose outputs are adjacent, and same-shape matrices, PlanProjectionGemms).
  virtual void MatMuls(const float* x, int64_t num_rows, std::span<const PackedMatrix* const> ws,
                       std::span<float* const> ys) {
    for (size_t j = 0; j < ws.size(); ++j) MatMul(x, num_rows, *ws[j], ys[j]);
  }

  // out[i][:] = row ids[i] of `table` widened to fp32. ids: host, [num_ids].
  virtual void EmbeddingLookup(const MatrixView& table, const int32_t* ids, int64_t num_ids,
                               float* out) = 0;
  // out[m][:] = x[m][:] / sqrt(mean(x[m]^2) + eps) * weight[:]. weight: fp32 [dim].
  virtual void RmsNorm(const float* x, const float* weight, int64_t num_rows, int64_t dim,
                       float eps, float* out) = 0;
  virtual void Rope(const RopeParams& params) = 0;
  virtual void StoreKv(const KvStoreParams& params) = 0;
  virtual void PagedAttention(const PagedAttentionParams& params) = 0;
  // out[i] = silu(gate[i]) * up[i] for i < n.
  virtual void SiluMul(const float* gate, const float* up, int64_t n, float* out) = 0;
  // x[i] += y[i] for i < n.
  virtual void AddInPlace(float* x, const float* y, int64_t n) = 0;
  // The residual add and the norm after it (a Llama block's x += proj; xn = RmsNorm(x)):
  // x[m][:] += y[m][:], then out[m][:] = RmsNorm(x[m][:]) * weight[:] over the updated x;
  // out may not alias x or y. Results as AddInPlace then RmsNorm give them; a backend may run
  // both in one pass (the CUDA backend: one fused kernel instead of two launches).
  virtual void AddRmsNorm(float* x, const float* y, const float* weight, int64_t num_rows,
                          int64_t dim, float eps, float* out) {
    AddInPlace(x, y, num_rows * dim);
    RmsNorm(x, weight, num_rows, dim, eps, out);
  }
  // out[i][:] = x[rows[i]][:]. rows: host, [num_rows].
  virtual void GatherRows(const float* x, int64_t dim, const int32_t* rows, int64_t num_rows,
                          float* out) = 0;

  // Tensor parallelism (model/tensor_parallel.h): x[i] becomes the sum of x[i] over every rank
  // of the tensor-parallel group this backend is a rank of, for i < n, in place; afterwards
  // every rank holds the same values. A collective: every rank must call it, in the same
  // order with the same n, each from the thread driving that rank's backend (ranks run
  // concurrently, so one thread cannot drive two ranks). In a group of one it leaves x as it
  // is (the CUDA backend still runs its one-rank NCCL all-reduce, so that one GPU exercises the
  // multi-GPU path). The summation order across ranks is the implementation's: a split model
  // matches the unsplit one to fp32 reassociation, not bitwise.
  virtual void AllReduceSum(float* x, int64_t n) = 0;

  // ---- Step hooks (CUDA graphs, issue #5; defaults do nothing) ----------------------------
  // The forward pass brackets each step's ops with BeginForward / EndForward (ForwardScope
  // below), so that a backend may defer, batch or replay them: the CUDA backend records a
  // decode step's ops and replays a CUDA graph of them. Between the two, an op's results are
  // only guaranteed visible through CopyToHost (which runs everything enqueued before it) or
  // after EndForward. Steps do not nest.
  virtual ForwardPlan BeginForward(const ForwardShape& shape) {
    (void)shape;
    return {};
  }
  virtual void EndForward() {}
  // Host work for the current step (between BeginForward and EndForward) to do while its
  // device work runs (HostWork); null: none. The backend runs it at most once and forgets it
  // by EndForward; what it leaves, the caller runs. This default runs it at once: ops that run
  // on the host leave nothing to overlap, and the work's results (a step's outputs) are out
  // soonest. A GPU backend runs it once the step's launches are enqueued, before the host
  // first waits for the device.
  virtual void OverlapHostWork(HostWork* work) {
    if (work != nullptr) work->Run();
  }
  // The most rows BeginForward may pad a step of at most `rows` token rows (or logits rows)
  // to (ForwardPlan::padded_rows; at least `rows`): what activations reserved for `rows`
  // must hold so that no such step grows them (LlamaModel::ReserveActivations). No padding by
  // default.
  virtual int64_t MaxPaddedRows(int64_t rows) const { return rows; }
  // The backend's own counters (none by default). Unlike the ops, callable from any thread
  // (metrics scrapes read it while the engine thread runs steps); the list of names is fixed
  // for a backend's lifetime.
  virtual std::vector<BackendCounter> Counters() const { return {}; }
  // The device memory that Allocate, PackMatrix and KV caches take from (a GPU's), or nullopt
  // for a backend that allocates host memory (the CPU backend) or cannot tell. Called between
  // steps (`glimpse serve` sizes the KV cache with it once the weights are loaded).
  virtual std::optional<DeviceMemoryInfo> DeviceMemory() { return std::nullopt; }
};

// Calls backend.BeginForward on construction and EndForward on destruction, so that every
// return path of a forward pass ends its step. Borrows the backend (must outlive the scope).
class ForwardScope {
 public:
  // `host_work` (may be null): Backend::OverlapHostWork's, for this step.
  ForwardScope(Backend& backend, const ForwardShape& shape, HostWork* host_work = nullptr)
      : backend_(backend), plan_(backend.BeginForward(shape)) {
    backend.OverlapHostWork(host_work);
  }
  ~ForwardScope() { backend_.EndForward(); }
  ForwardScope(const ForwardScope&) = delete;
  ForwardScope& operator=(const ForwardScope&) = delete;

  const ForwardPlan& plan() const { return plan_; }

 private:
  Backend& backend_;
  ForwardPlan plan_;
};

}  // namespace glimpse::kernels

#endif  // GLIMPSE_KERNELS_BACKEND_H_
