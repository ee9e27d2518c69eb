// CudaBackend (cuda_backend_impl.h): CUDA graphs of decode steps: BeginForward / EndForward,
// the end of a recorded step, and every op's recorded launch (Record*).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/backend/cuda_backend_impl.h"
#include "kernels/cuda/backend/decode_graphs.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/kv_append.h"
#include "kernels/cuda/paged_decode_attention.h"
#include "kernels/cuda/rope_table.h"
#include "kernels/cuda/tensor_parallel.h"
#include "kernels/cuda/weight_convert.h"
#include "spdlog/spdlog.h"

namespace glimpse::kernels::cuda::internal {
namespace {

// ---- Decode graphs --------------------------------------------------------------------------
// A decode step of <= 256 sequences (DecodeGraphRecorder::Ineligibility) is recorded between
// BeginForward and CopyToHost / EndForward instead of run: every op pads its rows to the
// step's bucket, writes its host arrays into the graph arena (fixed offsets), and appends its
// launch with the signature words of what the launch bakes in (decode_graphs.h). Padded rows
// are harmless: token id 0, RoPE position 0, KV slot -1 (kv_append skips it), an empty page
// table (attention writes o = 0) and logits row 0; only the step's own rows reach the caller.
// The attention plan is made for `bucket` sequences of the step's KV capacity tier, so it
// does not change while sequences grow within the tier.
//
// Launches read the arena and this backend's growable graph buffers (graph_activations_bf16_,
// graph_norm_input_, graph_attention_workspace_) when they run, through `this`: Finish reserves
// those first and adds their addresses to the signature, so a regrown buffer means a new
// capture.

// Signature op tags (the first word of each op's words).
enum class GraphOp : uint32_t {
  kEmbedding = 1,
  kRmsNorm,
  kMatMul,
  kRope,
  kStoreKv,
  kAttention,
  kSiluMul,
  kAddInPlace,
  kGatherRows,
  kAllReduceSum,
  kAddRmsNorm,
  kCastForMatMuls,
  kGemm,
  kWithBf16Copy,      // amends the launch before: it also writes its output's bf16 copy
  kRopeSecondTensor,  // amends the RoPE before: it also rotates a second tensor (k)
  kStoreKvInRope,     // amends the RoPE of q and k before: it also appends k and v
};

// The split-KV workspace the decode attention of a recorded step needs at its largest over
// every bucket of a tier of `capacity_pages` pages per sequence. Not proportional to the rows:
// the plan splits until (sequences x kv heads x chunks) fills the device, so small buckets
// split deepest; the minimum chunk length caps that at short tiers, which is why the largest
// is searched rather than bounded.
size_t LargestGraphDecodeWorkspace(int32_t capacity_pages, int32_t num_kv_heads, int32_t block_size,
                                   int32_t num_heads, int32_t head_dim, int32_t num_sms) {
  size_t largest = 0;
  std::vector<int32_t> indptr;
  for (const int32_t bucket : kDecodeBuckets) {
    indptr.resize(bucket + 1);
    for (int32_t s = 0; s <= bucket; ++s) indptr[s] = s * capacity_pages;
    const PagedDecodePlan plan =
        PlanPagedDecode(indptr.data(), bucket, num_kv_heads, block_size, num_sms);
    largest = std::max(largest, PagedDecodeWorkspaceBytes(plan, bucket, num_heads, head_dim));
  }
  return largest;
}

}  // namespace

ForwardPlan CudaBackend::BeginForward(const ForwardShape& shape) {
  Bind();
  if (in_step_) Fail("BeginForward inside a step: steps do not nest");
  in_step_ = true;
  const GraphEagerReason reason = graphs_.Ineligibility(shape);
  if (reason != GraphEagerReason::kNumReasons) {
    graphs_.CountEager(reason);
    return {};
  }
  graph_step_ = GraphStepState{};
  graphs_.Begin(shape);
  ForwardPlan plan;
  plan.padded_rows = graphs_.bucket();
  return plan;
}

int64_t CudaBackend::MaxPaddedRows(int64_t rows) const {
  // Buckets grow with the rows: a step of fewer rows pads to this bucket or a smaller one.
  return std::max<int64_t>(rows, DecodeBucketFor(rows));
}

void CudaBackend::EndForward() {
  Bind();
  if (graphs_.recording()) FinishGraphStep(GraphEagerReason::kNumReasons);
  // A step that never waited (no logits rows): its work runs now, behind the launches.
  if (HostWork* work = std::exchange(host_work_, nullptr); work != nullptr) work->Run();
  in_step_ = false;
}

void CudaBackend::OverlapHostWork(HostWork* work) {
  if (!in_step_) Fail("OverlapHostWork outside a step (ForwardScope hands it over)");
  host_work_ = work;
}

std::vector<BackendCounter> CudaBackend::Counters() const {
  std::vector<BackendCounter> counters = graphs_.Counters();
  counters.push_back({"cuda_attention_tensor_core_calls_total", tensor_core_attention_calls_,
                      "PagedAttention calls (layers x steps) run by the tensor-core attention "
                      "kernel (bf16 KV cache, steps with a multi-token sequence), not graphed"});
  counters.push_back({"cuda_attention_wide_calls_total", wide_attention_calls_,
                      "Of those, the calls run by its 128-row mma.sync variant "
                      "(--cuda_prefill_attention=mma_sync_wide)"});
  counters.push_back({"cuda_attention_wgmma_calls_total", wgmma_attention_calls_,
                      "Of those, the calls run by its wgmma variant "
                      "(--cuda_prefill_attention=wgmma)"});
  counters.push_back({"cuda_attention_wgmma_pipelined_calls_total", pipelined_attention_calls_,
                      "Of those, the calls run by its TMA-fed pipelined wgmma variant "
                      "(--cuda_prefill_attention=wgmma_pipelined)"});
  counters.push_back({"cuda_attention_wgmma_pipelined_128_calls_total",
                      pipelined_128_attention_calls_,
                      "Of those, the calls run by its pipelined wgmma variant with 128-key tiles "
                      "(--cuda_prefill_attention=wgmma_pipelined_128)"});
  counters.push_back({"cuda_attention_mma_decode_calls_total", mma_decode_attention_calls_,
                      "PagedAttention calls (layers x steps) run by the tensor-core paged decode "
                      "kernel (--cuda_decode_attention=mma_sync), graphed or not"});
  counters.push_back(
      {"cuda_graph_bf16_casts_folded_total", bf16_casts_folded_,
       "Casts to bf16 before a MatMul that recorded decode steps left out: the "
       "norm, attention or SiluMul before it wrote the bf16 copy (4 per layer, 1 per step)"});
  counters.push_back({"cuda_graph_rope_pairs_fused_total", rope_pairs_fused_,
                      "RoPEs of k that recorded decode steps ran in the launch of q's (1 per "
                      "layer)"});
  counters.push_back({"cuda_graph_kv_appends_fused_total", kv_appends_fused_,
                      "KV appends that recorded decode steps ran in the launch of q's and k's "
                      "RoPE (1 per layer)"});
  counters.push_back(
      {"cuda_gemm_calls_joined_total", gemm_calls_joined_,
       "cuBLAS calls that MatMuls saved, eager or recorded: q, k and v (gate and up) packed "
       "together run as one GEMM in a one-row step; same-shape matrices (k and v, gate and up) "
       "as one strided-batched GEMM otherwise"});
  counters.push_back({"cuda_attention_fp32_tiled_calls_total", fp32_tiled_attention_calls_,
                      "PagedAttention calls (layers x steps) over an fp32 KV cache run by the "
                      "tiled fp32 attention kernel (steps with a multi-token sequence)"});
  return counters;
}

void CudaBackend::FinishGraphStep(GraphEagerReason eager_reason) {
  // Outside capture: growing a buffer drains the stream and reallocates it. A regrown buffer
  // changes every signature, so that the graphs captured before it never replay again: the
  // graph steps have buffers of their own (eager prefills never move them), grown at once to
  // what the largest bucket needs (the sizes are proportional to the rows), not bucket by
  // bucket as batches grow. (Found on the CPU emulation of CUDA: a batch-64 step and the
  // prefills around it regrew the shared buffers and every smaller bucket was captured again.)
  const size_t bucket = static_cast<size_t>(std::max<int64_t>(graphs_.bucket(), 1));
  const size_t to_largest = (kMaxGraphBatch + bucket - 1) / bucket;
  auto reserve_for_largest = [&](DeviceBuffer<uint8_t>& buffer, size_t step_bytes) {
    if (buffer.size() < step_bytes) Reserve(buffer, step_bytes * to_largest);
  };
  reserve_for_largest(graph_activations_bf16_, graph_step_.bf16_bytes);
  reserve_for_largest(graph_norm_input_, graph_step_.norm_bytes);
  // Already the largest any bucket of the step's tier needs (LargestGraphDecodeWorkspace): the
  // split's workspace does not grow with the rows.
  if (graph_attention_workspace_.size() < graph_step_.workspace_bytes) {
    Reserve(graph_attention_workspace_, graph_step_.workspace_bytes);
  }
  const std::vector<uint64_t> extra = {
      DecodeGraphRecorder::ToWord(graph_activations_bf16_.get()),
      DecodeGraphRecorder::ToWord(graph_norm_input_.get()),
      DecodeGraphRecorder::ToWord(graph_attention_workspace_.get()),
      DecodeGraphRecorder::ToWord(graph_attention_workspace_.size()),
      DecodeGraphRecorder::ToWord(cublas_workspace_.get()),
      DecodeGraphRecorder::ToWord(stream_),
  };
  GLIMPSE_CUDA_CHECK(graphs_.Finish(stream_, extra, eager_reason));
  graph_step_ = GraphStepState{};
}

bool CudaBackend::RecordEmbedding(const DeviceTable& t, const int32_t* ids, int64_t num_ids,
                                  float* out) {
  int64_t rows = 0;
  if (!graphs_.PaddedRows(num_ids, &rows)) {
    FinishGraphStep(GraphEagerReason::kUnexpectedShape);
    return false;
  }
  // Padded ids are 0, a valid row: the padded rows compute finite garbage.
  const size_t ids_offset = graphs_.ArenaPut(ids, num_ids * sizeof(int32_t),
                                             rows * sizeof(int32_t), 0, /*copy_padding=*/true);
  EmbeddingParams p;
  p.format = t.format;
  p.table = t.data;
  p.num_rows = t.rows;
  p.cols = t.cols;
  p.num_ids = rows;
  p.out = out;
  graphs_.Record(
      [this, p, ids_offset](cudaStream_t stream) {
        EmbeddingParams run = p;
        run.ids = graphs_.ArenaPtr<const int32_t>(ids_offset);
        return LaunchEmbedding(run, stream);
      },
      GraphOp::kEmbedding, p.format, p.table, p.num_rows, p.cols, rows, out, ids_offset);
  return true;
}

bool CudaBackend::RecordRmsNorm(const float* x, const float* weight, int64_t num_rows,
                                int64_t dim, float eps, float* out) {
  int64_t rows = 0;
  if (!graphs_.PaddedRows(num_rows, &rows)) {
    FinishGraphStep(GraphEagerReason::kUnexpectedShape);
    return false;
  }
  if (out == x) {
    graph_step_.norm_bytes =
        std::max(graph_step_.norm_bytes, static_cast<size_t>(rows) * static_cast<size_t>(dim) * 4);
  }
  graphs_.Record(
      [this, x, weight, rows, dim, eps, out](cudaStream_t stream) {
        return EnqueueRmsNorm(x, weight, rows, dim, eps, out, graph_norm_input_.get(), stream);
      },
      GraphOp::kRmsNorm, x, weight, rows, dim, eps, out);
  OfferBf16Copy(out, rows * dim,
                [this, x, weight, rows, dim, eps, out](cudaStream_t stream, void* out_bf16) {
                  return EnqueueRmsNorm(x, weight, rows, dim, eps, out, graph_norm_input_.get(),
                                        stream, out_bf16);
                });
  return true;
}

bool CudaBackend::RecordMatMul(const float* x, int64_t num_rows, const CudaPackedMatrix& m,
                               float* y) {
  if (m.bf16()) {
    // A cast and a GEMM: the MatMuls of one matrix (whose cast may fold into x's producer).
    const PackedMatrix* const ws[] = {&m};
    float* const ys[] = {y};
    return RecordMatMuls(x, num_rows, ws, ys);
  }
  int64_t rows = 0;
  if (!graphs_.PaddedRows(num_rows, &rows)) {
    FinishGraphStep(GraphEagerReason::kUnexpectedShape);
    return false;
  }
  // An fp32 matrix: the GEMM reads x as it is. `m` is the model's packed weight, alive for the
  // step (the launch only runs within it).
  graphs_.Record([this, x, rows, &m, y](cudaStream_t) { return EnqueueGemm(x, rows, m, y); },
                 GraphOp::kMatMul, x, rows, m.data(), m.rows(), m.cols(), y);
  return true;
}

bool CudaBackend::RecordMatMuls(const float* x, int64_t num_rows,
                                std::span<const PackedMatrix* const> ws,
                                std::span<float* const> ys) {
  int64_t rows = 0;
  if (!graphs_.PaddedRows(num_rows, &rows)) {
    FinishGraphStep(GraphEagerReason::kUnexpectedShape);
    return false;
  }
  const bool bf16 = AsCuda(*ws[0]).bf16();
  if (bf16) {
    const int64_t elements = rows * ws[0]->cols();
    graph_step_.bf16_bytes = std::max(graph_step_.bf16_bytes, static_cast<size_t>(elements) * 2);
    if (!FoldCastIntoProducer(x, elements)) {
      graphs_.Record(
          [this, x, elements](cudaStream_t stream) {
            return LaunchCastF32ToBf16(x, graph_activations_bf16_.get(), elements, stream);
          },
          GraphOp::kCastForMatMuls, x, elements);
    }
  }
  // The model's weights, alive for the step (the launches only run within it).
  const std::vector<ProjectionGemm> gemms = PlanProjectionGemms(ws, ys, rows);
  for (const ProjectionGemm& g : gemms) {
    graphs_.Record(
        [this, x, bf16, rows, g](cudaStream_t) {
          const void* input = bf16 ? static_cast<const void*>(graph_activations_bf16_.get()) : x;
          return EnqueueProjectionGemm(input, rows, g);
        },
        GraphOp::kGemm, g.w, g.n_out, g.k, g.bf16, rows, g.y, g.batch, g.w_stride, g.y_stride, x);
  }
  gemm_calls_joined_ += static_cast<int64_t>(ws.size() - gemms.size());
  return true;
}

bool CudaBackend::RecordRope(const kernels::RopeParams& params) {
  int64_t rows = 0;
  if (!graphs_.PaddedRows(params.num_tokens, &rows)) {
    FinishGraphStep(GraphEagerReason::kUnexpectedShape);
    return false;
  }
  std::vector<int32_t> key = RopeKey(params);
  if (key != graph_step_.rope_key) {
    // The step's (cos, sin) table, padded rows at position 0; q and k of every layer share it.
    std::vector<int32_t> positions(rows, 0);
    std::copy(params.positions, params.positions + params.num_tokens, positions.begin());
    std::vector<float> table(static_cast<size_t>(rows) * (params.rot_dim / 2) * 2);
    FillRopeCosSinTable(positions.data(), static_cast<int32_t>(rows), params.rot_dim,
                        params.freq_base, table.data());
    const size_t num_bytes = table.size() * sizeof(float);
    graph_step_.rope_offset =
        graphs_.ArenaPut(table.data(), num_bytes, num_bytes, 0, /*copy_padding=*/true);
    graph_step_.rope_key = std::move(key);
  }
  const RopeTableParams p = RopeLaunchParams(params, static_cast<int32_t>(rows));
  const size_t table_offset = graph_step_.rope_offset;
  auto launch_rope = [this, table_offset](RopeTableParams run) {
    return [this, run, table_offset](cudaStream_t stream) {
      RopeTableParams with_table = run;
      with_table.cos_sin = graphs_.ArenaPtr<const float>(table_offset);
      return LaunchRopeWithTable(with_table, stream);
    };
  };
  // k right after q, rotated by the same table: one launch rotates both (nothing was recorded
  // in between to read or write k before q's launch runs).
  GraphStepState::RopeLaunch& last = graph_step_.last_rope;
  const RopeTableParams& q = last.params;
  auto span_end = [](const RopeTableParams& r) {
    return r.x + static_cast<int64_t>(r.num_tokens) * r.num_heads * r.head_dim;
  };
  if (last.launch != 0 && last.launch == graphs_.num_launches() && q.x2 == nullptr &&
      last.table_offset == table_offset && q.num_tokens == p.num_tokens &&
      q.head_dim == p.head_dim && q.rot_dim == p.rot_dim && q.style == p.style &&
      (span_end(p) <= q.x || span_end(q) <= p.x)) {
    RopeTableParams both = q;
    both.x2 = p.x;
    both.num_heads2 = p.num_heads;
    graphs_.AmendLast(launch_rope(both), GraphOp::kRopeSecondTensor, p.x, p.num_heads);
    last.params = both;  // still the last launch: k's KV append may join it (RecordStoreKv)
    ++rope_pairs_fused_;
    return true;
  }
  graphs_.Record(launch_rope(p), GraphOp::kRope, p.x, rows, p.num_heads, p.head_dim, p.rot_dim,
                 p.style, table_offset);
  last = {graphs_.num_launches(), p, table_offset};
  return true;
}

bool CudaBackend::RecordStoreKv(const KvStoreParams& params) {
  int64_t rows = 0;
  if (!graphs_.PaddedRows(params.num_tokens, &rows)) {
    FinishGraphStep(GraphEagerReason::kUnexpectedShape);
    return false;
  }
  // Padded slots are -1 (0xFF bytes): kv_append skips them, so the cache is untouched.
  const size_t slots_offset =
      graphs_.ArenaPut(params.slots, params.num_tokens * sizeof(int32_t),
                       rows * sizeof(int32_t), 0xFF, /*copy_padding=*/true);
  const KvAppendParams p = KvAppendLaunchParams(params, static_cast<int32_t>(rows), kv_dtype_);
  // The RoPE of q and k was the last launch (nothing recorded since read k): the same launch
  // writes the rotated k and v into the cache (RopeKvAppend), as LaunchKvAppend would next.
  GraphStepState::RopeLaunch& rope = graph_step_.last_rope;
  const RopeTableParams& qk = rope.params;
  if (rope.launch != 0 && rope.launch == graphs_.num_launches() && qk.x2 == p.k &&
      qk.num_heads2 == p.num_kv_heads && qk.head_dim == p.head_dim && qk.num_tokens == rows &&
      p.token_stride == static_cast<int64_t>(p.num_kv_heads) * p.head_dim &&
      (p.dtype == DType::kF32 || p.fp32_input)) {
    RopeTableParams with_append = qk;
    with_append.kv_append.k_cache = p.k_cache;
    with_append.kv_append.v_cache = p.v_cache;
    with_append.kv_append.dtype = p.dtype;
    with_append.kv_append.page_size = p.page_size;
    with_append.kv_append.v = static_cast<const float*>(p.v);
    const size_t table_offset = rope.table_offset;
    graphs_.AmendLast(
        [this, with_append, table_offset, slots_offset](cudaStream_t stream) {
          RopeTableParams run = with_append;
          run.cos_sin = graphs_.ArenaPtr<const float>(table_offset);
          run.kv_append.slot_mapping = graphs_.ArenaPtr<const int32_t>(slots_offset);
          return LaunchRopeWithTable(run, stream);
        },
        GraphOp::kStoreKvInRope, p.v, p.k_cache, p.v_cache, p.dtype, p.page_size, slots_offset);
    rope = {};
    ++kv_appends_fused_;
    return true;
  }
  graphs_.Record(
      [this, p, slots_offset](cudaStream_t stream) {
        KvAppendParams run = p;
        run.slot_mapping = graphs_.ArenaPtr<const int32_t>(slots_offset);
        return LaunchKvAppend(run, stream);
      },
      GraphOp::kStoreKv, p.k, p.v, p.token_stride, p.k_cache, p.v_cache, rows, p.num_kv_heads,
      p.page_size, p.head_dim, slots_offset);
  return true;
}

// Decode only: query token t is sequence t's one token, at its last position, so its causal
// page table (as in AttentionTables) is the prefix of its sequence's pages up to that position.
// Padded sequences have no pages. The indices region holds `bucket` x capacity pages so that
// its size (and every offset after it) is the same for every step of the tier.
bool CudaBackend::RecordPagedAttention(const PagedAttentionParams& p) {
  const int32_t num_tokens = p.query_start[p.num_seqs];
  int64_t rows = 0;
  if (!graphs_.PaddedRows(num_tokens, &rows) || p.num_seqs != num_tokens) {
    FinishGraphStep(GraphEagerReason::kUnexpectedShape);
    return false;
  }
  const int32_t block_size = p.kv.block_size;
  const int32_t capacity_pages = (graphs_.kv_capacity() + block_size - 1) / block_size;
  std::vector<int32_t> key = AttentionKey(p, num_tokens);
  if (key != graph_step_.attention_key) {
    // [indptr: bucket + 1 | last_len: bucket], then the indices.
    std::vector<int32_t> tables(2 * rows + 1, 0);
    int32_t* indptr = tables.data();
    int32_t* last_len = tables.data() + rows + 1;
    std::vector<int32_t> indices;
    for (int32_t s = 0; s < p.num_seqs; ++s) {
      const int32_t seq_pages = p.kv_indptr[s + 1] - p.kv_indptr[s];
      const int32_t pos = p.positions[s];
      const int32_t pages = pos / block_size + 1;
      if (p.query_start[s] != s || pos < 0 || pages > seq_pages) {
        Fail(absl::StrCat("PagedAttention: decode token of sequence ", s, " at position ", pos,
                          " is outside its ", seq_pages, " blocks of ", block_size));
      }
      if (pages > capacity_pages) {  // ForwardShape::max_kv_len was not the longest sequence
        FinishGraphStep(GraphEagerReason::kKvCapacity);
        return false;
      }
      indices.insert(indices.end(), p.kv_indices + p.kv_indptr[s],
                     p.kv_indices + p.kv_indptr[s] + pages);
      indptr[s + 1] = static_cast<int32_t>(indices.size());
      last_len[s] = pos % block_size + 1;
    }
    for (int64_t s = p.num_seqs; s < rows; ++s) indptr[s + 1] = indptr[s];
    graph_step_.tables_offset = graphs_.ArenaPut(tables.data(), tables.size() * sizeof(int32_t),
                                                 tables.size() * sizeof(int32_t), 0, true);
    graph_step_.indices_offset =
        graphs_.ArenaPut(indices.data(), indices.size() * sizeof(int32_t),
                         static_cast<size_t>(rows) * capacity_pages * sizeof(int32_t), 0,
                         /*copy_padding=*/false);
    // The plan of `bucket` sequences all at capacity: fixed for the tier. A shorter sequence
    // leaves its trailing chunks' blocks idle (they return at once) and the merge reads only
    // its own chunks.
    std::vector<int32_t> full_indptr(rows + 1);
    for (int64_t s = 0; s <= rows; ++s) full_indptr[s] = static_cast<int32_t>(s) * capacity_pages;
    graph_step_.attention_plan = PlanPagedDecode(full_indptr.data(), static_cast<int32_t>(rows),
                                                 p.kv.num_kv_heads, block_size, num_sms_);
    // Planned with the tables, once per step (every layer shares them), not once per layer.
    graph_step_.workspace_bytes =
        std::max(graph_step_.workspace_bytes,
                 LargestGraphDecodeWorkspace(capacity_pages, p.kv.num_kv_heads, block_size,
                                             p.num_heads, p.kv.head_dim, num_sms_));
    graph_step_.attention_key = std::move(key);
  }
  const PagedDecodePlan plan = graph_step_.attention_plan;
  PagedDecodeParams d;
  d.kernel = decode_kernel_;
  d.dtype = kv_dtype_;
  d.fp32_q_and_o = kv_dtype_ == DType::kBF16;
  d.q = p.q;
  d.o = p.out;
  d.lse = nullptr;
  d.kv.k_cache = p.kv.k;
  d.kv.v_cache = p.kv.v;
  d.kv.num_kv_heads = p.kv.num_kv_heads;
  d.kv.page_size = block_size;
  d.kv.head_dim = p.kv.head_dim;
  d.batch = static_cast<int32_t>(rows);
  d.num_qo_heads = p.num_heads;
  d.sm_scale = p.scale;
  d.plan = plan;
  d.merge_counters = MergeCounters(rows * d.kv.num_kv_heads);  // fixed from Init on
  const size_t tables_offset = graph_step_.tables_offset;
  const size_t indices_offset = graph_step_.indices_offset;
  // The launch, writing o's bf16 copy to o_bf16 when not null.
  auto launch = [this, d, rows, tables_offset, indices_offset](cudaStream_t stream, void* o_bf16) {
    PagedDecodeParams run = d;
    run.kv.kv_indptr = graphs_.ArenaPtr<const int32_t>(tables_offset);
    run.kv.kv_last_page_len = graphs_.ArenaPtr<const int32_t>(tables_offset) + rows + 1;
    run.kv.kv_indices = graphs_.ArenaPtr<const int32_t>(indices_offset);
    run.workspace = graph_attention_workspace_.get();
    run.workspace_bytes = graph_attention_workspace_.size();
    run.o_bf16 = o_bf16;
    return LaunchPagedDecode(run, stream);
  };
  graphs_.Record([launch](cudaStream_t stream) { return launch(stream, nullptr); },
                 GraphOp::kAttention, d.q, d.o, d.kv.k_cache, d.kv.v_cache, d.kv.num_kv_heads,
                 block_size, d.kv.head_dim, rows, d.num_qo_heads, d.sm_scale, plan.chunk_keys,
                 plan.num_chunks, tables_offset, indices_offset, d.merge_counters);
  // o is fp32 (the backend's activations) and final in this launch unless a second one merges
  // the split: the o projection's cast may fold into it.
  if (plan.num_chunks == 1 || d.merge_counters != nullptr) {
    OfferBf16Copy(p.out, rows * p.num_heads * p.kv.head_dim, launch);
  }
  if (decode_kernel_ == DecodeKernel::kMmaSync) ++mma_decode_attention_calls_;
  return true;
}

bool CudaBackend::RecordSiluMul(const float* gate, const float* up, int64_t n, float* out) {
  int64_t padded = 0;
  if (!graphs_.PaddedElements(n, &padded)) {
    FinishGraphStep(GraphEagerReason::kUnexpectedShape);
    return false;
  }
  graphs_.Record(
      [gate, up, padded, out](cudaStream_t stream) {
        return LaunchSiluMulFlat(gate, up, padded, out, stream);
      },
      GraphOp::kSiluMul, gate, up, padded, out);
  OfferBf16Copy(out, padded, [gate, up, padded, out](cudaStream_t stream, void* out_bf16) {
    return LaunchSiluMulFlat(gate, up, padded, out, stream, out_bf16);
  });
  return true;
}

bool CudaBackend::RecordAddInPlace(float* x, const float* y, int64_t n) {
  int64_t padded = 0;
  if (!graphs_.PaddedElements(n, &padded)) {
    FinishGraphStep(GraphEagerReason::kUnexpectedShape);
    return false;
  }
  graphs_.Record(
      [x, y, padded](cudaStream_t stream) { return LaunchAddInPlace(x, y, padded, stream); },
      GraphOp::kAddInPlace, x, y, padded);
  return true;
}

bool CudaBackend::RecordAddRmsNorm(float* x, const float* y, const float* weight,
                                   int64_t num_rows, int64_t dim, float eps, float* out) {
  int64_t rows = 0;
  if (!graphs_.PaddedRows(num_rows, &rows)) {
    FinishGraphStep(GraphEagerReason::kUnexpectedShape);
    return false;
  }
  const AddRmsNormParams p = AddRmsNormLaunchParams(x, y, weight, rows, dim, eps, out);
  graphs_.Record([p](cudaStream_t stream) { return LaunchAddRmsNorm(p, stream); },
                 GraphOp::kAddRmsNorm, x, y, weight, rows, dim, eps, out);
  OfferBf16Copy(out, rows * dim, [p](cudaStream_t stream, void* out_bf16) {
    AddRmsNormParams with_copy = p;
    with_copy.out_bf16 = out_bf16;
    return LaunchAddRmsNorm(with_copy, stream);
  });
  return true;
}

// ---- Bf16 copies: a MatMul's cast folded into the op that wrote its input --------------------
//
// A bf16 MatMul rounds its fp32 input to bf16 (a cast kernel) before the GEMM. In a decode step
// that input is, every time, the output of the op just before: the attention norm (then the
// q/k/v GEMMs), the decode attention (o), the FFN norm (gate/up), SiluMul (down), the final
// norm (logits). Those kernels can write the bf16 rounding beside their fp32 output at no
// extra pass, so the recorded step drops the cast: 4 launches per layer and one per step. The copy
// is bit-identical to the cast's (both round to nearest even).

void CudaBackend::OfferBf16Copy(const float* out, int64_t elements, LaunchWithBf16Copy with_copy) {
  graph_step_.bf16_producer = {graphs_.num_launches(), out, elements, std::move(with_copy)};
}

bool CudaBackend::FoldCastIntoProducer(const float* x, int64_t elements) {
  GraphStepState::Bf16Producer& producer = graph_step_.bf16_producer;
  const bool folds = producer.launch != 0 && producer.launch == graphs_.num_launches() &&
                     producer.out == x && producer.elements == elements;
  if (!folds) return false;
  // The launch reads the buffer when it runs: FinishGraphStep sizes it for the step's
  // bf16_bytes, which the MatMul has raised to hold x.
  graphs_.AmendLast(
      [this, with_copy = std::move(producer.with_copy)](cudaStream_t stream) {
        return with_copy(stream, graph_activations_bf16_.get());
      },
      GraphOp::kWithBf16Copy);
  producer = {};
  ++bf16_casts_folded_;
  return true;
}

bool CudaBackend::RecordGatherRows(const float* x, int64_t dim, const int32_t* rows,
                                   int64_t num_rows, float* out) {
  int64_t padded = 0;
  if (!graphs_.PaddedRows(num_rows, &padded)) {
    FinishGraphStep(GraphEagerReason::kUnexpectedShape);
    return false;
  }
  // Padded rows gather row 0 (x always has it).
  const size_t rows_offset = graphs_.ArenaPut(rows, num_rows * sizeof(int32_t),
                                              padded * sizeof(int32_t), 0, true);
  GatherRowsParams p;
  p.x = x;
  p.dim = dim;
  p.num_rows = padded;
  p.out = out;
  graphs_.Record(
      [this, p, rows_offset](cudaStream_t stream) {
        GatherRowsParams run = p;
        run.rows = graphs_.ArenaPtr<const int32_t>(rows_offset);
        return LaunchGatherRows(run, stream);
      },
      GraphOp::kGatherRows, p.x, p.dim, padded, p.out, rows_offset);
  return true;
}

bool CudaBackend::RecordAllReduceSum(float* x, int64_t n) {
  int64_t padded = 0;
  if (!graphs_.PaddedElements(n, &padded)) {
    FinishGraphStep(GraphEagerReason::kUnexpectedShape);
    return false;
  }
  // The sum over a group of one is x itself: a recorded step leaves that all-reduce out, so
  // that single-GPU graphs do not depend on NCCL's stream-capture support.
  if (tp_group_->size() == 1) return true;
  // Several ranks: the collective is captured into the graph (NCCL supports stream capture);
  // every rank pads to the same bucket, so counts match across ranks.
  graphs_.Record(
      [this, x, padded](cudaStream_t stream) {
        const ncclResult_t r = tp_group_->AllReduceSumRank(
            tp_rank_, x, static_cast<size_t>(padded), DType::kF32, stream);
        if (r == ncclSuccess) return cudaSuccess;
        spdlog::critical("CUDA backend: ncclAllReduce of {} floats on tensor-parallel rank {} "
                         "failed: {}", padded, tp_rank_, ncclGetErrorString(r));
        return cudaErrorUnknown;
      },
      GraphOp::kAllReduceSum, x, padded, tp_group_.get(), tp_rank_);
  return true;
}

}  // namespace glimpse::kernels::cuda::internal
