#include "server/common_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, model, "models/tinycode-4m-f16.gguf",
          "Path of the GGUF model file (Llama architecture; F32, F16, BF16 or Q8_0 weights). "
          "The default is the small bundled model.");
ABSL_FLAG(int32_t, threads, 0,
          "Worker threads for the CPU backend, the calling thread included; 0 uses every CPU "
          "this process may run on (or GLIMPSE_NUM_THREADS when set).");
