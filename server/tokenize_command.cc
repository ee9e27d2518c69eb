#include "server/tokenize_command.h"

#include <cstdio>
#include <string>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "model/gguf.h"
#include "model/tokenizer.h"
#include "server/common_flags.h"

ABSL_DECLARE_FLAG(std::string, prompt);
ABSL_FLAG(bool, add_special, true, "tokenize: add BOS/EOS as the model's metadata asks.");
ABSL_FLAG(bool, parse_special, false,
          "tokenize: recognise special-token text such as '</s>' in the prompt.");
ABSL_FLAG(bool, ids_only, false, "tokenize: print only the ids, space-separated, on one line.");

namespace glimpse::server {

int RunTokenizeCommand() {
  // Only the vocabulary is needed: no weights are packed.
  auto file = model::GgufFile::Open(absl::GetFlag(FLAGS_model));
  if (!file.ok()) {
    std::fprintf(stderr, "glimpse tokenize: %s\n", std::string(file.status().message()).c_str());
    return 1;
  }
  auto tokenizer = model::Tokenizer::FromGguf(**file);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "glimpse tokenize: %s\n",
                 std::string(tokenizer.status().message()).c_str());
    return 1;
  }
  const std::vector<int32_t> ids = (*tokenizer)->Encode(
      absl::GetFlag(FLAGS_prompt), absl::GetFlag(FLAGS_add_special),
      absl::GetFlag(FLAGS_parse_special));
  if (absl::GetFlag(FLAGS_ids_only)) {
    for (size_t i = 0; i < ids.size(); ++i) std::printf(i ? " %d" : "%d", ids[i]);
    std::printf("\n");
    return 0;
  }
  for (int32_t id : ids) {
    std::printf("%6d -> '%s'\n", id, (*tokenizer)->piece(id).c_str());
  }
  std::fprintf(stderr, "%zu tokens\n", ids.size());
  return 0;
}

}  // namespace glimpse::server
