// Flags shared by several `glimpse` subcommands.
#ifndef GLIMPSE_SERVER_COMMON_FLAGS_H_
#define GLIMPSE_SERVER_COMMON_FLAGS_H_

#include <string>

#include "absl/flags/declare.h"
#include "absl/strings/string_view.h"

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

// The tensor-core attention kernel of a bf16 cache on CUDA: the `--cuda_prefill_attention` flag
// (kernels::cuda::CudaPrefillAttention; this build may have no CUDA).
enum class CudaPrefillAttention { kMmaSync, kMmaSyncWide, kWgmma };

// "mma_sync", "mma_sync_wide" or "wgmma".
bool AbslParseFlag(absl::string_view text, CudaPrefillAttention* kernel, std::string* error);
std::string AbslUnparseFlag(CudaPrefillAttention kernel);

}  // namespace glimpse::server

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(int32_t, threads);
ABSL_DECLARE_FLAG(glimpse::server::Device, device);
ABSL_DECLARE_FLAG(bool, cuda_graphs);
ABSL_DECLARE_FLAG(glimpse::server::CudaPrefillAttention, cuda_prefill_attention);
ABSL_DECLARE_FLAG(glimpse::server::KvCacheDType, kv_cache_dtype);
ABSL_DECLARE_FLAG(int32_t, tensor_parallel_size);

#endif  // GLIMPSE_SERVER_COMMON_FLAGS_H_
