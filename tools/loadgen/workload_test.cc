#include "tools/loadgen/workload.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace glimpse::tools::loadgen {
namespace {

using ::testing::HasSubstr;

std::string TestDataPath(const std::string& name) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir != nullptr && workspace != nullptr) {
    return absl::StrCat(srcdir, "/", workspace, "/tools/loadgen/testdata/", name);
  }
  return "tools/loadgen/testdata/" + name;
}

// The contents of tools/loadgen/testdata/`name`.
std::string ReadTestData(const std::string& name) {
  std::ifstream in(TestDataPath(name));
  std::ostringstream contents;
  contents << in.rdbuf();
  EXPECT_FALSE(contents.str().empty()) << name;
  return contents.str();
}

// Writes `contents` to a fresh file under the test's scratch directory.
std::string WriteTempFile(const std::string& name, const std::string& contents) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name);
  std::ofstream(path) << contents;
  return path;
}

std::vector<WorkItem> Build(const WorkloadOptions& options) {
  absl::StatusOr<std::vector<WorkItem>> items = BuildWorkload(options);
  EXPECT_TRUE(items.ok()) << items.status();
  if (!items.ok()) return {};
  EXPECT_EQ(items->size(), static_cast<size_t>(options.num_items));
  return *std::move(items);
}

int32_t DefaultCount(const std::string& text) {
  return static_cast<int32_t>((text.size() + 3) / 4);
}

int32_t CountWords(std::string_view text) {
  return static_cast<int32_t>(
      std::vector<std::string>(absl::StrSplit(std::string(text), ' ', absl::SkipEmpty())).size());
}

LengthDistribution ParseOrDie(std::string_view spec) {
  absl::StatusOr<LengthDistribution> d = LengthDistribution::Parse(spec);
  EXPECT_TRUE(d.ok()) << d.status();
  return *d;
}

// ---- LengthDistribution ---------------------------------------------------------------------

TEST(LengthDistributionTest, ParseAcceptsEveryFormAndToStringIsCanonical) {
  const std::map<std::string, std::string> canonical = {
      {"64", "fixed:64"},
      {"fixed:7", "fixed:7"},
      {" uniform:64:256 ", "uniform:64:256"},
      {"uniform:5:5", "uniform:5:5"},
      {"normal:128:32", "normal:128:32"},
      {"normal:10.5:0", "normal:10.5:0"},
  };
  for (const auto& [spec, expected] : canonical) {
    const LengthDistribution d = ParseOrDie(spec);
    EXPECT_EQ(d.ToString(), expected) << spec;
    EXPECT_EQ(ParseOrDie(d.ToString()).ToString(), expected) << spec;
  }
  EXPECT_EQ(ParseOrDie("3").kind(), LengthDistribution::Kind::kFixed);
  EXPECT_EQ(ParseOrDie("uniform:1:2").kind(), LengthDistribution::Kind::kUniform);
  EXPECT_EQ(ParseOrDie("normal:9:1").kind(), LengthDistribution::Kind::kNormal);
}

TEST(LengthDistributionTest, ParseRejectsBadSpecsQuotingThemAndTheAcceptedForms) {
  for (const std::string spec :
       {"", "0", "-3", "abc", "fixed:", "fixed:1.5", "uniform:5", "uniform:9:3", "uniform:0:4",
        "uniform:1:2:3", "normal:0:1", "normal:5:-1", "normal:x:1", "gauss:1:2", "99999999999",
        "fixed:20000000"}) {
    absl::StatusOr<LengthDistribution> d = LengthDistribution::Parse(spec);
    ASSERT_FALSE(d.ok()) << spec;
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(d.status().message()), HasSubstr("\"" + spec + "\""));
    EXPECT_THAT(std::string(d.status().message()), HasSubstr("uniform:LO:HI"));
    EXPECT_THAT(std::string(d.status().message()), HasSubstr("normal:MEAN:STD"));
  }
}

TEST(LengthDistributionTest, FixedAlwaysReturnsItsLength) {
  const LengthDistribution d = ParseOrDie("fixed:37");
  std::mt19937_64 rng(1);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(d.Sample(rng), 37);
}

TEST(LengthDistributionTest, UniformStaysInRangeAndCoversBothEnds) {
  const LengthDistribution d = ParseOrDie("uniform:3:9");
  std::mt19937_64 rng(2);
  std::map<int32_t, int> counts;
  for (int i = 0; i < 7000; ++i) {
    const int32_t v = d.Sample(rng);
    ASSERT_GE(v, 3);
    ASSERT_LE(v, 9);
    ++counts[v];
  }
  ASSERT_EQ(counts.size(), 7u);  // Every value, both ends included.
  for (const auto& [value, count] : counts) EXPECT_NEAR(count, 1000, 150) << value;
}

TEST(LengthDistributionTest, NormalHasTheRequestedMeanAndStd) {
  const LengthDistribution d = ParseOrDie("normal:200:20");
  std::mt19937_64 rng(3);
  constexpr int kN = 20000;
  double sum = 0;
  double sum_sq = 0;
  for (int i = 0; i < kN; ++i) {
    const double v = d.Sample(rng);
    sum += v;
    sum_sq += v * v;
  }
  const double mean = sum / kN;
  const double stddev = std::sqrt(sum_sq / kN - mean * mean);
  EXPECT_NEAR(mean, 200, 1.0);
  EXPECT_NEAR(stddev, 20, 1.0);
}

TEST(LengthDistributionTest, NormalIsClampedToAtLeastOne) {
  const LengthDistribution d = ParseOrDie("normal:2:50");
  std::mt19937_64 rng(4);
  int ones = 0;
  for (int i = 0; i < 1000; ++i) {
    const int32_t v = d.Sample(rng);
    ASSERT_GE(v, 1);
    ones += v == 1;
  }
  EXPECT_GT(ones, 300);  // About half the mass is below 1.
}

// ---- Options and determinism ----------------------------------------------------------------

TEST(BuildWorkloadTest, RejectsBadOptionsWithInvalidArgument) {
  auto expect_error = [](WorkloadOptions o, const std::string& fragment) {
    absl::StatusOr<std::vector<WorkItem>> items = BuildWorkload(o);
    ASSERT_FALSE(items.ok()) << o.dataset;
    EXPECT_EQ(items.status().code(), absl::StatusCode::kInvalidArgument) << items.status();
    EXPECT_THAT(std::string(items.status().message()), HasSubstr(fragment));
  };
  WorkloadOptions o;
  o.num_items = 4;
  expect_error(WorkloadOptions{}, "num_items");
  WorkloadOptions bad = o;
  bad.dataset = "lorem";
  expect_error(bad, "\"lorem\"");
  bad.dataset = "synthetic:extra";
  expect_error(bad, "shared-prefix");
  bad.dataset = "jsonl:";
  expect_error(bad, "jsonl:PATH");
  bad = o;
  bad.input_len = "uniform:9:1";
  expect_error(bad, "input_len");
  bad = o;
  bad.output_len = "many";
  expect_error(bad, "output_len");
  bad = o;
  bad.min_token_id = 500;
  bad.vocab_size = 500;
  expect_error(bad, "min_token_id");
  bad = o;
  bad.dataset = "shared-prefix";
  bad.prefix_groups = 0;
  expect_error(bad, "prefix_groups");
  bad = o;
  bad.dataset = "replay";
  bad.replay_unique = 0;
  expect_error(bad, "replay_unique");
}

TEST(BuildWorkloadTest, SameSeedGivesSameItemsAndOtherSeedsDiffer) {
  for (const std::string& dataset :
       std::vector<std::string>{"synthetic", "shared-prefix", "replay", "code-edit",
                                "sharegpt:" + TestDataPath("sharegpt.json")}) {
    for (const bool text : {false, true}) {
      WorkloadOptions o;
      o.dataset = dataset;
      o.num_items = 8;
      o.text_prompts = text;
      o.input_len = "uniform:16:32";
      o.output_len = "uniform:1:1000";
      o.override_output_len = true;  // Files too then draw lengths from the seed.
      o.seed = 11;
      const std::vector<WorkItem> a = Build(o);
      EXPECT_EQ(a, Build(o)) << dataset;
      o.seed = 12;
      EXPECT_NE(a, Build(o)) << dataset;
    }
  }
}

// ---- synthetic ------------------------------------------------------------------------------

TEST(SyntheticTest, IdsAreInVocabRangeAndLengthsFollowTheDistribution) {
  WorkloadOptions o;
  o.num_items = 2000;
  o.input_len = "uniform:5:9";
  o.output_len = "fixed:17";
  o.vocab_size = 140;
  o.min_token_id = 100;
  std::set<size_t> lengths;
  std::set<int32_t> ids;
  for (const WorkItem& item : Build(o)) {
    lengths.insert(item.prompt_ids.size());
    for (int32_t id : item.prompt_ids) {
      ASSERT_GE(id, 100);
      ASSERT_LT(id, 140);
      ids.insert(id);
    }
    EXPECT_TRUE(item.prompt_text.empty());
    EXPECT_TRUE(item.messages.empty());
    EXPECT_EQ(item.max_tokens, 17);
    EXPECT_EQ(item.group, "");
  }
  EXPECT_EQ(lengths, (std::set<size_t>{5, 6, 7, 8, 9}));
  EXPECT_EQ(ids.size(), 40u);  // Both ends of [min_token_id, vocab_size) are drawn.
}

TEST(SyntheticTest, TextPromptsHaveAboutThreeQuartersOfAWordPerToken) {
  WorkloadOptions o;
  o.num_items = 5;
  o.input_len = "fixed:100";
  o.text_prompts = true;
  std::set<std::string> prompts;
  for (const WorkItem& item : Build(o)) {
    EXPECT_TRUE(item.prompt_ids.empty());
    EXPECT_EQ(CountWords(item.prompt_text), 75);
    prompts.insert(item.prompt_text);
  }
  EXPECT_EQ(prompts.size(), 5u);
}

// ---- jsonl ----------------------------------------------------------------------------------

TEST(JsonlTest, LoadsEveryPromptFormAndSkipsBlankAndPromptlessLines) {
  WorkloadOptions o;
  o.dataset = "jsonl:" + TestDataPath("prompts.jsonl");
  o.num_items = 4;
  o.output_len = "fixed:11";
  const std::vector<WorkItem> items = Build(o);
  ASSERT_EQ(items.size(), 4u);
  // Line 1 has the shape of tests/data/refs/greedy_short.jsonl: text and ids both kept.
  EXPECT_EQ(items[0].prompt_text, "def add(a, b):\n    return a + b\n");
  EXPECT_EQ(items[0].prompt_ids, (std::vector<int32_t>{1, 822, 788, 29898, 29874}));
  EXPECT_EQ(items[1].prompt_text, "Tell me a story about a lighthouse keeper.");
  EXPECT_TRUE(items[1].prompt_ids.empty());
  EXPECT_EQ(items[2].messages,
            (std::vector<ChatMessage>{{"system", "Be brief."}, {"user", "What is two plus two?"}}));
  EXPECT_TRUE(items[2].prompt_text.empty());
  EXPECT_EQ(items[3].prompt_ids, (std::vector<int32_t>{5, 6, 7, 8}));
}

TEST(JsonlTest, OutputLengthIsTheFilesUnlessOverriddenOrAbsent) {
  WorkloadOptions o;
  o.dataset = "jsonl:" + TestDataPath("prompts.jsonl");
  o.num_items = 4;
  o.output_len = "fixed:11";
  std::vector<int32_t> max_tokens;
  for (const WorkItem& item : Build(o)) max_tokens.push_back(item.max_tokens);
  // max_tokens, output_len, none (sampled), and max_tokens over output_len.
  EXPECT_EQ(max_tokens, (std::vector<int32_t>{48, 7, 11, 3}));
  o.override_output_len = true;
  for (const WorkItem& item : Build(o)) EXPECT_EQ(item.max_tokens, 11);
}

TEST(JsonlTest, CyclesThroughEntriesInFileOrder) {
  WorkloadOptions o;
  o.dataset = "jsonl:" + TestDataPath("prompts.jsonl");
  o.num_items = 10;
  const std::vector<WorkItem> items = Build(o);
  for (size_t i = 4; i < items.size(); ++i) EXPECT_EQ(items[i], items[i % 4]) << i;
}

TEST(JsonlTest, MalformedLineIsAnErrorNamingItsLineNumber) {
  WorkloadOptions o;
  o.num_items = 1;
  o.dataset = "jsonl:" + WriteTempFile("bad_json.jsonl", "{\"prompt\": \"ok\"}\n\n{\"prompt\": \n");
  absl::StatusOr<std::vector<WorkItem>> items = BuildWorkload(o);
  ASSERT_FALSE(items.ok());
  EXPECT_EQ(items.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(items.status().message()), HasSubstr("bad_json.jsonl:3:"));

  o.dataset = "jsonl:" + WriteTempFile("bad_ids.jsonl",
                                       "{\"prompt\": \"ok\"}\n"
                                       "{\"prompt_tokens\": [1, \"two\"]}\n");
  items = BuildWorkload(o);
  ASSERT_FALSE(items.ok());
  EXPECT_THAT(std::string(items.status().message()), HasSubstr("bad_ids.jsonl:2:"));
  EXPECT_THAT(std::string(items.status().message()), HasSubstr("prompt_tokens"));

  o.dataset =
      "jsonl:" + WriteTempFile("bad_len.jsonl", "{\"prompt\": \"ok\", \"max_tokens\": 0}\n");
  items = BuildWorkload(o);
  ASSERT_FALSE(items.ok());
  EXPECT_THAT(std::string(items.status().message()), HasSubstr("bad_len.jsonl:1:"));
}

TEST(JsonlTest, MissingFileIsNotFoundNamingThePath) {
  WorkloadOptions o;
  o.num_items = 1;
  o.dataset = "jsonl:/nonexistent/prompts.jsonl";
  absl::StatusOr<std::vector<WorkItem>> items = BuildWorkload(o);
  ASSERT_FALSE(items.ok());
  EXPECT_EQ(items.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(items.status().message()), HasSubstr("/nonexistent/prompts.jsonl"));
}

TEST(JsonlTest, FileWithoutPromptsIsAnErrorNamingTheExpectedFields) {
  WorkloadOptions o;
  o.num_items = 1;
  o.dataset = "jsonl:" + WriteTempFile("no_prompts.jsonl", "{\"id\": 1}\n{\"text\": \"x\"}\n");
  absl::StatusOr<std::vector<WorkItem>> items = BuildWorkload(o);
  ASSERT_FALSE(items.ok());
  EXPECT_EQ(items.status().code(), absl::StatusCode::kInvalidArgument);
  for (const char* field : {"\"prompt\"", "\"prompt_tokens\"", "\"messages\""}) {
    EXPECT_THAT(std::string(items.status().message()), HasSubstr(field));
  }
}

// ---- sharegpt -------------------------------------------------------------------------------

// prompt_text -> item, checking that one prompt always maps to the same item.
std::map<std::string, WorkItem> ByPrompt(const std::vector<WorkItem>& items) {
  std::map<std::string, WorkItem> by_prompt;
  for (const WorkItem& item : items) {
    auto [it, inserted] = by_prompt.emplace(item.prompt_text, item);
    if (!inserted) {
      EXPECT_EQ(it->second, item);
    }
  }
  return by_prompt;
}

TEST(ShareGptTest, ArrayFileKeepsFirstUserTurnAndDropsShortOrOneTurnEntries) {
  WorkloadOptions o;
  o.dataset = "sharegpt:" + TestDataPath("sharegpt.json");
  o.num_items = 9;
  const std::map<std::string, WorkItem> items = ByPrompt(Build(o));
  ASSERT_EQ(items.size(), 3u);  // One-turn, short-prompt and short-completion entries dropped.

  const std::string france = "What is the capital of France and why is it famous?";
  ASSERT_TRUE(items.contains(france));
  EXPECT_EQ(items.at(france).messages, (std::vector<ChatMessage>{{"user", france}}));
  EXPECT_EQ(items.at(france).max_tokens,
            DefaultCount("The capital of France is Paris, famous for art, food and the Eiffel "
                         "Tower."));

  const std::string haiku = "Write a haiku about the sea and its waves.";
  ASSERT_TRUE(items.contains(haiku));
  EXPECT_EQ(items.at(haiku).messages,
            (std::vector<ChatMessage>{{"system", "You are a poet who writes short poems."},
                                      {"user", haiku}}));

  const std::string recursion = "Explain recursion in one paragraph for a beginner, please.";
  ASSERT_TRUE(items.contains(recursion));  // The {"messages": [{role, content}]} shape.
  for (const auto& [prompt, item] : items) EXPECT_TRUE(item.prompt_ids.empty());
}

TEST(ShareGptTest, JsonLinesFileLoadsBothTurnShapes) {
  WorkloadOptions o;
  o.dataset = "sharegpt:" + TestDataPath("sharegpt.jsonl");
  o.num_items = 4;
  const std::map<std::string, WorkItem> items = ByPrompt(Build(o));
  ASSERT_EQ(items.size(), 2u);
  const std::string treasure = "Where is the treasure buried on this island?";
  ASSERT_TRUE(items.contains(treasure));
  EXPECT_EQ(items.at(treasure).messages,
            (std::vector<ChatMessage>{{"system", "Answer like a pirate."}, {"user", treasure}}));
  EXPECT_TRUE(items.contains("Name three primary colors used in painting, please."));
}

TEST(ShareGptTest, CountTokensDecidesOutputLengthAndFiltering) {
  WorkloadOptions o;
  o.dataset = "sharegpt:" + TestDataPath("sharegpt.json");
  o.num_items = 3;
  o.count_tokens = CountWords;
  std::map<std::string, WorkItem> items = ByPrompt(Build(o));
  // By words, "Please answer with one short word only, nothing else." -> "Ok." is still short,
  // and the recursion answer is 17 words.
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items.at("Explain recursion in one paragraph for a beginner, please.").max_tokens, 17);

  o.count_tokens = [](std::string_view) { return 3; };  // Everything too short.
  absl::StatusOr<std::vector<WorkItem>> none = BuildWorkload(o);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("\"conversations\""));
}

TEST(ShareGptTest, OrderIsShuffledPerSeedAndCycles) {
  WorkloadOptions o;
  o.dataset = "sharegpt:" + TestDataPath("sharegpt.json");
  o.num_items = 6;
  std::set<std::vector<std::string>> orders;
  for (uint64_t seed = 0; seed < 12; ++seed) {
    o.seed = seed;
    const std::vector<WorkItem> items = Build(o);
    for (size_t i = 3; i < items.size(); ++i) EXPECT_EQ(items[i], items[i - 3]);
    orders.insert({items[0].prompt_text, items[1].prompt_text, items[2].prompt_text});
  }
  EXPECT_GT(orders.size(), 1u);
}

TEST(ShareGptTest, OverrideUsesOutputLen) {
  WorkloadOptions o;
  o.dataset = "sharegpt:" + TestDataPath("sharegpt.json");
  o.num_items = 5;
  o.override_output_len = true;
  o.output_len = "fixed:5";
  for (const WorkItem& item : Build(o)) EXPECT_EQ(item.max_tokens, 5);
}

// ---- a dataset file loaded once --------------------------------------------------------------

// Loadgen builds one workload per load level: from a DatasetFile loaded once, each build equals
// one that reads the file itself, and needs no file any more.
TEST(DatasetFileTest, LoadedOnceBuildsWhatReadingTheFileBuildsWithoutReadingItAgain) {
  const std::string sharegpt = ReadTestData("sharegpt.json");
  const std::string jsonl = "{\"prompt\": \"alpha\", \"max_tokens\": 3}\n{\"prompt\": \"beta\"}\n";
  for (const auto& [kind, contents] :
       {std::pair{"sharegpt", sharegpt}, std::pair{"jsonl", jsonl}}) {
    const std::string path = WriteTempFile(absl::StrCat("loaded_once_", kind), contents);
    WorkloadOptions o;
    o.dataset = absl::StrCat(kind, ":", path);
    o.num_items = 7;
    absl::StatusOr<std::shared_ptr<const DatasetFile>> file = LoadDatasetFile(o.dataset);
    ASSERT_TRUE(file.ok()) << file.status();
    ASSERT_NE(*file, nullptr);
    std::vector<std::vector<WorkItem>> read_each_time;
    for (uint64_t level = 0; level < 3; ++level) {
      o.seed = 1000003 * level;
      read_each_time.push_back(Build(o));
    }
    ASSERT_EQ(std::remove(path.c_str()), 0);
    o.file = *file;
    for (uint64_t level = 0; level < 3; ++level) {
      o.seed = 1000003 * level;
      EXPECT_EQ(Build(o), read_each_time[level]) << kind << " level " << level;
    }
  }
  // Kinds without a file load nothing; a file kind without a path is refused as before.
  absl::StatusOr<std::shared_ptr<const DatasetFile>> none = LoadDatasetFile("synthetic");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, nullptr);
  EXPECT_EQ(LoadDatasetFile("jsonl:").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadDatasetFile("sharegpt:/no/such/file.json").status().code(),
            absl::StatusCode::kNotFound);
}

// ---- shared-prefix --------------------------------------------------------------------------

TEST(SharedPrefixTest, ItemsOfAGroupShareExactlyThePrefixAndGroupsDiffer) {
  WorkloadOptions o;
  o.dataset = "shared-prefix";
  o.num_items = 30;
  o.prefix_groups = 3;
  o.prefix_len = 16;
  o.input_len = "uniform:1:4";
  o.vocab_size = 110;  // A small vocabulary makes accidental equal tokens likely.
  const std::vector<WorkItem> items = Build(o);
  for (size_t i = 0; i < items.size(); ++i) {
    EXPECT_EQ(items[i].group, absl::StrCat("prefix-", i % 3));
    ASSERT_GE(items[i].prompt_ids.size(), 17u);
    ASSERT_LE(items[i].prompt_ids.size(), 20u);
    for (size_t j = 0; j < i; ++j) {
      const auto& a = items[i].prompt_ids;
      const auto& b = items[j].prompt_ids;
      const size_t common = std::mismatch(a.begin(), a.end(), b.begin(), b.end()).first - a.begin();
      // Same group: exactly the prefix in common; other groups: nothing.
      EXPECT_EQ(common, i % 3 == j % 3 ? 16u : 0u) << i << " vs " << j;
    }
  }
}

TEST(SharedPrefixTest, TextPromptsShareTheGroupsWords) {
  WorkloadOptions o;
  o.dataset = "shared-prefix";
  o.num_items = 6;
  o.prefix_groups = 2;
  o.prefix_len = 40;         // 30 words.
  o.input_len = "fixed:20";  // 15 words.
  o.text_prompts = true;
  std::vector<std::vector<std::string>> words;
  for (const WorkItem& item : Build(o)) {
    EXPECT_TRUE(item.prompt_ids.empty());
    words.push_back(absl::StrSplit(item.prompt_text, ' '));
    ASSERT_EQ(words.back().size(), 45u);
  }
  auto prefix = [&](size_t i) {
    return std::vector<std::string>(words[i].begin(), words[i].begin() + 30);
  };
  EXPECT_EQ(prefix(0), prefix(2));
  EXPECT_EQ(prefix(0), prefix(4));
  EXPECT_EQ(prefix(1), prefix(5));
  EXPECT_NE(prefix(0), prefix(1));
  EXPECT_NE(words[0], words[2]);
}

// ---- replay ---------------------------------------------------------------------------------

TEST(ReplayTest, ItemRepeatsTheRequestReplayUniqueItemsEarlier) {
  for (const bool text : {false, true}) {
    WorkloadOptions o;
    o.dataset = "replay";
    o.num_items = 11;
    o.replay_unique = 3;
    o.text_prompts = text;
    o.output_len = "uniform:1:10000";
    const std::vector<WorkItem> items = Build(o);
    for (size_t i = 0; i < items.size(); ++i) {
      EXPECT_EQ(items[i].group, absl::StrCat("replay-", i % 3));
      if (i >= 3) {
        EXPECT_EQ(items[i], items[i - 3]) << i;
      }
    }
    EXPECT_NE(items[0], items[1]);
    EXPECT_NE(items[1], items[2]);
    EXPECT_NE(items[0], items[2]);
  }
}

// ---- code-edit ------------------------------------------------------------------------------

struct CodeEdit {
  std::string old_name;
  std::string new_name;
  std::string code;
};

// Splits "Rename the variable `OLD` to `NEW` ... ```c\nCODE```\n".
CodeEdit ParseCodeEdit(const std::string& prompt) {
  const std::vector<std::string> ticks = absl::StrSplit(prompt, '`');
  EXPECT_GE(ticks.size(), 5u) << prompt;
  CodeEdit edit{ticks[1], ticks[3], ""};
  const size_t begin = prompt.find("```c\n");
  const size_t end = prompt.rfind("```");
  EXPECT_NE(begin, std::string::npos);
  EXPECT_LT(begin, end);
  edit.code = prompt.substr(begin + 5, end - begin - 5);
  return edit;
}

int WholeWordCount(const std::string& text, const std::string& word) {
  auto is_ident = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  int count = 0;
  for (size_t at = text.find(word); at != std::string::npos; at = text.find(word, at + 1)) {
    const bool starts = at == 0 || !is_ident(text[at - 1]);
    const bool ends = at + word.size() == text.size() || !is_ident(text[at + word.size()]);
    count += starts && ends;
  }
  return count;
}

TEST(CodeEditTest, PromptHoldsCodeWhereTheRenamedVariableOccursRepeatedly) {
  WorkloadOptions o;
  o.dataset = "code-edit";
  o.num_items = 40;
  o.input_len = "uniform:32:600";
  o.text_prompts = false;  // Ignored: code-edit is always text.
  std::set<std::string> names;
  for (const WorkItem& item : Build(o)) {
    EXPECT_EQ(item.group, "code-edit");
    EXPECT_TRUE(item.prompt_ids.empty());
    EXPECT_EQ(item.messages, (std::vector<ChatMessage>{{"user", item.prompt_text}}));
    EXPECT_THAT(item.prompt_text, HasSubstr("reply with the complete updated code only"));
    const CodeEdit edit = ParseCodeEdit(item.prompt_text);
    EXPECT_THAT(edit.code, HasSubstr("static int "));
    EXPECT_EQ(edit.code.back(), '\n');
    EXPECT_GE(WholeWordCount(edit.code, edit.old_name), 3) << edit.code;
    EXPECT_EQ(WholeWordCount(edit.code, edit.new_name), 0) << edit.code;
    EXPECT_NE(edit.old_name, edit.new_name);
    EXPECT_EQ(item.max_tokens, DefaultCount(edit.code) + 16);
    names.insert(edit.old_name);
  }
  EXPECT_GT(names.size(), 5u);  // The renamed variable varies between items.
}

TEST(CodeEditTest, MaxTokensFollowsCountTokensUnlessOverridden) {
  WorkloadOptions o;
  o.dataset = "code-edit";
  o.num_items = 10;
  o.input_len = "fixed:300";
  o.count_tokens = [](std::string_view text) { return static_cast<int32_t>(text.size() / 3); };
  for (const WorkItem& item : Build(o)) {
    const CodeEdit edit = ParseCodeEdit(item.prompt_text);
    EXPECT_EQ(item.max_tokens, static_cast<int32_t>(edit.code.size() / 3) + 16);
  }
  o.override_output_len = true;
  o.output_len = "fixed:9";
  for (const WorkItem& item : Build(o)) EXPECT_EQ(item.max_tokens, 9);
}

TEST(CodeEditTest, CodeSizeFollowsInputLenInTheCountersTokens) {
  for (const int32_t tokens : {256, 1024, 4096}) {
    for (const int32_t bytes_per_token : {2, 4, 6}) {
      WorkloadOptions o;
      o.dataset = "code-edit";
      o.num_items = 5;
      o.input_len = absl::StrCat(tokens);
      o.count_tokens = [bytes_per_token](std::string_view text) {
        return static_cast<int32_t>(text.size() / bytes_per_token);
      };
      for (const WorkItem& item : Build(o)) {
        const int32_t code_tokens = item.max_tokens - 16;
        EXPECT_GE(code_tokens, tokens * 0.95) << bytes_per_token;
        EXPECT_LE(code_tokens, tokens * 1.05 + 200 / bytes_per_token) << bytes_per_token;
      }
    }
  }
}

}  // namespace
}  // namespace glimpse::tools::loadgen
