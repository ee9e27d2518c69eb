// The CUDA implementation of kernels::Backend (kernels/backend.h): fp32 activations in device
// memory, weights packed to the device once, every op enqueued on one CUDA stream and run by
// the kernels of //kernels/cuda and cuBLAS.
//
// Numerics (see cuda_backend_matmul.cc and cuda_backend_ops.cc for the details):
//   - F32 weights stay fp32 and multiply in fp32 (cuBLAS, fp32 compute, no TF32): outputs
//     match the CPU backend to fp32 rounding (not bitwise; CUDA is not batch-invariant).
//   - F16, BF16 and Q8_0 weights become bf16 on the device (Q8_0 dequantized at load);
//     activations are rounded to bf16 before each such matmul, products accumulate in fp32.
//   - KV cache: fp32 or bf16 (CudaBackendOptions::kv_cache_dtype), in the layout of
//     kernels/cuda/kv_layout.h ([block][kv_head][slot][head_dim]; block outermost, as
//     KvLayerView requires). See PagedAttention in cuda_backend_ops.cc for which kernel runs.
//   - Embedding rows, RoPE angles and the element-wise ops reproduce the CPU backend's
//     arithmetic (exact widening, the same fp32 angle recurrence, no FMA contraction).
//
// This header has no CUDA types, so that callers (server/loaded_model) compile without the
// CUDA headers; the backend class itself is declared in cuda_backend_impl.h.
#ifndef GLIMPSE_KERNELS_CUDA_BACKEND_CUDA_BACKEND_H_
#define GLIMPSE_KERNELS_CUDA_BACKEND_CUDA_BACKEND_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/cuda/decode_kernel.h"
#include "kernels/cuda/prefill_kernel.h"

namespace glimpse::kernels::cuda {

class TensorParallelGroup;  // kernels/cuda/tensor_parallel.h

// Element type of the CUDA backend's KV cache (`--kv_cache_dtype`).
enum class CudaKvCacheDType {
  // fp32: keys and values exactly as the CPU backend stores them, attended in fp32 on CUDA
  // cores: decode steps by the paged decode kernel, steps with a multi-token sequence
  // (prefill, chunked prefill, mixed batches) by the tiled fp32 prefill kernel once per
  // sequence (prefill_attention_f32.cu), so a prompt chunk reads its prefix once per 64
  // packed query rows rather than once per token.
  kFloat32,
  // bf16: half the memory and bandwidth. Decode steps run the paged decode kernel over the
  // bf16 cache (fp32 queries and outputs); steps with a multi-token sequence (prefill, chunked
  // prefill, mixed batches) run the tensor-core attention kernel (prefill_attention.h) once
  // per sequence, on bf16 queries.
  kBFloat16,
};

struct CudaBackendOptions {
  int device_ordinal = 0;  // CUDA device number (after CUDA_VISIBLE_DEVICES).
  CudaKvCacheDType kv_cache_dtype = CudaKvCacheDType::kFloat32;
  // The tensor-core attention's kernel, for steps with multi-token sequences over a bf16
  // cache (`--cuda_prefill_attention`). The wgmma kernels fall back to kMmaSync on a GPU other
  // than compute capability 9.0 and for head dims other than 64 and 128, the pipelined ones
  // to kWgmma at block sizes their TMA boxes cannot tile (PrefillKernelFor), kMmaSyncWide to
  // kMmaSync where a block cannot have its shared memory (head_dim 128 on sm_86/sm_89). The
  // experimental kernels are checked on the CUDA emulation, not yet on a GPU.
  PrefillKernel prefill_attention = PrefillKernel::kMmaSync;
  // The paged decode attention's kernel, for decode-only steps (eager or graphed) over a bf16
  // cache (`--cuda_decode_attention`); an fp32 cache always runs kCudaCores. kMmaSync rounds
  // the fp32 queries to bf16 (kCudaCores uses them unrounded), is checked on the CUDA
  // emulation, not yet on a GPU.
  DecodeKernel decode_attention = DecodeKernel::kCudaCores;
  // The NCCL group whose AllReduceSum this backend joins as rank tp_rank (on device_ordinal).
  // Shared by all the group's backends: the last one destroyed destroys the communicators.
  // Null: a new group of one, so that a single GPU runs the same ncclAllReduce path.
  std::shared_ptr<TensorParallelGroup> tp_group;
  int tp_rank = 0;

  // CUDA graphs (issue #5; see README.md, "Decode graphs"): decode steps of up to 256
  // sequences are padded to a batch bucket, captured once per bucket (after one eager warm-up
  // step) and replayed on later steps. `--cuda_graphs`.
  bool cuda_graphs = true;
  // Testing only: such steps take the graph path (padding, fixed buffers, one attention plan
  // per bucket, the same recorded launches) but always run eagerly, never captured, so that a
  // test can require graph replays to equal this bitwise.
  bool graphs_run_eagerly_for_testing = false;
};

// Opens the device, creates the backend's stream, cuBLAS handle and staging buffers, and runs
// one tiny kernel to prove that this binary's kernels load on the device. FailedPrecondition
// "no CUDA device: ..." when no usable device or driver exists, or the device is older than
// the compiled architectures (sm_80, sm_90a); InvalidArgument for a bad ordinal.
//
// The returned backend owns its stream, cuBLAS handle, staging buffers and device copies of
// embedding tables; memory from Allocate() and PackedMatrix objects must be released before
// it is destroyed. Thread-safety: one driving thread at a time (the Backend contract); any
// thread may drive it (every op selects the backend's device first).
//
// Backend::Counters() reports CUDA graph captures and replays, and the steps run eagerly by
// reason: "cuda_graph_captures_total", "cuda_graph_replays_total",
// "cuda_graph_eager_<reason>_steps_total", the gauge "cuda_graphs_cached", and
// "cuda_attention_tensor_core_calls_total" (attention calls run by the tensor-core kernel),
// "cuda_attention_wide_calls_total" and "cuda_attention_wgmma_calls_total" (those on its
// 128-row and wgmma variants), "cuda_attention_mma_decode_calls_total" (calls on the
// tensor-core decode kernel) and "cuda_attention_fp32_tiled_calls_total" (calls over an fp32
// cache run by the tiled fp32 kernel).
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options);

// One backend per device, backend r being rank r of one NCCL tensor-parallel group over
// `devices` (distinct CUDA ordinals), for model::TensorParallelModel. Errors as
// CreateCudaBackend's; FailedPrecondition when NCCL cannot create the group. Every rank takes
// `options` (CUDA graphs on or off, ...) except its device, group and rank.
absl::StatusOr<std::vector<std::unique_ptr<Backend>>> CreateCudaTensorParallelBackends(
    const std::vector<int>& devices, const CudaBackendOptions& options = {});

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_BACKEND_CUDA_BACKEND_H_
