#include "tools/loadgen/workload.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <fstream>
#include <limits>
#include <numbers>
#include <set>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace glimpse::tools::loadgen {
namespace {

using json = nlohmann::json;

// ---- Portable sampling --------------------------------------------------------------------
// std::uniform_int_distribution and friends are implementation-defined, so the same seed would
// give libstdc++ and libc++ users different workloads; these use only the engine's raw output.

// Uniform in [lo, hi] (lo <= hi), by rejection so that no value is favoured.
int64_t UniformInt(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  const uint64_t range = static_cast<uint64_t>(hi - lo) + 1;
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  const uint64_t limit = kMax - kMax % range;  // A multiple of range.
  uint64_t x = rng();
  while (x >= limit) x = rng();
  return lo + static_cast<int64_t>(x % range);
}

// Uniform in [0, 1) with 53 random bits.
double UniformUnit(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// Standard normal by Box-Muller (one of the pair; keeping the other would make Sample stateful).
double StandardNormal(std::mt19937_64& rng) {
  const double u1 = 1.0 - UniformUnit(rng);  // (0, 1]: log(u1) is finite.
  const double u2 = UniformUnit(rng);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

template <typename T>
void Shuffle(std::vector<T>& items, std::mt19937_64& rng) {  // Fisher-Yates.
  for (size_t i = items.size(); i > 1; --i) {
    std::swap(items[i - 1], items[static_cast<size_t>(UniformInt(rng, 0, i - 1))]);
  }
}

// ---- LengthDistribution helpers -----------------------------------------------------------

absl::Status BadSpec(std::string_view spec, std::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat(
      "bad length distribution \"", std::string(spec), "\" (", std::string(reason),
      "); accepted: N, fixed:N, uniform:LO:HI (inclusive), normal:MEAN:STD, with lengths in [1, ",
      LengthDistribution::kMaxLength, "]"));
}

bool ParseLength(const std::string& text, int32_t* out) {
  return absl::SimpleAtoi(text, out) && *out >= 1 && *out <= LengthDistribution::kMaxLength;
}

bool ParseReal(const std::string& text, double* out) {
  return absl::SimpleAtod(text, out) && std::isfinite(*out);
}

// Integers print as integers so that ToString round-trips "normal:128:32" exactly.
std::string FormatReal(double value) { return absl::StrFormat("%.10g", value); }

// ---- Synthetic text -----------------------------------------------------------------------

// Common English words: most are one token in BPE/SPM vocabularies, so text of them has a
// predictable length on every server, and no server's tokenizer hits a pathological case.
constexpr std::string_view kWords[] = {
    "the",      "of",        "and",    "to",     "in",     "is",     "you",    "that",
    "it",       "he",        "was",    "for",    "on",     "are",    "as",     "with",
    "his",      "they",      "at",     "be",     "this",   "have",   "from",   "or",
    "one",      "had",       "by",     "word",   "but",    "not",    "what",   "all",
    "were",     "we",        "when",   "your",   "can",    "said",   "there",  "use",
    "an",       "each",      "which",  "she",    "do",     "how",    "their",  "if",
    "will",     "up",        "other",  "about",  "out",    "many",   "then",   "them",
    "these",    "so",        "some",   "her",    "would",  "make",   "like",   "him",
    "into",     "time",      "has",    "look",   "two",    "more",   "write",  "go",
    "see",      "number",    "no",     "way",    "could",  "people", "my",     "than",
    "first",    "water",     "been",   "call",   "who",    "oil",    "its",    "now",
    "find",     "long",      "down",   "day",    "did",    "get",    "come",   "made",
    "may",      "part",      "over",   "new",    "sound",  "take",   "only",   "little",
    "work",     "know",      "place",  "year",   "live",   "me",     "back",   "give",
    "most",     "very",      "after",  "thing",  "our",    "just",   "name",   "good",
    "sentence", "man",       "think",  "say",    "great",  "where",  "help",   "through",
    "much",     "before",    "line",   "right",  "too",    "mean",   "old",    "any",
    "same",     "tell",      "boy",    "follow", "came",   "want",   "show",   "also",
    "around",   "form",      "three",  "small",  "set",    "put",    "end",    "does",
    "another",  "well",      "large",  "must",   "big",    "even",   "such",   "because",
    "turn",     "here",      "why",    "ask",    "went",   "men",    "read",   "need",
    "land",     "different", "home",   "us",     "move",   "try",    "kind",   "hand",
    "picture",  "again",     "change", "off",    "play",   "spell",  "air",    "away",
    "animal",   "house",     "point",  "page",   "letter", "mother", "answer", "found",
    "study",    "still",     "learn",  "should", "world",  "high",   "every",  "near",
};
constexpr int64_t kNumWords = sizeof(kWords) / sizeof(kWords[0]);

// About `num_tokens` tokens of text: English runs ~0.75 words per token.
std::string RandomWords(std::mt19937_64& rng, int32_t num_tokens) {
  const int64_t num_words = std::max<int64_t>(1, (3 * int64_t{num_tokens} + 2) / 4);
  std::string text;
  text.reserve(static_cast<size_t>(num_words) * 6);
  for (int64_t w = 0; w < num_words; ++w) {
    if (w > 0) text += ' ';
    text += kWords[UniformInt(rng, 0, kNumWords - 1)];
  }
  return text;
}

// ---- Build context --------------------------------------------------------------------------

struct Context {
  const WorkloadOptions& options;
  LengthDistribution input_len;
  LengthDistribution output_len;
  std::function<int32_t(std::string_view)> count_tokens;  // Never empty.
  std::mt19937_64 rng;

  int32_t CountTokens(std::string_view text) const { return std::max(0, count_tokens(text)); }
  int32_t RandomId() {
    return static_cast<int32_t>(UniformInt(rng, options.min_token_id, options.vocab_size - 1));
  }
  void AppendRandomIds(int32_t n, std::vector<int32_t>* ids) {
    for (int32_t i = 0; i < n; ++i) ids->push_back(RandomId());
  }
  // A random id not in *used (then added to it), so that sequences starting with it diverge
  // from all earlier ones exactly there; repeats only once the id range is exhausted.
  int32_t FreshId(std::set<int32_t>* used) {
    int32_t id = RandomId();
    const size_t range = static_cast<size_t>(options.vocab_size - options.min_token_id);
    while (used->size() < range && used->count(id) > 0) id = RandomId();
    used->insert(id);
    return id;
  }
  // The file's output length unless overridden or absent (0).
  int32_t OutputTokens(int32_t from_file) {
    if (from_file > 0 && !options.override_output_len) return from_file;
    return output_len.Sample(rng);
  }
};

WorkItem SyntheticItem(Context& ctx) {
  WorkItem item;
  const int32_t num_tokens = ctx.input_len.Sample(ctx.rng);
  if (ctx.options.text_prompts) {
    item.prompt_text = RandomWords(ctx.rng, num_tokens);
  } else {
    item.prompt_ids.reserve(static_cast<size_t>(num_tokens));
    ctx.AppendRandomIds(num_tokens, &item.prompt_ids);
  }
  item.max_tokens = ctx.output_len.Sample(ctx.rng);
  return item;
}

std::vector<WorkItem> BuildSynthetic(Context& ctx) {
  std::vector<WorkItem> items;
  items.reserve(static_cast<size_t>(ctx.options.num_items));
  for (int32_t i = 0; i < ctx.options.num_items; ++i) items.push_back(SyntheticItem(ctx));
  return items;
}

std::vector<WorkItem> BuildSharedPrefix(Context& ctx) {
  const WorkloadOptions& o = ctx.options;
  const bool text = o.text_prompts;
  // Prefixes first, so that they do not depend on num_items. For ids, each group's prefix and
  // each suffix within a group start with a distinct token: a prefix cache then hits exactly
  // prefix_len tokens, never a token more by chance.
  std::vector<std::vector<int32_t>> prefix_ids(static_cast<size_t>(o.prefix_groups));
  std::vector<std::string> prefix_text(static_cast<size_t>(o.prefix_groups));
  std::set<int32_t> group_first_ids;
  for (int32_t g = 0; g < o.prefix_groups; ++g) {
    if (text) {
      prefix_text[g] = RandomWords(ctx.rng, o.prefix_len);
    } else {
      prefix_ids[g].push_back(ctx.FreshId(&group_first_ids));
      ctx.AppendRandomIds(o.prefix_len - 1, &prefix_ids[g]);
    }
  }
  std::vector<std::set<int32_t>> suffix_first_ids(static_cast<size_t>(o.prefix_groups));
  std::vector<WorkItem> items;
  items.reserve(static_cast<size_t>(o.num_items));
  for (int32_t i = 0; i < o.num_items; ++i) {
    const int32_t g = i % o.prefix_groups;
    const int32_t suffix_len = ctx.input_len.Sample(ctx.rng);
    WorkItem item;
    if (text) {
      item.prompt_text = absl::StrCat(prefix_text[g], " ", RandomWords(ctx.rng, suffix_len));
    } else {
      item.prompt_ids.reserve(prefix_ids[g].size() + static_cast<size_t>(suffix_len));
      item.prompt_ids = prefix_ids[g];
      item.prompt_ids.push_back(ctx.FreshId(&suffix_first_ids[g]));
      ctx.AppendRandomIds(suffix_len - 1, &item.prompt_ids);
    }
    item.max_tokens = ctx.output_len.Sample(ctx.rng);
    item.group = absl::StrCat("prefix-", g);
    items.push_back(std::move(item));
  }
  return items;
}

std::vector<WorkItem> BuildReplay(Context& ctx) {
  std::vector<WorkItem> unique;
  for (int32_t k = 0; k < ctx.options.replay_unique; ++k) {
    unique.push_back(SyntheticItem(ctx));
    unique.back().group = absl::StrCat("replay-", k);
  }
  std::vector<WorkItem> items;
  items.reserve(static_cast<size_t>(ctx.options.num_items));
  for (int32_t i = 0; i < ctx.options.num_items; ++i) {
    items.push_back(unique[static_cast<size_t>(i % ctx.options.replay_unique)]);
  }
  return items;
}

// Item i is entries[i % size], in order; output lengths are per item (so an overridden,
// sampled length differs between cycles of one entry).
std::vector<WorkItem> Cycle(Context& ctx, const std::vector<WorkItem>& entries) {
  std::vector<WorkItem> items;
  items.reserve(static_cast<size_t>(ctx.options.num_items));
  for (int32_t i = 0; i < ctx.options.num_items; ++i) {
    items.push_back(entries[static_cast<size_t>(i) % entries.size()]);
    items.back().max_tokens = ctx.OutputTokens(items.back().max_tokens);
  }
  return items;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open dataset file \"", path, "\""));
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::NotFoundError(absl::StrCat("cannot read \"", path, "\""));
  return contents.str();
}

// ---- jsonl:PATH -----------------------------------------------------------------------------

// Parses a prompts-file entry into *item (max_tokens 0 = not given). Returns an error message,
// empty when the entry is well-formed (it may still have no prompt).
std::string ParsePromptEntry(const json& entry, WorkItem* item) {
  if (!entry.is_object()) return "not a JSON object";
  if (auto it = entry.find("prompt"); it != entry.end() && !it->is_null()) {
    if (!it->is_string()) return "\"prompt\" is not a string";
    item->prompt_text = it->get<std::string>();
  }
  if (auto it = entry.find("prompt_tokens"); it != entry.end() && !it->is_null()) {
    if (!it->is_array()) return "\"prompt_tokens\" is not an array";
    for (const json& id : *it) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return "\"prompt_tokens\" holds something other than a non-negative int32";
      }
      item->prompt_ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
    }
  }
  if (auto it = entry.find("messages"); it != entry.end() && !it->is_null()) {
    if (!it->is_array()) return "\"messages\" is not an array";
    for (const json& m : *it) {
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string() ||
          !m.contains("content") || !m["content"].is_string()) {
        return "\"messages\" entries must be {\"role\": string, \"content\": string}";
      }
      item->messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    }
  }
  for (const char* key : {"max_tokens", "output_len"}) {  // max_tokens wins if both are given.
    auto it = entry.find(key);
    if (it == entry.end() || it->is_null()) continue;
    if (!it->is_number_integer() || it->get<int64_t>() < 1 ||
        it->get<int64_t>() > LengthDistribution::kMaxLength) {
      return absl::StrCat("\"", key, "\" is not an integer in [1, ", LengthDistribution::kMaxLength,
                          "]");
    }
    item->max_tokens = static_cast<int32_t>(it->get<int64_t>());
    break;
  }
  return "";
}

absl::StatusOr<std::vector<WorkItem>> LoadPrompts(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string contents, ReadFile(path));
  std::vector<WorkItem> entries;
  std::istringstream lines(contents);
  std::string line;
  for (int64_t line_number = 1; std::getline(lines, line); ++line_number) {
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    const json entry = json::parse(line, /*cb=*/nullptr, /*allow_exceptions=*/false);
    std::string error = entry.is_discarded() ? "not valid JSON" : "";
    WorkItem item;
    if (error.empty()) error = ParsePromptEntry(entry, &item);
    if (!error.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_number, ": ", error));
    }
    // Well-formed lines without a prompt (e.g. metadata) are skipped, not fatal.
    if (item.prompt_text.empty() && item.prompt_ids.empty() && item.messages.empty()) continue;
    entries.push_back(std::move(item));
  }
  if (entries.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path,
        ": no usable entries; each line must be a JSON object with a non-empty \"prompt\" "
        "(text), \"prompt_tokens\" (int array) or \"messages\" ([{role, content}]), and "
        "optionally \"max_tokens\" or \"output_len\" (int)"));
  }
  return entries;
}

std::vector<WorkItem> BuildFromJsonl(Context& ctx, const DatasetFile& file) {
  return Cycle(ctx, file.prompts);
}

// ---- sharegpt:PATH --------------------------------------------------------------------------

// Maps ShareGPT's "from" values and OpenAI's roles onto system/user/assistant ("" = other).
std::string NormalizeRole(const std::string& role) {
  if (role == "human" || role == "user") return "user";
  if (role == "gpt" || role == "assistant" || role == "chatgpt" || role == "bard" ||
      role == "bing" || role == "model") {
    return "assistant";
  }
  if (role == "system") return "system";
  return "";
}

// The first user turn, the system turn before it and the first assistant turn after it; false
// when the entry has fewer than 2 turns or no such pair (vLLM keeps only >= 2-turn entries).
bool ExtractConversation(const json& entry, Conversation* out) {
  if (!entry.is_object()) return false;
  const char* role_key = "from";
  const char* text_key = "value";
  auto turns = entry.find("conversations");
  if (turns == entry.end()) {
    turns = entry.find("messages");
    role_key = "role";
    text_key = "content";
  }
  if (turns == entry.end() || !turns->is_array() || turns->size() < 2) return false;
  bool have_prompt = false;
  for (const json& turn : *turns) {
    if (!turn.is_object() || !turn.contains(role_key) || !turn[role_key].is_string() ||
        !turn.contains(text_key) || !turn[text_key].is_string()) {
      continue;
    }
    const std::string role = NormalizeRole(turn[role_key].get<std::string>());
    if (!have_prompt && role == "system" && out->system.empty()) {
      out->system = turn[text_key].get<std::string>();
    } else if (!have_prompt && role == "user") {
      out->prompt = turn[text_key].get<std::string>();
      have_prompt = true;
    } else if (have_prompt && role == "assistant") {
      out->completion = turn[text_key].get<std::string>();
      return true;
    }
  }
  return false;
}

// Both shapes: a JSON array (ShareGPT_V3_unfiltered_cleaned_split.json) or one entry per line.
absl::StatusOr<std::vector<Conversation>> LoadConversations(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string contents, ReadFile(path));
  std::vector<Conversation> conversations;
  auto add = [&conversations](const json& entry) {
    Conversation c;
    if (ExtractConversation(entry, &c)) conversations.push_back(std::move(c));
  };
  const size_t first = contents.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && contents[first] == '[') {
    json array;
    try {  // For the parser's message, which says where the file is broken.
      array = json::parse(contents);
    } catch (const json::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
    }
    for (const json& entry : array) add(entry);
    return conversations;
  }
  std::istringstream lines(contents);
  std::string line;
  for (int64_t line_number = 1; std::getline(lines, line); ++line_number) {
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    const json entry = json::parse(line, /*cb=*/nullptr, /*allow_exceptions=*/false);
    if (entry.is_discarded()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_number, ": not valid JSON"));
    }
    add(entry);
  }
  return conversations;
}

absl::StatusOr<std::vector<WorkItem>> BuildFromShareGpt(Context& ctx, const DatasetFile& file) {
  const std::string& path = file.path;
  // Shuffled indices, not a shuffled copy of the conversations (the file may be large).
  std::vector<size_t> order(file.conversations.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  // As vLLM: shuffle, then take entries until enough pass the length filter. Counting tokens
  // only for the entries taken keeps a server-side count_tokens to num_items-ish calls on a
  // file of ~100k conversations.
  constexpr int32_t kMinTokens = 4;
  Shuffle(order, ctx.rng);
  std::vector<WorkItem> entries;
  for (const size_t i : order) {
    const Conversation& c = file.conversations[i];
    if (std::ssize(entries) >= ctx.options.num_items) break;
    if (ctx.CountTokens(c.prompt) < kMinTokens) continue;
    WorkItem item;
    if (!ctx.options.override_output_len) {
      item.max_tokens = ctx.CountTokens(c.completion);
      if (item.max_tokens < kMinTokens) continue;
    }
    item.prompt_text = c.prompt;
    if (!c.system.empty()) item.messages.push_back({"system", c.system});
    item.messages.push_back({"user", c.prompt});
    entries.push_back(std::move(item));
  }
  if (entries.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path,
        ": no usable conversations; expected a JSON array or JSON lines of objects with "
        "\"conversations\": [{\"from\": \"human\"|\"gpt\"|\"system\", \"value\": text}] or "
        "\"messages\": [{\"role\": \"user\"|\"assistant\"|\"system\", \"content\": text}], "
        "holding a user turn and then an assistant turn of >= ",
        kMinTokens, " tokens each"));
  }
  return Cycle(ctx, entries);
}

// ---- code-edit ------------------------------------------------------------------------------

constexpr std::string_view kFunctionNames[] = {
    "update_totals",     "scan_buffer",    "merge_counts",    "apply_filter",
    "compute_checksum",  "resize_window",  "process_records", "normalize_values",
    "accumulate_scores", "rebalance_bins", "trim_samples",    "encode_block",
};
// Local names; none is a C keyword, a parameter name or a whole word inside another.
constexpr std::string_view kVariableNames[] = {
    "count", "total",  "offset", "acc",    "delta", "step",   "width",  "height",
    "score", "bucket", "carry",  "cursor", "span",  "weight", "stride", "remain",
    "peak",  "level",  "scale",  "bias",   "head",  "tail",   "mask",   "budget",
};
constexpr int64_t kNumVariableNames = sizeof(kVariableNames) / sizeof(kVariableNames[0]);

struct CodeSnippet {
  std::string code;
  std::string old_name;  // The variable to rename: declared, used in every block, returned.
  std::string new_name;  // Not otherwise in the code.
};

// Plausible C: one function over `data[0..n)` with a few int locals, made of loops, ifs and
// arithmetic blocks until it reaches `target_bytes`. Every block uses the renamed variable, so
// it occurs at least 3 times (declaration, a block, the return) and more as the code grows.
CodeSnippet GenerateCode(std::mt19937_64& rng, int64_t target_bytes) {
  std::vector<std::string_view> names(std::begin(kVariableNames), std::end(kVariableNames));
  Shuffle(names, rng);
  const int64_t num_locals = UniformInt(rng, 3, 5);  // Including the renamed one.
  CodeSnippet snippet{"", std::string(names[0]), std::string(names[num_locals])};
  auto c = [&rng](int64_t lo, int64_t hi) { return UniformInt(rng, lo, hi); };
  // Block operands: slot `must` is the renamed variable, the others any local.
  auto operands = [&](std::string_view* a, std::string_view* b) {
    const bool first = c(0, 1) == 0;
    *a = first ? names[0] : names[c(0, num_locals - 1)];
    *b = first ? names[c(0, num_locals - 1)] : names[0];
  };
  const auto fn = kFunctionNames[c(0, std::ssize(kFunctionNames) - 1)];
  std::string& s = snippet.code;
  absl::StrAppend(&s, "static int ", std::string(fn), "(int *data, int n, int limit) {\n");
  for (int64_t v = 0; v < num_locals; ++v) {
    absl::StrAppend(&s, "  int ", std::string(names[v]), " = ", c(0, 16), ";\n");
  }
  const std::string ret = absl::StrCat("  return ", std::string(names[0]), " + ",
                                       std::string(names[c(1, num_locals - 1)]), ";\n}\n");
  do {
    std::string_view x, y;
    operands(&x, &y);
    const std::string a(x), b(y);
    switch (c(0, 5)) {
      case 0:
        absl::StrAppend(&s, "  for (int i = 0; i < n; ++i) {\n    if (data[i] > ", a, ") {\n",
                        "      ", a, " += data[i] * ", c(2, 9), ";\n    } else {\n      ", b, " = ",
                        b, " - ", c(1, 7), ";\n    }\n  }\n");
        break;
      case 1:
        absl::StrAppend(&s, "  if (", a, " % ", c(2, 9), " == 0) {\n    ", b, " = ", a, " / ",
                        c(2, 5), " + ", b, ";\n  } else {\n    ", a, " -= ", c(1, 9), ";\n  }\n");
        break;
      case 2:
        absl::StrAppend(&s, "  while (", a, " > limit) {\n    ", a, " = ", a, " / 2;\n    ", b,
                        " += 1;\n  }\n");
        break;
      case 3:
        absl::StrAppend(&s, "  ", a, " = (", a, " + ", b, ") * ", c(2, 9), " % ", c(11, 97), ";\n");
        break;
      case 4:
        absl::StrAppend(&s, "  if (n > 0) {\n    data[", a, " % n] = ", b, " + ", c(1, 32),
                        ";\n  }\n");
        break;
      default:
        absl::StrAppend(&s, "  for (int j = n - 1; j > 0; --j) {\n    ", a, " ^= data[j] & ", b,
                        ";\n    if (", a, " < 0) {\n      ", a, " = -", a, ";\n    }\n  }\n");
        break;
    }
  } while (std::ssize(s) + std::ssize(ret) < target_bytes);
  s += ret;
  return snippet;
}

absl::StatusOr<std::vector<WorkItem>> BuildCodeEdit(Context& ctx) {
  // Code tokenizes denser than English, so with a real tokenizer, measure its bytes per token
  // once on a sample (own seed: the items must not depend on whether count_tokens is set).
  double bytes_per_token = 4.0;
  if (ctx.options.count_tokens) {
    std::mt19937_64 sample_rng(ctx.options.seed ^ 0x9e3779b97f4a7c15ULL);
    const std::string sample = GenerateCode(sample_rng, 4096).code;
    bytes_per_token = std::clamp(
        static_cast<double>(sample.size()) / std::max(1, ctx.CountTokens(sample)), 1.0, 8.0);
  }
  std::vector<WorkItem> items;
  items.reserve(static_cast<size_t>(ctx.options.num_items));
  for (int32_t i = 0; i < ctx.options.num_items; ++i) {
    const int32_t num_tokens = ctx.input_len.Sample(ctx.rng);
    const CodeSnippet snippet = GenerateCode(ctx.rng, std::llround(num_tokens * bytes_per_token));
    WorkItem item;
    item.prompt_text = absl::StrCat(
        "Rename the variable `", snippet.old_name, "` to `", snippet.new_name,
        "` in the following function and reply with the complete updated code only.\n\n```c\n",
        snippet.code, "```\n");
    item.messages.push_back({"user", item.prompt_text});
    // The answer is the code again (slightly more for the fences and the longer name).
    item.max_tokens = ctx.OutputTokens(ctx.CountTokens(snippet.code) + 16);
    item.group = "code-edit";
    items.push_back(std::move(item));
  }
  return items;
}

absl::Status ValidateOptions(const WorkloadOptions& o) {
  if (o.num_items <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_items must be > 0, got ", o.num_items));
  }
  if (o.min_token_id < 0 || o.vocab_size <= o.min_token_id) {
    return absl::InvalidArgumentError(
        absl::StrCat("need 0 <= min_token_id < vocab_size, got min_token_id ", o.min_token_id,
                     " and vocab_size ", o.vocab_size));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LengthDistribution> LengthDistribution::Parse(std::string_view spec) {
  const std::string trimmed(absl::StripAsciiWhitespace(std::string(spec)));
  const std::vector<std::string> parts = absl::StrSplit(trimmed, ':');
  int32_t lo = 0;
  int32_t hi = 0;
  if (parts.size() == 1 || (parts.size() == 2 && parts[0] == "fixed")) {
    if (!ParseLength(parts.back(), &lo)) return BadSpec(spec, "length is not an integer >= 1");
    return LengthDistribution(Kind::kFixed, lo, lo, 0, 0);
  }
  if (parts.size() == 3 && parts[0] == "uniform") {
    if (!ParseLength(parts[1], &lo) || !ParseLength(parts[2], &hi)) {
      return BadSpec(spec, "LO and HI must be integers >= 1");
    }
    if (lo > hi) return BadSpec(spec, "LO > HI");
    return LengthDistribution(Kind::kUniform, lo, hi, 0, 0);
  }
  if (parts.size() == 3 && parts[0] == "normal") {
    double mean = 0;
    double stddev = 0;
    if (!ParseReal(parts[1], &mean) || !ParseReal(parts[2], &stddev) || mean <= 0 ||
        mean > kMaxLength || stddev < 0 || stddev > kMaxLength) {
      return BadSpec(spec, "MEAN must be a number > 0 and STD a number >= 0");
    }
    return LengthDistribution(Kind::kNormal, 0, 0, mean, stddev);
  }
  return BadSpec(spec, "unknown form");
}

int32_t LengthDistribution::Sample(std::mt19937_64& rng) const {
  switch (kind_) {
    case Kind::kFixed:
      return lo_;
    case Kind::kUniform:
      return static_cast<int32_t>(UniformInt(rng, lo_, hi_));
    case Kind::kNormal: {
      const double value = std::round(mean_ + stddev_ * StandardNormal(rng));
      return static_cast<int32_t>(std::clamp(value, 1.0, static_cast<double>(kMaxLength)));
    }
  }
  return 1;  // Unreachable: the switch lists every kind.
}

std::string LengthDistribution::ToString() const {
  switch (kind_) {
    case Kind::kFixed:
      return absl::StrCat("fixed:", lo_);
    case Kind::kUniform:
      return absl::StrCat("uniform:", lo_, ":", hi_);
    case Kind::kNormal:
      return absl::StrCat("normal:", FormatReal(mean_), ":", FormatReal(stddev_));
  }
  return "";  // Unreachable.
}

absl::StatusOr<std::shared_ptr<const DatasetFile>> LoadDatasetFile(const std::string& dataset) {
  const size_t colon = dataset.find(':');
  const std::string kind = dataset.substr(0, colon);
  if (kind != "jsonl" && kind != "sharegpt") return nullptr;
  const std::string path = colon == std::string::npos ? "" : dataset.substr(colon + 1);
  if (path.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset \"", dataset, "\" needs a file: ", kind, ":PATH"));
  }
  auto file = std::make_shared<DatasetFile>();
  file->path = path;
  if (kind == "jsonl") {
    ASSIGN_OR_RETURN(file->prompts, LoadPrompts(path));
  } else {
    ASSIGN_OR_RETURN(file->conversations, LoadConversations(path));
  }
  return file;
}

absl::StatusOr<std::vector<WorkItem>> BuildWorkload(const WorkloadOptions& options) {
  RETURN_IF_ERROR(ValidateOptions(options));
  absl::StatusOr<LengthDistribution> input_len = LengthDistribution::Parse(options.input_len);
  if (!input_len.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("input_len: ", std::string(input_len.status().message())));
  }
  absl::StatusOr<LengthDistribution> output_len = LengthDistribution::Parse(options.output_len);
  if (!output_len.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("output_len: ", std::string(output_len.status().message())));
  }
  std::function<int32_t(std::string_view)> count_tokens = options.count_tokens;
  if (!count_tokens) {
    count_tokens = [](std::string_view text) {
      return static_cast<int32_t>(std::min<size_t>((text.size() + 3) / 4, INT32_MAX));
    };
  }
  Context ctx{options, *input_len, *output_len, std::move(count_tokens),
              std::mt19937_64(options.seed)};

  const size_t colon = options.dataset.find(':');
  const std::string kind = options.dataset.substr(0, colon);
  const bool has_path = colon != std::string::npos;
  if (kind == "jsonl" || kind == "sharegpt") {
    std::shared_ptr<const DatasetFile> file = options.file;
    if (file == nullptr) {
      ASSIGN_OR_RETURN(file, LoadDatasetFile(options.dataset));
    }
    if (kind == "jsonl") return BuildFromJsonl(ctx, *file);
    return BuildFromShareGpt(ctx, *file);
  }
  if (!has_path && kind == "synthetic") return BuildSynthetic(ctx);
  if (!has_path && kind == "shared-prefix") {
    if (options.prefix_groups < 1 || options.prefix_len < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("shared-prefix needs prefix_groups >= 1 and prefix_len >= 1, got ",
                       options.prefix_groups, " and ", options.prefix_len));
    }
    return BuildSharedPrefix(ctx);
  }
  if (!has_path && kind == "replay") {
    if (options.replay_unique < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("replay needs replay_unique >= 1, got ", options.replay_unique));
    }
    return BuildReplay(ctx);
  }
  if (!has_path && kind == "code-edit") return BuildCodeEdit(ctx);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dataset \"", options.dataset,
                   "\"; expected synthetic, jsonl:PATH, sharegpt:PATH, shared-prefix, replay or "
                   "code-edit"));
}

}  // namespace glimpse::tools::loadgen
