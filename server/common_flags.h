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

}  // namespace glimpse::server

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(int32_t, threads);
ABSL_DECLARE_FLAG(glimpse::server::Device, device);
ABSL_DECLARE_FLAG(bool, cuda_graphs);
ABSL_DECLARE_FLAG(int32_t, tensor_parallel_size);

#endif  // GLIMPSE_SERVER_COMMON_FLAGS_H_
