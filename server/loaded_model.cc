#include "server/loaded_model.h"

#include "common/status_macros.h"
#include "kernels/cpu/cpu_backend.h"

namespace glimpse::server {

absl::StatusOr<LoadedModel> LoadedModel::Load(const std::string& path, int num_threads) {
  LoadedModel loaded;
  ASSIGN_OR_RETURN(loaded.file, model::GgufFile::Open(path));
  loaded.backend = std::make_unique<kernels::cpu::CpuBackend>(num_threads);
  ASSIGN_OR_RETURN(loaded.model, model::LlamaModel::Load(*loaded.file, *loaded.backend));
  ASSIGN_OR_RETURN(loaded.tokenizer, model::Tokenizer::FromGguf(*loaded.file));
  if (loaded.tokenizer->vocab_size() != loaded.model->config().vocab_size) {
    return absl::InvalidArgumentError("model '" + path + "': the tokenizer has " +
                                      std::to_string(loaded.tokenizer->vocab_size()) +
                                      " pieces but token_embd has " +
                                      std::to_string(loaded.model->config().vocab_size) + " rows");
  }
  return loaded;
}

}  // namespace glimpse::server
