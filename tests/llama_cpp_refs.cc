#include "tests/llama_cpp_refs.h"

#include <fstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace glimpse::testing {

std::vector<LlamaCppReference> LoadLlamaCppReferences(const std::string& path,
                                                      size_t max_count) {
  std::ifstream in(path);
  std::vector<LlamaCppReference> refs;
  std::string line;
  while (refs.size() < max_count && std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    refs.push_back({j["id"].get<std::string>(), j["prompt_tokens"].get<std::vector<int32_t>>(),
                    j["tokens"].get<std::vector<int32_t>>(), j.value("text", std::string())});
  }
  if (refs.empty()) ADD_FAILURE() << "no llama.cpp references read from " << path;
  return refs;
}

}  // namespace glimpse::testing
