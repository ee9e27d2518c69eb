#include "server/make_model_command.h"

#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_join.h"
#include "tools/make_model/make_model.h"

ABSL_FLAG(std::string, shape, "small-110m",
          "make-model: the model shape to write: small-110m, llama-3.2-1b or llama-3.1-8b.");
ABSL_FLAG(std::string, out, "", "make-model: path of the GGUF file to write.");
ABSL_FLAG(std::string, type, "f16", "make-model: weight type, one of f32, f16, bf16, q8_0.");
ABSL_FLAG(std::string, tokenizer_from, glimpse::tools::kDefaultTokenizerPath,
          "make-model: GGUF file whose tokenizer is copied (padded to the shape's vocabulary).");
ABSL_FLAG(uint64_t, weights_seed, 0, "make-model: seed of the random weights.");

namespace glimpse::server {

int RunMakeModelCommand() {
  tools::MakeModelOptions options;
  options.shape = absl::GetFlag(FLAGS_shape);
  options.out_path = absl::GetFlag(FLAGS_out);
  if (options.out_path.empty()) {
    std::fprintf(stderr, "glimpse make-model: --out is required (the GGUF file to write)\n");
    return 2;
  }
  auto type = tools::ParseWeightType(absl::GetFlag(FLAGS_type));
  if (!type.ok()) {
    std::fprintf(stderr, "glimpse make-model: %s\n", std::string(type.status().message()).c_str());
    return 2;
  }
  options.type = *type;
  options.tokenizer_from = absl::GetFlag(FLAGS_tokenizer_from);
  options.seed = absl::GetFlag(FLAGS_weights_seed);
  options.on_tensor = [](size_t i, size_t n, std::string_view name) {
    if (i % 16 == 0 || i + 1 == n) {
      std::fprintf(stderr, "\r[%zu/%zu] %-32s", i + 1, n, std::string(name).c_str());
    }
  };
  absl::Status status = tools::MakeModel(options);
  std::fprintf(stderr, "\n");
  if (!status.ok()) {
    std::fprintf(stderr, "glimpse make-model: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  std::fprintf(stderr, "wrote %s (%s, %s)\n", options.out_path.c_str(), options.shape.c_str(),
               absl::GetFlag(FLAGS_type).c_str());
  return 0;
}

}  // namespace glimpse::server
