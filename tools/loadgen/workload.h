// Workloads for `glimpse loadgen`: the list of requests a benchmark sends. The same workload is
// sent to glimpse and to peer servers (vLLM, llama-server), so everything here is a plain value
// that any front end (gRPC, OpenAI completions, OpenAI chat) can turn into a request.
//
// Kinds (WorkloadOptions::dataset):
//   synthetic       random token ids (or random common words) of a sampled length.
//   jsonl:PATH      prompts from a JSON-lines file ("prompt", "prompt_tokens", "messages").
//   sharegpt:PATH   first user turn of ShareGPT conversations, as vLLM's benchmark samples them.
//   shared-prefix   groups of requests that share a long prefix (prefix caching).
//   replay          a few distinct requests sent again and again (exact-repeat caching).
//   code-edit       "rename this variable" over generated code; the answer repeats the prompt's
//                   code, which is the case speculative decoding (n-gram/prompt lookup) exploits.
//
// Everything is deterministic for a seed, also across standard libraries: sampling uses only
// std::mt19937_64's raw output (whose sequence the standard fixes), not std::*_distribution.
// A dataset file (jsonl:PATH, sharegpt:PATH) is read and parsed by LoadDatasetFile once; a run
// that builds one workload per load level passes the DatasetFile to each (WorkloadOptions::file)
// instead of re-reading a ShareGPT dump of hundreds of MB per level.
// Thread-safety: BuildWorkload, a DatasetFile and LengthDistribution's const methods are safe to
// call
// concurrently; a std::mt19937_64 passed to Sample must not be shared without a lock.
#ifndef GLIMPSE_TOOLS_LOADGEN_WORKLOAD_H_
#define GLIMPSE_TOOLS_LOADGEN_WORKLOAD_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace glimpse::tools::loadgen {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant".
  std::string content;

  friend bool operator==(const ChatMessage&, const ChatMessage&) = default;
};

// One request to send. A prompt is token ids, text, or chat messages; a work item may carry
// several forms (e.g. ids AND text from a prompts file) and the sender picks what its endpoint
// takes: gRPC/completions prefer ids, then text; chat uses messages, else text as one user
// message.
struct WorkItem {
  std::vector<int32_t> prompt_ids;
  std::string prompt_text;
  std::vector<ChatMessage> messages;
  int32_t max_tokens = 0;  // Output tokens to ask for (> 0).
  std::string group;       // Scenario tag, e.g. "prefix-3" or "replay-1"; "" if none.

  friend bool operator==(const WorkItem&, const WorkItem&) = default;
};

// An input/output length distribution, parsed from "N" or "fixed:N", "uniform:LO:HI"
// (inclusive), "normal:MEAN:STD" (rounded, clamped to >= 1). An immutable value.
class LengthDistribution {
 public:
  enum class Kind { kFixed, kUniform, kNormal };

  // Errors: absl::InvalidArgumentError quoting `spec` and listing the accepted forms.
  static absl::StatusOr<LengthDistribution> Parse(std::string_view spec);

  // Always >= 1 (and <= kMaxLength, so that a sum of a few lengths cannot overflow int32).
  int32_t Sample(std::mt19937_64& rng) const;
  // Canonical spec that Parse accepts, e.g. "fixed:64", "uniform:64:256", "normal:128:32".
  std::string ToString() const;

  Kind kind() const { return kind_; }

  // Largest length a spec may name or a sample may return (16 Mi tokens).
  static constexpr int32_t kMaxLength = 1 << 24;

 private:
  LengthDistribution(Kind kind, int32_t lo, int32_t hi, double mean, double stddev)
      : kind_(kind), lo_(lo), hi_(hi), mean_(mean), stddev_(stddev) {}

  Kind kind_;
  int32_t lo_;  // kFixed: the length (== hi_); kUniform: inclusive bounds.
  int32_t hi_;
  double mean_;    // kNormal only.
  double stddev_;  // kNormal only.
};

// One ShareGPT conversation: its first user turn, the system turn before it and the first
// assistant turn after it.
struct Conversation {
  std::string system;  // "" if none.
  std::string prompt;
  std::string completion;
};

// The parsed contents of a dataset file, immutable once loaded.
struct DatasetFile {
  std::string path;
  std::vector<WorkItem> prompts;            // jsonl: every usable entry, in file order
  std::vector<Conversation> conversations;  // sharegpt: every >= 2-turn conversation
};

struct WorkloadOptions {
  // "synthetic", "jsonl:PATH", "sharegpt:PATH", "shared-prefix", "replay", "code-edit".
  std::string dataset = "synthetic";
  int32_t num_items = 0;  // How many work items to produce (> 0).
  // Synthetic prompt tokens (synthetic, shared-prefix suffix, replay, code-edit ~code size).
  std::string input_len = "uniform:64:256";
  std::string output_len = "fixed:64";  // Output tokens for synthetic kinds.
  bool override_output_len = false;     // For jsonl/sharegpt/code-edit: use output_len instead.
  bool text_prompts = false;   // Synthetic kinds: make text (for chat endpoints), not token ids.
  int32_t vocab_size = 32000;  // Synthetic ids are drawn from [min_token_id, vocab_size).
  int32_t min_token_id = 100;  // Skips special/byte tokens at the bottom of most vocabularies.
  int32_t prefix_groups = 4;   // shared-prefix: item i uses group i % prefix_groups.
  int32_t prefix_len = 512;    // shared-prefix: tokens (or ~tokens of text) each group shares.
  int32_t replay_unique = 4;   // replay: distinct requests, replayed round-robin.
  uint64_t seed = 0;
  // Counts tokens of a text (e.g. a server's Tokenize call); when unset, ceil(bytes / 4).
  // Called only from BuildWorkload's thread; for sharegpt, only for the entries it samples.
  std::function<int32_t(std::string_view)> count_tokens;
  // jsonl/sharegpt: the file already loaded (LoadDatasetFile of `dataset`); null reads it.
  std::shared_ptr<const DatasetFile> file;
};

// Reads and parses the file of a jsonl:PATH or sharegpt:PATH dataset (errors as BuildWorkload
// reports them); null for kinds without a file.
absl::StatusOr<std::shared_ptr<const DatasetFile>> LoadDatasetFile(const std::string& dataset);

// Builds options.num_items items, deterministic for a seed (and, for sharegpt/code-edit, for
// count_tokens). Errors: InvalidArgument for unknown kinds, bad lengths or options, malformed
// files (naming the line) and files with no usable entries (naming the expected fields);
// NotFound (with the path) for unreadable files.
absl::StatusOr<std::vector<WorkItem>> BuildWorkload(const WorkloadOptions& options);

}  // namespace glimpse::tools::loadgen

#endif  // GLIMPSE_TOOLS_LOADGEN_WORKLOAD_H_
