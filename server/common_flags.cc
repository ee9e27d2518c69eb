#include "server/common_flags.h"

#include <utility>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"

namespace glimpse::server {

bool AbslParseFlag(absl::string_view text, Device* device, std::string* error) {
  if (text == "cpu") {
    *device = Device::kCpu;
    return true;
  }
  if (text == "cuda") {
    *device = Device::kCuda;
    return true;
  }
  *error = "expected 'cpu' or 'cuda'";
  return false;
}

std::string AbslUnparseFlag(Device device) {
  switch (device) {
    case Device::kCpu:
      return "cpu";
    case Device::kCuda:
      return "cuda";
  }
  return "cpu";
}

int32_t DeviceTopKFor(int32_t flag, Device device) {
  if (flag != kAutoCandidates) return flag;
  return device == Device::kCuda ? 1024 : 0;
}

int32_t NucleusCandidatesFor(int32_t flag, Device device) {
  if (flag != kAutoCandidates) return flag;
  return device == Device::kCuda ? 256 : 0;
}

bool AbslParseFlag(absl::string_view text, KvCacheDType* dtype, std::string* error) {
  if (text == "auto") {
    *dtype = KvCacheDType::kAuto;
  } else if (text == "fp32" || text == "f32") {
    *dtype = KvCacheDType::kFp32;
  } else if (text == "f16" || text == "fp16") {
    *dtype = KvCacheDType::kF16;
  } else if (text == "bf16") {
    *dtype = KvCacheDType::kBf16;
  } else {
    *error = "expected 'auto', 'fp32', 'f16' or 'bf16'";
    return false;
  }
  return true;
}

std::string AbslUnparseFlag(KvCacheDType dtype) {
  switch (dtype) {
    case KvCacheDType::kAuto:
      return "auto";
    case KvCacheDType::kFp32:
      return "fp32";
    case KvCacheDType::kF16:
      return "f16";
    case KvCacheDType::kBf16:
      return "bf16";
  }
  return "auto";
}

}  // namespace glimpse::server

namespace glimpse::kernels::cuda {

namespace {

// The value `text` names in `names`; else false with "expected 'a', 'b' or 'c'" in *error.
template <typename Kernel, size_t N>
bool ParseName(const std::pair<Kernel, const char*> (&names)[N], absl::string_view text,
               Kernel* kernel, std::string* error) {
  std::string expected = "expected ";
  for (size_t i = 0; i < N; ++i) {
    if (text == names[i].second) {
      *kernel = names[i].first;
      return true;
    }
    expected += absl::StrCat(i == 0 ? "" : i + 1 == N ? " or " : ", ", "'", names[i].second, "'");
  }
  *error = expected;
  return false;
}

}  // namespace

bool AbslParseFlag(absl::string_view text, PrefillKernel* kernel, std::string* error) {
  return ParseName(kPrefillKernelNames, text, kernel, error);
}

std::string AbslUnparseFlag(PrefillKernel kernel) { return PrefillKernelName(kernel); }

bool AbslParseFlag(absl::string_view text, DecodeKernel* kernel, std::string* error) {
  return ParseName(kDecodeKernelNames, text, kernel, error);
}

std::string AbslUnparseFlag(DecodeKernel kernel) { return DecodeKernelName(kernel); }

}  // namespace glimpse::kernels::cuda

ABSL_FLAG(std::string, model, "models/tinycode-4m-f16.gguf",
          "Path of the GGUF model file (Llama architecture; F32, F16, BF16 or Q8_0 weights). "
          "The default is the small bundled model.");
ABSL_FLAG(int32_t, threads, 0,
          "Worker threads for the CPU backend, the calling thread included; 0 uses every CPU "
          "this process may run on (or GLIMPSE_NUM_THREADS when set).");
ABSL_FLAG(glimpse::server::Device, device, glimpse::server::Device::kCpu,
          "Where the model runs: 'cpu' (fp32, batch-invariant) or 'cuda' (the first visible "
          "GPU: F32 weights stay fp32, F16/BF16/Q8_0 weights run as bf16 with fp32 "
          "accumulation; needs a binary built with `bazel build --config=cuda "
          "//server:glimpse`).");
ABSL_FLAG(bool, cuda_graphs, true,
          "With --device=cuda: run decode steps of up to 256 sequences as CUDA graphs (padded "
          "to a batch bucket of 1, 2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, "
          "224 or 256; captured after one eager step per bucket and replayed after that). "
          "false runs every step eagerly.");
ABSL_FLAG(glimpse::server::KvCacheDType, kv_cache_dtype, glimpse::server::KvCacheDType::kAuto,
          "Element type of the KV cache: 'fp32', 'f16' (--device=cpu only), 'bf16' or 'auto' "
          "(bf16 on CUDA unless the model's weights are F32; fp32 on the CPU). A 16-bit cache "
          "holds about twice the tokens in the same memory and halves the bytes attention "
          "reads; keys and values are rounded once when stored (on CUDA bf16 also puts prefill "
          "attention on tensor cores). fp32 is exact: on the CPU it reproduces the model's "
          "fp32 outputs bit for bit.");
ABSL_FLAG(glimpse::kernels::cuda::PrefillKernel, cuda_prefill_attention,
          glimpse::kernels::cuda::PrefillKernel::kMmaSync,
          "--device=cuda with a bf16 KV cache: the kernel that runs prefill and mixed-step "
          "attention on tensor cores. 'mma_sync' (64-row blocks; every sm_80+ GPU), "
          "experimental 'mma_sync_wide' (128-row blocks: less shared-memory traffic per flop, "
          "twice the registers), experimental 'wgmma' (Hopper, compute capability 9.0, "
          "head_dim 64 or 128; elsewhere mma_sync runs) or experimental 'wgmma_pipelined' "
          "(as wgmma, fed by TMA through an mbarrier pipeline with a producer and two consumer "
          "warpgroups, FlashAttention-3's structure; at page sizes its TMA boxes cannot tile, "
          "such as --block_size=4 or 17, wgmma runs) or experimental 'wgmma_pipelined_128' "
          "(the same with FlashAttention-3's 128-key K/V tiles and Q in shared memory). The "
          "experimental ones are checked on the CUDA emulation, not yet measured on a GPU.");
ABSL_FLAG(glimpse::kernels::cuda::DecodeKernel, cuda_decode_attention,
          glimpse::kernels::cuda::DecodeKernel::kCudaCores,
          "--device=cuda with a bf16 KV cache: the kernel that runs decode-step attention. "
          "'cuda_cores' (fp32 arithmetic on the loaded keys and values, queries unrounded) or "
          "experimental 'mma_sync' (tensor cores: the GQA group's query heads share each "
          "mma.sync, a third (GQA 1) to a tenth (GQA 8) of the instructions per KV byte; "
          "queries and probabilities rounded to bf16 as in prefill). An fp32 cache always runs "
          "'cuda_cores'. The experimental one is checked on the CUDA emulation, not yet "
          "measured on a GPU.");
ABSL_FLAG(int32_t, tensor_parallel_size, 1,
          "Tensor-parallel ranks the model is split over (attention heads in whole GQA groups and "
          "FFN features; Megatron-style, two all-reduces per layer). With --device=cuda: one GPU "
          "per rank, devices 0..N-1, one NCCL group. With --device=cpu: N in-process ranks that "
          "share --threads between them (for testing the split path). The model's KV heads must "
          "divide evenly by N; other sizes are refused at startup.");
