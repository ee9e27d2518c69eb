// Flags shared by several `glimpse` subcommands.
#ifndef GLIMPSE_SERVER_COMMON_FLAGS_H_
#define GLIMPSE_SERVER_COMMON_FLAGS_H_

#include <string>

#include "absl/flags/declare.h"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(int32_t, threads);

#endif  // GLIMPSE_SERVER_COMMON_FLAGS_H_
