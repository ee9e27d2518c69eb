// The CUDA implementation of kernels::Backend (kernels/backend.h): fp32 activations in device
// memory, weights packed to the device once, every op enqueued on one CUDA stream and run by
// the kernels of //kernels/cuda and cuBLAS.
//
// Numerics (see cuda_backend.cc for the details):
//   - F32 weights stay fp32 and multiply in fp32 (cuBLAS, fp32 compute, no TF32): outputs
//     match the CPU backend to fp32 rounding (not bitwise; CUDA is not batch-invariant).
//   - F16, BF16 and Q8_0 weights become bf16 on the device (Q8_0 dequantized at load);
//     activations are rounded to bf16 before each such matmul, products accumulate in fp32.
//   - KV cache: fp32, in the layout of kernels/cuda/kv_layout.h
//     ([block][kv_head][slot][head_dim]; block outermost, as KvLayerView requires).
//     TODO(#5): a bf16 KV option (halves KV memory; attention through prefill_attention.h).
//   - Embedding rows, RoPE angles and the element-wise ops reproduce the CPU backend's
//     arithmetic (exact widening, the same fp32 angle recurrence, no FMA contraction).
//
// This header has no CUDA types, so that callers (server/loaded_model) compile without the
// CUDA headers; the backend class itself lives in cuda_backend.cc.
#ifndef GLIMPSE_KERNELS_CUDA_BACKEND_CUDA_BACKEND_H_
#define GLIMPSE_KERNELS_CUDA_BACKEND_CUDA_BACKEND_H_

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace glimpse::kernels::cuda {

struct CudaBackendOptions {
  int device_ordinal = 0;  // CUDA device number (after CUDA_VISIBLE_DEVICES).
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
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options);

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_BACKEND_CUDA_BACKEND_H_
