// How `glimpse serve` sizes its KV cache pool per device, from --kv_cache_bytes or
// --kv_cache_fraction and the memory the loaded model's backends report. Pure: no flags, no
// devices, so that the rules are testable without a GPU.
#ifndef GLIMPSE_SERVER_KV_BUDGET_H_
#define GLIMPSE_SERVER_KV_BUDGET_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace glimpse::server {

struct KvBudgetInputs {
  int64_t kv_cache_bytes = 0;     // --kv_cache_bytes: per device
  double kv_cache_fraction = 0;   // --kv_cache_fraction; 0: unset
  int64_t host_memory_bytes = 0;  // physical memory of this machine
  // Backend::DeviceMemory() of each tensor-parallel rank once the weights are loaded: all
  // nullopt for host-memory backends (CPU ranks, which share the host's memory).
  std::vector<std::optional<kernels::DeviceMemoryInfo>> devices;
};

struct KvBudget {
  int64_t bytes_per_device = 0;
  std::string rule;  // how it was chosen, for the log
};

// --kv_cache_fraction unset: --kv_cache_bytes on every device. Set, on devices: that fraction
// of the memory free on the device with the least free once the weights are loaded (as
// TensorRT-LLM's kv_cache_free_gpu_mem_fraction: the rest stays for activations, CUDA graphs
// and cuBLAS). Set, on the host: that fraction of physical memory, shared by the ranks.
// InvalidArgument when the budget is under one byte or the ranks disagree on where they
// allocate.
absl::StatusOr<KvBudget> KvBudgetPerDevice(const KvBudgetInputs& in);

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_KV_BUDGET_H_
