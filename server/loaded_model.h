// Everything needed to run one GGUF model: the mapped file, the backend (CPU or CUDA), the
// packed model and its tokenizer, loaded together with errors that name the file.
//
// Ownership: owns all four; members are declared in dependency order so they are destroyed
// in reverse (the model before the backend and the file it borrows).
#ifndef GLIMPSE_SERVER_LOADED_MODEL_H_
#define GLIMPSE_SERVER_LOADED_MODEL_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "model/gguf.h"
#include "model/llama_model.h"
#include "model/tokenizer.h"
#include "server/common_flags.h"

namespace glimpse::server {

struct LoadedModel {
  std::unique_ptr<model::GgufFile> file;
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<model::LlamaModel> model;
  std::unique_ptr<model::Tokenizer> tokenizer;

  // Loads onto `device`. num_threads (CPU backend only) <= 0: all CPUs this process may use.
  static absl::StatusOr<LoadedModel> Load(const std::string& path, int num_threads,
                                          Device device);
  // Loads onto the device the `--device` flag names (default cpu).
  static absl::StatusOr<LoadedModel> Load(const std::string& path, int num_threads);
};

// The backend for `device`. Device::kCuda: FailedPrecondition when this binary was built
// without CUDA (rebuild with --config=cuda) or when no usable CUDA device exists.
absl::StatusOr<std::unique_ptr<kernels::Backend>> CreateBackend(Device device, int num_threads);

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_LOADED_MODEL_H_
