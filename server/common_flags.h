// Flags shared by several `glimpse` subcommands.
#ifndef GLIMPSE_SERVER_COMMON_FLAGS_H_
#define GLIMPSE_SERVER_COMMON_FLAGS_H_

#include <cstdint>
#include <string>

#include "absl/flags/declare.h"
#include "absl/strings/string_view.h"
#include "kernels/cuda/decode_kernel.h"
#include "kernels/cuda/prefill_kernel.h"

namespace glimpse::server {

// Where the model runs: the `--device` flag.
enum class Device { kCpu, kCuda };

// absl flag parsing ("cpu" or "cuda"); found by argument-dependent lookup.
bool AbslParseFlag(absl::string_view text, Device* device, std::string* error);
std::string AbslUnparseFlag(Device device);

// Element type of the KV cache: the `--kv_cache_dtype` flag. kAuto: bf16 on CUDA unless the
// model's weights are F32 (like peers' "auto", the model's own precision); fp32 on the CPU
// (exact, batch-invariant). kF16 is CPU only (the CUDA kernels read bf16 or fp32).
enum class KvCacheDType { kAuto, kFp32, kF16, kBf16 };

// "auto", "fp32" (or "f32"), "f16" (or "fp16"), "bf16".
bool AbslParseFlag(absl::string_view text, KvCacheDType* dtype, std::string* error);
std::string AbslUnparseFlag(KvCacheDType dtype);

// What `--device_top_k` and `--nucleus_candidates` (and bench's) of -1, their default, mean on
// `device`: candidates selected where the logits are on a GPU (k up to 1024; 256 for rows
// sampled without top-k), where they save bringing rows back; none on the CPU, whose rows are
// in host memory already: there a selection is one more pass over each row on the engine
// thread before the samplers', which costs more than it saves (bundled model, batch 8 on 2
// vCPUs: top-k 50 decode ~6.9k vs ~11.3k tok/s, top-p 0.9 ~5.2k vs ~8.8k).
inline constexpr int32_t kAutoCandidates = -1;
// The flag's value, kAutoCandidates resolved for `device`.
int32_t DeviceTopKFor(int32_t flag, Device device);
int32_t NucleusCandidatesFor(int32_t flag, Device device);

}  // namespace glimpse::server

namespace glimpse::kernels::cuda {

// The `--cuda_prefill_attention` flag: "mma_sync", "mma_sync_wide", "wgmma",
// "wgmma_pipelined" or "wgmma_pipelined_128". Declared in the enum's namespace, where absl finds
// them; kernels/cuda itself stays free of Abseil.
bool AbslParseFlag(absl::string_view text, PrefillKernel* kernel, std::string* error);
std::string AbslUnparseFlag(PrefillKernel kernel);
// The `--cuda_decode_attention` flag: "cuda_cores" or "mma_sync".
bool AbslParseFlag(absl::string_view text, DecodeKernel* kernel, std::string* error);
std::string AbslUnparseFlag(DecodeKernel kernel);

}  // namespace glimpse::kernels::cuda

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(int32_t, threads);
ABSL_DECLARE_FLAG(glimpse::server::Device, device);
ABSL_DECLARE_FLAG(bool, cuda_graphs);
ABSL_DECLARE_FLAG(glimpse::kernels::cuda::PrefillKernel, cuda_prefill_attention);
ABSL_DECLARE_FLAG(glimpse::kernels::cuda::DecodeKernel, cuda_decode_attention);
ABSL_DECLARE_FLAG(glimpse::server::KvCacheDType, kv_cache_dtype);
ABSL_DECLARE_FLAG(int32_t, tensor_parallel_size);

#endif  // GLIMPSE_SERVER_COMMON_FLAGS_H_
