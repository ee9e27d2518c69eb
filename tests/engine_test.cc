// The serving engine on the bundled model, driven through its thread-safe API as the gRPC
// service drives it: concurrency and batching, prefix caching, cancellation, deadlines,
// preemption (recompute and swap), admission control and n > 1. Greedy outputs are checked
// against llama.cpp's references, an independent implementation.
#include "scheduler/engine.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/testing/instrumented_cpu_backend.h"
#include "model/llama_model.h"
#include "model/tokenizer.h"
#include "server/loaded_model.h"
#include "tests/llama_cpp_refs.h"
#include "tests/recording_step_runner.h"

namespace glimpse::scheduler {
namespace {

using Reference = glimpse::testing::LlamaCppReference;

std::vector<Reference> LoadReferences() { return glimpse::testing::LoadLlamaCppReferences(); }

// Everything a stream produced.
struct Collected {
  std::vector<std::vector<int32_t>> tokens;  // per index
  std::vector<std::vector<TokenLogprob>> logprobs;  // per index, when asked for
  std::vector<std::string> text;
  std::vector<FinishReason> finish;
  std::vector<Usage> usage;
  absl::Status status;
  int num_messages = 0;
};

Collected Drain(RequestStream& stream, int n) {
  Collected c;
  c.tokens.resize(n);
  c.logprobs.resize(n);
  c.text.resize(n);
  c.finish.resize(n, FinishReason::kAbort);
  c.usage.resize(n);
  while (true) {
    RequestOutput out = stream.Next();
    ++c.num_messages;
    for (const SequenceDelta& d : out.deltas) {
      c.tokens[d.index].insert(c.tokens[d.index].end(), d.token_ids.begin(), d.token_ids.end());
      c.logprobs[d.index].insert(c.logprobs[d.index].end(), d.logprobs.begin(), d.logprobs.end());
      c.text[d.index] += d.text;
      if (d.finished) {
        c.finish[d.index] = d.finish_reason;
        c.usage[d.index] = d.usage;
      }
    }
    if (out.done) {
      c.status = out.status;
      return c;
    }
  }
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override { Load(server::KvCacheDType::kAuto); }

  // (Re)loads the bundled model with a KV cache of `kv_dtype`.
  void Load(server::KvCacheDType kv_dtype) {
    auto loaded = server::LoadedModel::Load("models/tinycode-4m-f16.gguf", /*num_threads=*/2,
                                            server::Device::kCpu, 1, kv_dtype);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    loaded_ = std::move(*loaded);
    model_ = loaded_.model.get();
    tokenizer_ = loaded_.tokenizer.get();
  }

  // A started engine on `runner` (the bundled model's when null).
  std::unique_ptr<Engine> MakeEngine(EngineOptions options, model::StepRunner* runner = nullptr) {
    auto engine = runner != nullptr ? Engine::Create(*runner, *tokenizer_, options)
                                    : Engine::Create(*model_, *tokenizer_, options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    (*engine)->Start();
    return std::move(*engine);
  }

  static EngineRequest Greedy(const std::string& id, const std::vector<int32_t>& prompt,
                              int32_t max_tokens) {
    EngineRequest r;
    r.request_id = id;
    r.prompt_tokens = prompt;
    r.sampling.temperature = 0.0f;
    r.stopping.max_tokens = max_tokens;
    r.stopping.ignore_eos = true;
    return r;
  }

  server::LoadedModel loaded_;
  model::LlamaModel* model_ = nullptr;        // Owned by loaded_.
  model::Tokenizer* tokenizer_ = nullptr;     // Owned by loaded_.
};

TEST_F(EngineTest, ConcurrentGreedyStreamsMatchLlamaCppAndBatchDecodes) {
  const std::vector<Reference> refs = LoadReferences();
  ASSERT_GE(refs.size(), 32u);
  EngineOptions options;
  options.num_kv_blocks = 1024;
  options.scheduler.max_step_tokens = 512;
  auto engine = MakeEngine(options);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 32; ++i) {
    auto s = engine->Submit(Greedy("r" + std::to_string(i), refs[i].prompt,
                                   static_cast<int32_t>(refs[i].tokens.size())));
    ASSERT_TRUE(s.ok()) << s.status();
    streams.push_back(*s);
  }
  for (int i = 0; i < 32; ++i) {
    Collected c = Drain(*streams[i], 1);
    ASSERT_TRUE(c.status.ok()) << c.status;
    EXPECT_EQ(c.tokens[0], refs[i].tokens) << "request " << i;
    // The text too, rendered as the outputs go out (while the next step computes).
    EXPECT_EQ(c.text[0], refs[i].text) << "request " << i;
    EXPECT_EQ(c.finish[0], FinishReason::kLength);
    EXPECT_EQ(c.usage[0].completion_tokens, static_cast<int32_t>(refs[i].tokens.size()));
    EXPECT_GT(c.num_messages, 10) << "tokens must stream, not arrive at the end";
  }
  ASSERT_TRUE(engine->WaitIdle(absl::Seconds(10)));
  const EngineLoad load = engine->GetLoad();
  const double mean_batch = static_cast<double>(load.sum_decode_batch) / load.num_decode_steps;
  EXPECT_GE(mean_batch, 16.0);
  EXPECT_EQ(load.max_decode_batch, 32);
  EXPECT_EQ(load.kv_blocks_used, 0);
}

// The engine sizes the activations for its step budget before its first step, once, and no
// step exceeds that reservation (CUDA graphs rely on it; see StepRunner::ReserveActivations).
TEST_F(EngineTest, ReservesActivationsForEveryStepBeforeTheFirst) {
  const std::vector<Reference> refs = LoadReferences();
  testing::RecordingStepRunner runner(*loaded_.runner);
  EngineOptions options;
  options.num_kv_blocks = 256;
  options.scheduler.max_step_tokens = 96;  // below the prompts' total: prefills are chunked
  options.scheduler.max_running_sequences = 12;
  auto created = Engine::Create(runner, *tokenizer_, options);
  ASSERT_TRUE(created.ok()) << created.status();
  std::unique_ptr<Engine> engine = std::move(*created);
  ASSERT_EQ(runner.reservations().size(), 1u) << "reserved at creation, before any step";
  EXPECT_EQ(runner.reservations()[0], std::make_pair(96, 12));
  engine->Start();
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 16; ++i) {
    auto s = engine->Submit(Greedy("r" + std::to_string(i), refs[i].prompt, 8));
    ASSERT_TRUE(s.ok()) << s.status();
    streams.push_back(*s);
  }
  for (auto& s : streams) ASSERT_TRUE(Drain(*s, 1).status.ok());
  ASSERT_TRUE(engine->WaitIdle(absl::Seconds(10)));
  engine.reset();
  EXPECT_EQ(runner.reservations().size(), 1u);
  EXPECT_GT(runner.num_steps(), 0);
  EXPECT_LE(runner.max_step_tokens_run(), 96);
  EXPECT_LE(runner.max_logits_rows_run(), 12);
}

TEST_F(EngineTest, SharedPrefixComputesOnlyUncachedTokensAndKeepsOutput) {
  const std::vector<Reference> refs = LoadReferences();
  // A long shared prefix (the first prompt) followed by two different endings.
  std::vector<int32_t> a = refs[1].prompt;
  std::vector<int32_t> b = refs[1].prompt;
  a.insert(a.end(), refs[2].prompt.begin() + 1, refs[2].prompt.begin() + 20);
  b.insert(b.end(), refs[3].prompt.begin() + 1, refs[3].prompt.begin() + 20);

  auto run = [&](bool prefix_caching, int64_t* b_forward_tokens) {
    EngineOptions options;
    options.scheduler.enable_prefix_caching = prefix_caching;
    auto engine = MakeEngine(options);
    Collected ca = Drain(**engine->Submit(Greedy("a", a, 16)), 1);
    const int64_t before = engine->GetLoad().num_forward_tokens;
    Collected cb = Drain(**engine->Submit(Greedy("b", b, 16)), 1);
    *b_forward_tokens = engine->GetLoad().num_forward_tokens - before;
    EXPECT_TRUE(ca.status.ok() && cb.status.ok());
    return cb;
  };
  int64_t cached_work = 0, uncached_work = 0;
  Collected with_cache = run(true, &cached_work);
  Collected without_cache = run(false, &uncached_work);
  EXPECT_EQ(with_cache.tokens[0], without_cache.tokens[0]);
  // Without the cache b computes its whole prompt plus 15 decode tokens; with it, only what
  // lies past the last full shared block.
  EXPECT_EQ(uncached_work, static_cast<int64_t>(b.size()) + 15);
  const int64_t shared_blocks = static_cast<int64_t>(refs[1].prompt.size()) / 16;
  EXPECT_EQ(cached_work, static_cast<int64_t>(b.size()) - shared_blocks * 16 + 15);
  EXPECT_EQ(with_cache.usage[0].cached_tokens, shared_blocks * 16);
}

TEST_F(EngineTest, CancelAndDeadlineFreeBlocksWithinAStep) {
  const std::vector<Reference> refs = LoadReferences();
  EngineOptions options;
  options.scheduler.enable_prefix_caching = false;
  auto engine = MakeEngine(options);
  auto stream = *engine->Submit(Greedy("cancel-me", refs[0].prompt, 400));
  RequestOutput first = stream->Next();  // Generation has started.
  EXPECT_FALSE(first.done);
  EXPECT_GT(engine->GetLoad().kv_blocks_used, 0);
  stream->Cancel();
  Collected c = Drain(*stream, 1);
  EXPECT_EQ(c.status.code(), absl::StatusCode::kCancelled);
  ASSERT_TRUE(engine->WaitIdle(absl::Seconds(5)));
  EXPECT_EQ(engine->GetLoad().kv_blocks_used, 0);

  EngineRequest late = Greedy("deadline", refs[0].prompt, 400);
  late.scheduling.deadline = Clock::now() + std::chrono::milliseconds(30);
  Collected d = Drain(**engine->Submit(late), 1);
  EXPECT_EQ(d.status.code(), absl::StatusCode::kDeadlineExceeded);
  ASSERT_TRUE(engine->WaitIdle(absl::Seconds(5)));
  EXPECT_EQ(engine->GetLoad().kv_blocks_used, 0);

  EngineRequest soft = Greedy("timeout", refs[0].prompt, 400);
  soft.scheduling.timeout = std::chrono::milliseconds(30);
  Collected t = Drain(**engine->Submit(soft), 1);
  EXPECT_TRUE(t.status.ok());
  EXPECT_EQ(t.finish[0], FinishReason::kTimeout);
  EXPECT_LT(t.tokens[0].size(), 400u);

  auto to_abort = *engine->Submit(Greedy("abort-me", refs[0].prompt, 400));
  to_abort->Next();
  EXPECT_TRUE(engine->Abort("abort-me", "operator said so"));
  std::string message;
  while (true) {
    RequestOutput out = to_abort->Next();
    for (const SequenceDelta& d : out.deltas) {
      if (d.finished) {
        EXPECT_EQ(d.finish_reason, FinishReason::kAbort);
        message = d.message;
      }
    }
    if (out.done) {
      EXPECT_TRUE(out.status.ok());
      break;
    }
  }
  EXPECT_EQ(message, "operator said so");
  EXPECT_FALSE(engine->Abort("abort-me"));
}

// Counts the engine's observer calls.
class CountingObserver : public EngineObserver {
 public:
  void OnRequestScheduled(double) override { ++scheduled; }
  void OnFirstToken(double ttft) override {
    ++first_tokens;
    EXPECT_GE(ttft, 0.0);
  }
  void OnInterTokenLatency(double) override { ++inter_tokens; }
  void OnRequestFinished(double, int32_t prompt, int32_t generated) override {
    ++finished;
    prompt_tokens += prompt;
    generated_tokens += generated;
  }
  void OnStep(int32_t num_tokens, int32_t, int32_t) override {
    ++steps;
    step_tokens += num_tokens;
  }
  std::atomic<int> scheduled{0}, first_tokens{0}, inter_tokens{0}, finished{0}, steps{0};
  std::atomic<int64_t> prompt_tokens{0}, generated_tokens{0}, step_tokens{0};
};

TEST_F(EngineTest, ObserverSeesEveryRequestTokenAndStep) {
  const std::vector<Reference> refs = LoadReferences();
  CountingObserver observer;
  EngineOptions options;
  options.observer = &observer;
  auto engine = MakeEngine(options);
  std::vector<std::shared_ptr<RequestStream>> streams;
  int64_t prompt_total = 0;
  for (int i = 0; i < 4; ++i) {
    streams.push_back(*engine->Submit(Greedy("o" + std::to_string(i), refs[i].prompt, 10)));
    prompt_total += static_cast<int64_t>(refs[i].prompt.size());
  }
  EngineRequest two = Greedy("two", refs[5].prompt, 6);
  two.n = 2;
  streams.push_back(*engine->Submit(two));
  prompt_total += static_cast<int64_t>(refs[5].prompt.size());
  for (auto& s : streams) Drain(*s, 2);
  ASSERT_TRUE(engine->WaitIdle(absl::Seconds(5)));
  EXPECT_EQ(observer.scheduled.load(), 5);
  EXPECT_EQ(observer.first_tokens.load(), 5);
  EXPECT_EQ(observer.finished.load(), 5);
  EXPECT_EQ(observer.prompt_tokens.load(), prompt_total);
  EXPECT_EQ(observer.generated_tokens.load(), 4 * 10 + 2 * 6);
  // Every token but each sequence's first has an inter-token latency.
  EXPECT_EQ(observer.inter_tokens.load(), 4 * 9 + 2 * 5);
  const EngineLoad load = engine->GetLoad();
  EXPECT_EQ(observer.steps.load(), load.num_steps);
  EXPECT_EQ(observer.step_tokens.load(), load.num_forward_tokens);
}

// Over an fp32 and an fp16 KV cache (swap moves 16-bit blocks as bytes; both caches reproduce
// llama.cpp's tokens, tests/greedy_reference_test.cc).
class PreemptionTest
    : public EngineTest,
      public ::testing::WithParamInterface<std::tuple<PreemptionMode, server::KvCacheDType>> {
 protected:
  void SetUp() override { Load(std::get<1>(GetParam())); }
};

TEST_P(PreemptionTest, TinyKvPoolPreemptsAndOutputsStayIdentical) {
  const std::vector<Reference> refs = LoadReferences();
  EngineOptions options;
  // 8 concurrent sequences of ~150-250 tokens need ~100 blocks; give them 40.
  options.num_kv_blocks = 40;
  options.num_host_blocks = 200;
  options.scheduler.preemption_mode = std::get<0>(GetParam());
  auto engine = MakeEngine(options);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 8; ++i) {
    streams.push_back(*engine->Submit(
        Greedy("p" + std::to_string(i), refs[i].prompt, static_cast<int32_t>(refs[i].tokens.size()))));
  }
  for (int i = 0; i < 8; ++i) {
    Collected c = Drain(*streams[i], 1);
    ASSERT_TRUE(c.status.ok()) << c.status;
    EXPECT_EQ(c.tokens[0], refs[i].tokens) << "request " << i;
  }
  EXPECT_GT(engine->GetLoad().num_preemptions, 0);
  ASSERT_TRUE(engine->WaitIdle(absl::Seconds(5)));
  EXPECT_EQ(engine->GetLoad().kv_blocks_used, 0);
}

INSTANTIATE_TEST_SUITE_P(
    ModesAndCaches, PreemptionTest,
    ::testing::Combine(::testing::Values(PreemptionMode::kRecompute, PreemptionMode::kSwap),
                       ::testing::Values(server::KvCacheDType::kFp32, server::KvCacheDType::kF16)));

TEST_F(EngineTest, FullQueueIsResourceExhaustedAndBadRequestsAreInvalid) {
  const std::vector<Reference> refs = LoadReferences();
  EngineOptions options;
  options.max_waiting_requests = 2;
  auto engine = Engine::Create(*model_, *tokenizer_, options);
  ASSERT_TRUE(engine.ok());
  // Not started: nothing leaves the queue.
  ASSERT_TRUE((*engine)->Submit(Greedy("q1", refs[0].prompt, 4)).ok());
  ASSERT_TRUE((*engine)->Submit(Greedy("q2", refs[0].prompt, 4)).ok());
  EXPECT_EQ((*engine)->Submit(Greedy("q3", refs[0].prompt, 4)).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ((*engine)->Submit(Greedy("q1", refs[0].prompt, 4)).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ((*engine)->Submit(Greedy("empty", {}, 4)).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto too_long = (*engine)->Submit(Greedy("long", refs[0].prompt, 1000));
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(too_long.status().message()).find("context_length_exceeded"),
            std::string::npos);
  (*engine)->StartDrain();
  EXPECT_EQ((*engine)->Submit(Greedy("q4", refs[0].prompt, 4)).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(EngineTest, MultipleCompletionsShareThePromptAndStopStringsCut) {
  const std::vector<Reference> refs = LoadReferences();
  auto engine = MakeEngine(EngineOptions());
  // n = 3 greedy: every completion equals llama.cpp's single greedy continuation.
  EngineRequest r = Greedy("n3", refs[4].prompt, static_cast<int32_t>(refs[4].tokens.size()));
  r.n = 3;
  Collected c = Drain(**engine->Submit(r), 3);
  ASSERT_TRUE(c.status.ok());
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(c.tokens[i], refs[4].tokens) << "index " << i;
    EXPECT_EQ(c.text[i], refs[4].text) << "index " << i;
  }
  // Only the finished result: the text of every step, once.
  r.request_id = "n3-final";
  r.output.final_only = true;
  Collected f = Drain(**engine->Submit(r), 3);
  ASSERT_TRUE(f.status.ok());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(f.text[i], refs[4].text) << "index " << i;

  // A stop string taken from the middle of the reference text ends generation there.
  const std::string full = tokenizer_->Decode(refs[0].tokens, true);
  const std::string stop = full.substr(full.size() / 2, 6);
  EngineRequest s = Greedy("stop", refs[0].prompt, static_cast<int32_t>(refs[0].tokens.size()));
  s.stopping.stop_strings = {stop};
  Collected cs = Drain(**engine->Submit(s), 1);
  EXPECT_EQ(cs.finish[0], FinishReason::kStop);
  EXPECT_EQ(cs.text[0].find(stop), std::string::npos);
  EXPECT_LT(cs.tokens[0].size(), refs[0].tokens.size());
}

// A stop token id (decided by the id alone, its text rendered as the output goes out) ends the
// sequence on that token; its text is in the output only with include_stop_in_output.
TEST_F(EngineTest, AStopTokenEndsTheTextThereWithItsOwnTextOnlyWhenIncluded) {
  const std::vector<Reference> refs = LoadReferences();
  const Reference& ref = refs[1];
  // The first token from the 10th on that does not occur before it.
  size_t at = 10;
  while (at < ref.tokens.size() && std::find(ref.tokens.begin(), ref.tokens.begin() + at,
                                             ref.tokens[at]) != ref.tokens.begin() + at) {
    ++at;
  }
  ASSERT_LT(at, ref.tokens.size());
  auto engine = MakeEngine(EngineOptions());
  for (bool include : {false, true}) {
    SCOPED_TRACE(include ? "included" : "not included");
    EngineRequest r =
        Greedy(include ? "with" : "without", ref.prompt, static_cast<int32_t>(ref.tokens.size()));
    r.stopping.stop_token_ids = {ref.tokens[at]};
    r.stopping.include_stop_in_output = include;
    Collected c = Drain(**engine->Submit(r), 1);
    ASSERT_TRUE(c.status.ok()) << c.status;
    EXPECT_EQ(c.finish[0], FinishReason::kStop);
    EXPECT_EQ(c.tokens[0], std::vector<int32_t>(ref.tokens.begin(), ref.tokens.begin() + at + 1));
    std::string want;
    for (size_t j = 0; j < at + (include ? 1 : 0); ++j) {
      want += tokenizer_->TokenToPiece(ref.tokens[j], /*render_special=*/false);
    }
    EXPECT_EQ(c.text[0], want);
    EXPECT_TRUE(ref.text.starts_with(want)) << "llama.cpp's text begins the same way";
  }
  // Without text asked for: the same stop, no text.
  EngineRequest r = Greedy("no text", ref.prompt, static_cast<int32_t>(ref.tokens.size()));
  r.stopping.stop_token_ids = {ref.tokens[at]};
  r.output.detokenize = false;
  Collected c = Drain(**engine->Submit(r), 1);
  ASSERT_TRUE(c.status.ok()) << c.status;
  EXPECT_EQ(c.finish[0], FinishReason::kStop);
  EXPECT_EQ(c.tokens[0].size(), at + 1);
  EXPECT_EQ(c.text[0], "");
}

// A step whose every logits row is plain greedy runs ForwardGreedy (only the tokens come
// back); with device_greedy off it runs ForwardTopK with k = 1 (the one candidate is the
// argmax), and with that off too, Forward. A row that wants logprobs makes its steps
// ForwardTopK ones with the rows' normalizers, or full-logits ones without device top-k. The
// tokens are llama.cpp's every way, the logprobs the same every way.
TEST_F(EngineTest, PlainGreedyStepsBringBackTokensOnly) {
  const std::vector<Reference> refs = LoadReferences();
  enum Mode { kArgMax, kTopOne, kRows };
  std::vector<std::vector<TokenLogprob>> logprobs_by_mode;
  for (const Mode mode : {kArgMax, kTopOne, kRows}) {
    testing::RecordingStepRunner runner(*loaded_.runner);
    EngineOptions options;
    options.step_logits.device_greedy = mode == kArgMax;
    options.step_logits.max_device_top_k = mode == kTopOne ? 1024 : 0;
    auto created = Engine::Create(runner, *tokenizer_, options);
    ASSERT_TRUE(created.ok()) << created.status();
    std::unique_ptr<Engine> engine = std::move(*created);
    engine->Start();
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (int i = 0; i < 6; ++i) {
      auto s = engine->Submit(Greedy("g" + std::to_string(i), refs[i].prompt,
                                     static_cast<int32_t>(refs[i].tokens.size())));
      ASSERT_TRUE(s.ok()) << s.status();
      streams.push_back(*s);
    }
    for (int i = 0; i < 6; ++i) {
      const Collected c = Drain(*streams[i], 1);
      ASSERT_TRUE(c.status.ok()) << c.status;
      EXPECT_EQ(c.tokens[0], refs[i].tokens) << "request " << i << ", mode " << mode;
    }
    ASSERT_TRUE(engine->WaitIdle(absl::Seconds(10)));
    const int64_t greedy_steps = runner.num_greedy_steps();
    const size_t top_k_steps = runner.top_k_steps().size();
    // Every generated token needs a step with logits rows: at least the longest request's.
    const int64_t tokens = static_cast<int64_t>(refs[0].tokens.size());
    EXPECT_EQ(greedy_steps >= tokens, mode == kArgMax) << greedy_steps;
    EXPECT_EQ(greedy_steps == 0, mode != kArgMax) << greedy_steps;
    EXPECT_EQ(static_cast<int64_t>(top_k_steps) >= tokens, mode == kTopOne) << top_k_steps;
    EXPECT_EQ(top_k_steps == 0, mode != kTopOne) << top_k_steps;
    for (int32_t k : runner.top_k_steps()) EXPECT_EQ(k, 1);
    EngineRequest with_logprobs = Greedy("lp", refs[6].prompt, 8);
    with_logprobs.output.num_logprobs = 3;
    const Collected c = Drain(**engine->Submit(with_logprobs), 1);
    ASSERT_TRUE(c.status.ok()) << c.status;
    EXPECT_EQ(c.tokens[0],
              std::vector<int32_t>(refs[6].tokens.begin(), refs[6].tokens.begin() + 8));
    ASSERT_EQ(c.logprobs[0].size(), 8u);
    logprobs_by_mode.push_back(c.logprobs[0]);
    ASSERT_TRUE(engine->WaitIdle(absl::Seconds(10)));
    EXPECT_EQ(runner.num_greedy_steps(), greedy_steps) << "a logprobs request's steps";
    // With device top-k, k = 4 (3 top logprobs, rounded up) and the normalizers: 8 steps.
    EXPECT_EQ(runner.top_k_steps().size(), top_k_steps + (mode == kTopOne ? 8 : 0))
        << "a logprobs request's steps";
    EXPECT_EQ(runner.num_normalizer_steps(), mode == kTopOne ? 8 : 0);
    for (size_t i = top_k_steps; i < runner.top_k_steps().size(); ++i) {
      EXPECT_EQ(runner.top_k_steps()[i], 4);
    }
    engine.reset();
  }
  // The CPU backend's normalizer is the sampler's rule: the same logprobs bit for bit.
  for (size_t t = 0; t < logprobs_by_mode[0].size(); ++t) {
    const TokenLogprob& rows = logprobs_by_mode[kRows][t];
    const TokenLogprob& top = logprobs_by_mode[kTopOne][t];
    EXPECT_EQ(top.token_id, rows.token_id) << "token " << t;
    EXPECT_EQ(top.logprob, rows.logprob) << "token " << t;
    EXPECT_EQ(top.top, rows.top) << "token " << t;
    EXPECT_EQ(rows.top.size(), 3u);
    EXPECT_LT(rows.logprob, 0.0f);
  }
}

// A step whose every row samples from its most likely tokens (top-k without bias or
// penalties, or greedy) runs ForwardTopK with the rows' largest need (top_k, or the logprobs
// asked for if more) rounded up to a power of two, bringing back the rows' normalizers when
// one reports logprobs; a row that needs the whole row (top_k above the limit, alone or with
// a penalty's extra candidates) makes its steps full-logits ones. The tokens and logprobs are those
// drawn from the whole rows (max_device_top_k 0), seed for seed, also for n = 2 forks.
TEST_F(EngineTest, TopKStepsBringBackCandidatesOnly) {
  const std::vector<Reference> refs = LoadReferences();
  std::vector<TokenLogprob> logprobs[2];  // request 3's: device top-k, then whole rows
  int32_t normalizer_steps[2] = {0, 0};
  auto run = [&](int32_t max_device_top_k, std::vector<int32_t>* top_k_steps) {
    const int on_rows = max_device_top_k == 0 ? 1 : 0;
    testing::RecordingStepRunner runner(*loaded_.runner);
    EngineOptions options;
    options.seed = 7;
    options.step_logits.max_device_top_k = max_device_top_k;
    std::unique_ptr<Engine> engine = MakeEngine(options, &runner);
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (int i = 0; i < 6; ++i) {
      EngineRequest r = Greedy("k" + std::to_string(i), refs[i].prompt, 20);
      if (i != 4) {  // one greedy row among them
        r.sampling.temperature = 1.1f;
        r.sampling.top_k = i % 2 == 0 ? 40 : 5;
        r.sampling.top_p = i == 1 ? 0.8f : 1.0f;
        r.sampling.min_p = i == 3 ? 0.05f : 0.0f;
        r.output.num_logprobs = i == 3 ? 12 : -1;  // more than its top_k 5
      }
      r.n = i == 2 ? 2 : 1;
      auto stream = engine->Submit(r);
      EXPECT_TRUE(stream.ok()) << stream.status();
      streams.push_back(*stream);
    }
    std::vector<std::vector<std::vector<int32_t>>> tokens;
    for (int i = 0; i < 6; ++i) {
      Collected c = Drain(*streams[i], i == 2 ? 2 : 1);
      EXPECT_TRUE(c.status.ok()) << c.status;
      tokens.push_back(c.tokens);
      if (i == 3) logprobs[on_rows] = c.logprobs[0];
    }
    EXPECT_TRUE(engine->WaitIdle(absl::Seconds(10)));
    const size_t top_k_steps_before = runner.top_k_steps().size();
    // Rows that need the whole row: top_k above the limit, with a penalty too.
    for (int i = 0; i < 2; ++i) {
      EngineRequest r = Greedy("w" + std::to_string(i), refs[6 + i].prompt, 6);
      r.sampling.temperature = 1.0f;
      r.sampling.top_k = i == 0 ? 2000 : 1000;  // 1000 + 32 extra candidates > 1024
      r.sampling.presence_penalty = i == 1 ? 0.5f : 0.0f;
      Collected c = Drain(**engine->Submit(r), 1);
      EXPECT_TRUE(c.status.ok()) << c.status;
      tokens.push_back(c.tokens);
    }
    EXPECT_TRUE(engine->WaitIdle(absl::Seconds(10)));
    EXPECT_EQ(runner.top_k_steps().size(), top_k_steps_before) << "whole-row requests' steps";
    *top_k_steps = runner.top_k_steps();
    normalizer_steps[on_rows] = runner.num_normalizer_steps();
    engine.reset();
    return tokens;
  };
  std::vector<int32_t> device_steps, host_steps;
  const auto on_device = run(/*max_device_top_k=*/1024, &device_steps);
  const auto from_rows = run(/*max_device_top_k=*/0, &host_steps);
  ASSERT_EQ(on_device.size(), from_rows.size());
  for (size_t i = 0; i < on_device.size(); ++i) {
    EXPECT_EQ(on_device[i], from_rows[i]) << "request " << i;
  }
  // Every generated token of the first six needs a logits step: at least 20 of them, each with
  // k = 64 (40 rounded up), 16 (request 3's 12 logprobs, once the top_k 40 rows are done) or
  // 8 (5, once request 3 is done too); request 3's 20 steps with the normalizers.
  EXPECT_GE(device_steps.size(), 20u);
  for (int32_t k : device_steps) EXPECT_TRUE(k == 64 || k == 16 || k == 8) << k;
  EXPECT_TRUE(host_steps.empty());
  EXPECT_GE(normalizer_steps[0], 20);
  EXPECT_EQ(normalizer_steps[1], 0);
  // The CPU backend's normalizer is the sampler's rule: the same logprobs bit for bit.
  ASSERT_EQ(logprobs[0].size(), 20u);
  ASSERT_EQ(logprobs[1].size(), 20u);
  for (size_t t = 0; t < 20; ++t) {
    EXPECT_EQ(logprobs[0][t].token_id, logprobs[1][t].token_id) << "token " << t;
    EXPECT_EQ(logprobs[0][t].logprob, logprobs[1][t].logprob) << "token " << t;
    EXPECT_EQ(logprobs[0][t].top, logprobs[1][t].top) << "token " << t;
    EXPECT_EQ(logprobs[1][t].top.size(), 12u);
  }
  // The tokens are drawn, not the argmax: the top_k 40 rows do not follow greedy decoding.
  EXPECT_NE(on_device[0][0],
            std::vector<int32_t>(refs[0].tokens.begin(), refs[0].tokens.begin() + 20));
  EngineOptions bad;
  bad.step_logits.max_device_top_k = -1;
  EXPECT_EQ(Engine::Create(*model_, *tokenizer_, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad.step_logits.max_device_top_k = 1024;
  bad.step_logits.nucleus_candidates = -1;
  EXPECT_EQ(Engine::Create(*model_, *tokenizer_, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Rows that sample a nucleus over the whole vocabulary (top-p, min-p or plain temperature, no
// top-k) run ForwardTopK steps with their temperature normalizers and draw from the candidates
// when those decide, else from their row fetched after the step: the tokens are those drawn
// from the whole rows, seed for seed, with many candidates (mostly decided) and with 2 (mostly
// fetched). Rows with logprobs are nucleus rows too: a plain temperature-1 request with 3 top
// logprobs (its weight sum is its logprobs' normalizer) and a top-p 0.9 one at temperature
// 0.7 with 2 (its steps bring the sums at temperature 1 besides): the same logprobs, bitwise
// (the CPU backend's normalizer is the sampler's own sum).
// The host memory whole logits rows land in (page-locked on a GPU, which stalls while the
// driver pins it) is allocated once, when the engine is made, for a row per running sequence:
// steps that bring back every row whole, and steps whose nucleus rows are fetched after their
// candidates, then allocate nothing, and the rows land in that memory.
TEST_F(EngineTest, WholeRowsLandInHostMemoryReservedAtStartUp) {
  const std::vector<Reference> refs = LoadReferences();
  constexpr int kRequests = 6;
  for (int32_t nucleus_candidates : {0, 2}) {  // every row whole; most rows fetched
    SCOPED_TRACE("nucleus_candidates " + std::to_string(nucleus_candidates));
    kernels::cpu::InstrumentedCpuBackend host;
    testing::RecordingStepRunner runner(*loaded_.runner);
    runner.set_host_memory_backend(&host);
    EngineOptions options;
    options.seed = 5;
    options.scheduler.max_running_sequences = kRequests;
    options.step_logits.nucleus_candidates = nucleus_candidates;
    auto created = Engine::Create(runner, *tokenizer_, options);
    ASSERT_TRUE(created.ok()) << created.status();
    std::unique_ptr<Engine> engine = std::move(*created);
    ASSERT_EQ(host.num_allocations(), 1) << "reserved when the engine is made";
    engine->Start();
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (int i = 0; i < kRequests; ++i) {
      EngineRequest r = Greedy("n" + std::to_string(i), refs[i].prompt, 12);
      r.sampling.temperature = 1.3f;
      r.sampling.top_p = 0.95f;
      auto stream = engine->Submit(r);
      ASSERT_TRUE(stream.ok()) << stream.status();
      streams.push_back(*stream);
    }
    for (auto& s : streams) ASSERT_TRUE(Drain(*s, 1).status.ok());
    ASSERT_TRUE(engine->WaitIdle(absl::Seconds(10)));
    EXPECT_EQ(runner.max_logits_rows_run(), kRequests);
    if (nucleus_candidates == 0) {
      EXPECT_TRUE(runner.top_k_steps().empty()) << "every step brought its rows back whole";
    } else {
      EXPECT_GT(runner.num_logits_rows_copied(), kRequests * 12 / 2);
    }
    EXPECT_EQ(host.num_allocations(), 1) << "no step allocated host memory";
    ASSERT_GT(runner.last_num_whole_rows(), 0u);
    EXPECT_TRUE(
        host.Holds(runner.last_whole_rows(),
                   runner.last_num_whole_rows() * model_->config().vocab_size * sizeof(float)));
    engine.reset();
    EXPECT_EQ(host.num_live(), 0u) << "freed with the engine";
  }
}

TEST_F(EngineTest, NucleusRowsDrawTheWholeRowsTokens) {
  const std::vector<Reference> refs = LoadReferences();
  constexpr int kRequests = 8;
  constexpr int kSequences = kRequests + 1;  // request 1 forks n = 2
  struct Run {
    std::vector<std::vector<int32_t>> tokens;
    std::vector<TokenLogprob> logprobs[2];  // requests 6's and 7's
    int32_t normalizer_steps = 0;
    int32_t sums_t1_steps = 0;
    int32_t rows_fetched = 0;
  };
  auto run = [&](int32_t nucleus_candidates) {
    testing::RecordingStepRunner runner(*loaded_.runner);
    EngineOptions options;
    options.seed = 3;
    options.step_logits.nucleus_candidates = nucleus_candidates;
    std::unique_ptr<Engine> engine = MakeEngine(options, &runner);
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (int i = 0; i < kRequests; ++i) {
      EngineRequest r = Greedy("p" + std::to_string(i), refs[i].prompt, 16);
      r.sampling.temperature = i % 2 == 0 ? 0.7f : 1.2f;
      r.sampling.top_p = i % 3 == 0 ? 0.9f : 1.0f;
      r.sampling.min_p = i % 3 == 1 ? 0.05f : 0.0f;  // and i % 3 == 2: plain temperature
      if (i == 6) {
        r.sampling.temperature = 1.0f;
        r.sampling.top_p = 1.0f;
        r.output.num_logprobs = 3;
      } else if (i == 7) {
        r.sampling.temperature = 0.7f;
        r.sampling.top_p = 0.9f;
        r.output.num_logprobs = 2;
      }
      r.n = i == 1 ? 2 : 1;
      auto stream = engine->Submit(r);
      EXPECT_TRUE(stream.ok()) << stream.status();
      streams.push_back(*stream);
    }
    Run result;
    for (int i = 0; i < kRequests; ++i) {
      Collected c = Drain(*streams[i], i == 1 ? 2 : 1);
      EXPECT_TRUE(c.status.ok()) << c.status;
      for (auto& t : c.tokens) result.tokens.push_back(t);
      if (i >= 6) result.logprobs[i - 6] = c.logprobs[0];
    }
    EXPECT_TRUE(engine->WaitIdle(absl::Seconds(10)));
    result.normalizer_steps = runner.num_normalizer_steps();
    result.sums_t1_steps = runner.num_sums_t1_steps();
    result.rows_fetched = runner.num_logits_rows_copied();
    // The engine's load counts them too (what the metrics export).
    const EngineLoad load = engine->GetLoad();
    EXPECT_EQ(load.num_sampled_rows_fetched, result.rows_fetched);
    EXPECT_EQ(load.num_nucleus_rows_decided + load.num_sampled_rows_fetched,
              nucleus_candidates > 0 ? kSequences * 16 : 0);
    engine.reset();
    return result;
  };
  const Run whole = run(/*nucleus_candidates=*/0);
  const Run many = run(/*nucleus_candidates=*/64);
  const Run two = run(/*nucleus_candidates=*/2);
  EXPECT_EQ(whole.normalizer_steps, 0);
  EXPECT_GE(many.normalizer_steps, 16);
  EXPECT_GE(two.normalizer_steps, 16);
  ASSERT_EQ(many.tokens.size(), whole.tokens.size());
  ASSERT_EQ(two.tokens.size(), whole.tokens.size());
  for (size_t i = 0; i < whole.tokens.size(); ++i) {
    EXPECT_EQ(whole.tokens[i].size(), 16u) << "sequence " << i;
    EXPECT_EQ(many.tokens[i], whole.tokens[i]) << "sequence " << i;
    EXPECT_EQ(two.tokens[i], whole.tokens[i]) << "sequence " << i;
  }
  EXPECT_EQ(whole.sums_t1_steps, 0);
  EXPECT_GE(many.sums_t1_steps, 16);
  EXPECT_GE(two.sums_t1_steps, 16);
  for (int l = 0; l < 2; ++l) {
    ASSERT_EQ(whole.logprobs[l].size(), 16u);
    for (const Run* run : {&many, &two}) {
      ASSERT_EQ(run->logprobs[l].size(), 16u);
      for (size_t t = 0; t < 16; ++t) {
        const std::string what = "request " + std::to_string(6 + l) + " token " + std::to_string(t);
        EXPECT_EQ(run->logprobs[l][t].token_id, whole.logprobs[l][t].token_id) << what;
        EXPECT_EQ(run->logprobs[l][t].logprob, whole.logprobs[l][t].logprob) << what;
        EXPECT_EQ(run->logprobs[l][t].top, whole.logprobs[l][t].top) << what;
        EXPECT_EQ(run->logprobs[l][t].top.size(), l == 0 ? 3u : 2u) << what;
      }
    }
  }
  // 9 sequences x 16 tokens: most decided by 64 candidates, most fetched with 2.
  EXPECT_LT(many.rows_fetched, kSequences * 16 / 2);
  EXPECT_GT(two.rows_fetched, kSequences * 16 / 2);
  // The tokens are drawn, not the argmax.
  EXPECT_NE(whole.tokens[0],
            std::vector<int32_t>(refs[0].tokens.begin(), refs[0].tokens.begin() + 16));
}

// Greedy and top-k rows with a logit bias or penalties run ForwardTopK steps with 32
// candidates beyond their k and are sampled from those once the bias and penalties are
// applied; when a biased token outside them could win (a +50 bias on a token far down the
// row), with its logit gathered after the step; when too many could (a repetition penalty
// below 1 lifting the prompt's tokens), from the row fetched after the step. Top-p and plain
// temperature rows with penalties come back as 256 candidates with their weight sums and the
// gathered logits of the tokens the penalties touch. The tokens and logprobs are those drawn
// from the whole rows (adjusted_extra_candidates and nucleus_candidates 0), seed for seed,
// with 32 extra candidates and with 1, also for an n = 2 fork.
TEST_F(EngineTest, BiasedAndPenalisedRowsDrawTheWholeRowsTokens) {
  const std::vector<Reference> refs = LoadReferences();
  constexpr int kRequests = 9;
  constexpr int kSequences = kRequests + 1;  // request 2 forks n = 2
  constexpr int kTokens = 16;
  struct Run {
    std::vector<std::vector<int32_t>> tokens;
    std::vector<TokenLogprob> logprobs;  // request 3's
    std::vector<int32_t> top_k_steps;
    int64_t decided = 0;
    int64_t fetched = 0;
    int64_t gathered = 0;
    int64_t gather_calls = 0;
  };
  auto run = [&](int32_t extra) {
    testing::RecordingStepRunner runner(*loaded_.runner);
    EngineOptions options;
    options.seed = 5;
    options.step_logits.adjusted_extra_candidates = extra;
    options.step_logits.nucleus_candidates = extra == 0 ? 0 : 256;
    std::unique_ptr<Engine> engine = MakeEngine(options, &runner);
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (int i = 0; i < kRequests; ++i) {
      EngineRequest r = Greedy("b" + std::to_string(i), refs[i].prompt, kTokens);
      model::SamplingParams& s = r.sampling;
      switch (i) {
        case 0:  // greedy, repetition
          s.repetition_penalty = 1.3f;
          break;
        case 1:  // greedy, one of greedy decoding's own tokens banned, a mild bias
          s.logit_bias = {{refs[1].tokens[2], -std::numeric_limits<float>::infinity()},
                          {refs[1].tokens[5], 1.5f}};
          break;
        case 2:  // top-k 40, OpenAI's penalties, two sequences
          s.temperature = 1.0f;
          s.top_k = 40;
          s.frequency_penalty = 0.5f;
          s.presence_penalty = 0.3f;
          r.n = 2;
          break;
        case 3:  // top-k 20 + top-p, repetition, logprobs
          s.temperature = 0.8f;
          s.top_k = 20;
          s.top_p = 0.9f;
          s.repetition_penalty = 1.2f;
          r.output.num_logprobs = 4;
          break;
        case 4:  // top-k 10 with a bias that makes a token far down the row win
          s.temperature = 1.1f;
          s.top_k = 10;
          s.logit_bias = {{refs[4].tokens[0], 5.0f}, {1234, 50.0f}};
          break;
        case 5:  // greedy, encouraging repetition
          s.presence_penalty = -1.0f;
          break;
        case 6:  // top-k 5, repetition below 1: the prompt's tokens rise
          s.temperature = 0.9f;
          s.top_k = 5;
          s.repetition_penalty = 0.5f;
          break;
        case 7:  // top-p, OpenAI's penalties and a ban (no top-k: a nucleus)
          s.temperature = 0.8f;
          s.top_p = 0.9f;
          s.frequency_penalty = 0.5f;
          s.presence_penalty = 0.3f;
          s.logit_bias = {{refs[7].tokens[0], -std::numeric_limits<float>::infinity()}};
          break;
        default:  // plain temperature, repetition
          s.temperature = 1.0f;
          s.repetition_penalty = 1.2f;
          break;
      }
      auto stream = engine->Submit(r);
      EXPECT_TRUE(stream.ok()) << stream.status();
      streams.push_back(*stream);
    }
    Run result;
    for (int i = 0; i < kRequests; ++i) {
      Collected c = Drain(*streams[i], i == 2 ? 2 : 1);
      EXPECT_TRUE(c.status.ok()) << c.status;
      for (auto& t : c.tokens) result.tokens.push_back(t);
      if (i == 3) result.logprobs = c.logprobs[0];
    }
    EXPECT_TRUE(engine->WaitIdle(absl::Seconds(10)));
    result.top_k_steps = runner.top_k_steps();
    const EngineLoad load = engine->GetLoad();
    EXPECT_EQ(load.num_sampled_rows_fetched, runner.num_logits_rows_copied());
    // The rows' gathers of a step come in one call.
    EXPECT_GE(load.num_sampled_rows_gathered, runner.num_logits_gathers());
    EXPECT_LE(runner.num_logits_gathers(), static_cast<int32_t>(runner.top_k_steps().size()));
    EXPECT_EQ(load.num_nucleus_rows_decided, 0);
    result.decided = load.num_adjusted_rows_decided;
    result.fetched = load.num_sampled_rows_fetched;
    result.gathered = load.num_sampled_rows_gathered;
    result.gather_calls = runner.num_logits_gathers();
    engine.reset();
    return result;
  };
  const Run whole = run(/*extra=*/0);
  const Run many = run(/*extra=*/32);
  const Run one = run(/*extra=*/1);
  EXPECT_TRUE(whole.top_k_steps.empty());
  EXPECT_EQ(whole.decided + whole.fetched, 0);
  ASSERT_EQ(many.tokens.size(), static_cast<size_t>(kSequences));
  for (const Run* r : {&many, &one}) {
    ASSERT_EQ(r->tokens.size(), whole.tokens.size());
    for (size_t i = 0; i < whole.tokens.size(); ++i) {
      EXPECT_EQ(whole.tokens[i].size(), static_cast<size_t>(kTokens)) << "sequence " << i;
      EXPECT_EQ(r->tokens[i], whole.tokens[i]) << "sequence " << i;
    }
    EXPECT_EQ(r->decided + r->fetched, kSequences * kTokens);
    ASSERT_EQ(r->logprobs.size(), static_cast<size_t>(kTokens));
    for (size_t t = 0; t < r->logprobs.size(); ++t) {
      EXPECT_EQ(r->logprobs[t].token_id, whole.logprobs[t].token_id) << "token " << t;
      EXPECT_EQ(r->logprobs[t].logprob, whole.logprobs[t].logprob) << "token " << t;
      EXPECT_EQ(r->logprobs[t].top, whole.logprobs[t].top) << "token " << t;
      EXPECT_EQ(r->logprobs[t].top.size(), 4u);
    }
  }
  // k: the nucleus rows' 256 while they run; greedy's 1 + 32 → 64, top-k 40 + 32 → 128
  // (20 + 32, 10 + 32 → 64).
  EXPECT_GE(many.top_k_steps.size(), static_cast<size_t>(kTokens));
  for (int32_t k : many.top_k_steps) EXPECT_TRUE(k == 64 || k == 128 || k == 256) << k;
  // Nearly all rows are decided (the nucleus rows' too, with their penalised tokens'
  // logits gathered); request 4's gathering its +50 token's logit until that token, repeated,
  // is among the candidates; request 6's fetched now and then.
  EXPECT_GT(many.decided, kSequences * kTokens * 9 / 10);
  EXPECT_GT(many.gathered, 0);
  EXPECT_GT(one.gathered, 0);
  EXPECT_GT(many.gather_calls, 0);
  EXPECT_LT(many.gather_calls, many.gathered);  // several rows' gathers in one call
  EXPECT_GT(many.fetched + one.fetched, 0);
  EXPECT_EQ(whole.gathered, 0);
  // The penalties act: request 0's greedy tokens are not plain greedy decoding's.
  EXPECT_NE(whole.tokens[0],
            std::vector<int32_t>(refs[0].tokens.begin(), refs[0].tokens.begin() + kTokens));
  EngineOptions bad;
  bad.step_logits.adjusted_extra_candidates = -1;
  EXPECT_EQ(Engine::Create(*model_, *tokenizer_, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Sampling a step's rows on several threads draws exactly the tokens one thread draws: each
// sequence has its own sampler and RNG (stochastic requests, forks of n = 2, logprobs on some;
// the CPU backend's logits do not depend on how steps are batched).
TEST_F(EngineTest, ParallelSamplingDrawsTheSameTokens) {
  const std::vector<Reference> refs = LoadReferences();
  auto run = [&](int32_t threads) {
    EngineOptions options;
    options.seed = 99;
    options.sampling_threads = threads;
    options.parallel_sampling_min_elements = 0;  // every step with two rows or more
    auto engine = MakeEngine(options);
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (int i = 0; i < 12; ++i) {
      EngineRequest r = Greedy("s" + std::to_string(i), refs[i].prompt, 24);
      r.sampling.temperature = 0.9f;
      r.sampling.top_p = 0.95f;
      r.sampling.frequency_penalty = i % 3 == 0 ? 0.3f : 0.0f;
      r.output.num_logprobs = i % 4 == 1 ? 2 : -1;
      r.n = i % 5 == 2 ? 2 : 1;
      auto stream = engine->Submit(r);
      EXPECT_TRUE(stream.ok()) << stream.status();
      streams.push_back(*stream);
    }
    std::vector<std::vector<std::vector<int32_t>>> tokens;
    for (int i = 0; i < 12; ++i) {
      Collected c = Drain(*streams[i], i % 5 == 2 ? 2 : 1);
      EXPECT_TRUE(c.status.ok()) << c.status;
      tokens.push_back(c.tokens);
    }
    return tokens;
  };
  const auto one = run(1);
  const auto three = run(3);
  ASSERT_EQ(one.size(), three.size());
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_EQ(one[i], three[i]) << "request " << i;
    for (const auto& t : one[i]) EXPECT_EQ(t.size(), 24u) << "request " << i;
  }
  EngineOptions bad;
  bad.sampling_threads = 0;
  EXPECT_EQ(Engine::Create(*model_, *tokenizer_, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Greedy steps that bring back each row's argmax never wake the sampling pool, however many
// rows they have: drawing a row's token is reading it. The same requests over whole rows do
// (a row's argmax is then a scan of the vocabulary), with the same tokens.
TEST_F(EngineTest, ArgMaxStepsSampleOnTheEngineThreadAlone) {
  const std::vector<Reference> refs = LoadReferences();
  auto run = [&](bool device_greedy) {
    EngineOptions options;
    options.sampling_threads = 3;
    options.parallel_sampling_min_elements = 0;  // any step of two rows or more, by size
    options.step_logits.device_greedy = device_greedy;
    if (!device_greedy) options.step_logits.max_device_top_k = 0;  // not candidates either
    auto engine = MakeEngine(options);
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (int i = 0; i < 8; ++i) {
      auto stream = engine->Submit(Greedy("g" + std::to_string(i), refs[i].prompt, 12));
      EXPECT_TRUE(stream.ok()) << stream.status();
      streams.push_back(*stream);
    }
    std::vector<std::vector<std::vector<int32_t>>> tokens;
    for (auto& stream : streams) {
      Collected c = Drain(*stream, 1);
      EXPECT_TRUE(c.status.ok()) << c.status;
      tokens.push_back(c.tokens);
    }
    const EngineLoad load = engine->GetLoad();
    EXPECT_GT(load.num_decode_steps, 0);
    return std::make_pair(tokens, load.num_parallel_sampled_steps);
  };
  const auto [argmax_tokens, argmax_parallel] = run(true);
  const auto [rows_tokens, rows_parallel] = run(false);
  EXPECT_EQ(argmax_parallel, 0);
  EXPECT_GT(rows_parallel, 0);
  EXPECT_EQ(argmax_tokens, rows_tokens);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(argmax_tokens[i][0],
              std::vector<int32_t>(refs[i].tokens.begin(), refs[i].tokens.begin() + 12))
        << "request " << i;
  }
}

// Watches streams from inside the forward passes of a RecordingStepRunner (its overlap
// hook): in each pass it runs the host work the engine handed it (as a GPU backend does while
// the step computes) and counts the tokens the watched streams had delivered just before and
// just after that work.
class OverlapProbe {
 public:
  struct Call {
    bool had_work = false;
    std::vector<size_t> tokens_before;  // per watched stream
    std::vector<size_t> tokens_after;
  };

  // Hooks into `runner`, which must outlive this.
  explicit OverlapProbe(testing::RecordingStepRunner& runner) {
    runner.set_overlap_hook([this](kernels::HostWork* work) { OnForward(work); });
  }

  // Before the engine starts.
  void Watch(std::vector<std::shared_ptr<RequestStream>> streams) {
    streams_ = std::move(streams);
    tokens_.resize(streams_.size());
    done_.resize(streams_.size());
  }
  // Run on the engine thread after each call's counts (e.g. to abort a request then).
  void set_after_call(std::function<void(size_t call)> fn) { after_call_ = std::move(fn); }
  const std::vector<Call>& calls() const { return calls_; }
  // What stream i delivered, once the engine is idle or stopped.
  const std::vector<int32_t>& tokens(size_t i) {
    Read();
    return tokens_[i];
  }
  int num_done(size_t i) {
    Read();
    return done_[i];
  }
  // The finished delta of stream i's done output (null if it has none).
  const SequenceDelta* final_delta(size_t i) const { return final_[i] ? &*final_[i] : nullptr; }

 private:
  void OnForward(kernels::HostWork* work) {
    Call call;
    call.had_work = work != nullptr;
    call.tokens_before = Read();
    if (work != nullptr) work->Run();
    call.tokens_after = Read();
    calls_.push_back(std::move(call));
    if (after_call_) after_call_(calls_.size() - 1);
  }

  // Takes what the streams have delivered so far; returns each one's token count.
  std::vector<size_t> Read() {
    final_.resize(streams_.size());
    std::vector<size_t> counts;
    for (size_t i = 0; i < streams_.size(); ++i) {
      // Past its done output a stream repeats it forever: stop there.
      while (done_[i] == 0) {
        std::optional<RequestOutput> out = streams_[i]->TryNext();
        if (!out.has_value()) break;
        for (const SequenceDelta& d : out->deltas) {
          tokens_[i].insert(tokens_[i].end(), d.token_ids.begin(), d.token_ids.end());
          if (d.finished) final_[i] = d;
        }
        done_[i] += out->done ? 1 : 0;
      }
      counts.push_back(tokens_[i].size());
    }
    return counts;
  }

  std::vector<std::shared_ptr<RequestStream>> streams_;
  std::function<void(size_t)> after_call_;
  std::vector<Call> calls_;
  std::vector<std::vector<int32_t>> tokens_;
  std::vector<int> done_;
  std::vector<std::optional<SequenceDelta>> final_;
};

// With overlap_outputs (the default), the outputs of a step's unfinished requests reach their
// streams during the next step's forward pass: none before it, all by the end of the host
// work the engine hands that pass; an output that finishes a request goes out at once. Off,
// every output is out before the next step. Either way each stream gets llama.cpp's tokens
// in order, and one done output.
TEST_F(EngineTest, AStepsOutputsAreEmittedDuringTheNextForwardPass) {
  const std::vector<Reference> refs = LoadReferences();
  const size_t lengths[] = {6, 10};  // request 0 finishes first; 1 goes on alone
  for (const bool overlap : {true, false}) {
    SCOPED_TRACE(overlap ? "overlapped" : "not overlapped");
    testing::RecordingStepRunner runner(*loaded_.runner);
    OverlapProbe probe(runner);
    EngineOptions options;
    options.overlap_outputs = overlap;
    auto created = Engine::Create(runner, *tokenizer_, options);
    ASSERT_TRUE(created.ok()) << created.status();
    std::unique_ptr<Engine> engine = std::move(*created);
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (int i = 0; i < 2; ++i) {
      auto s = engine->Submit(
          Greedy("o" + std::to_string(i), refs[i].prompt, static_cast<int32_t>(lengths[i])));
      ASSERT_TRUE(s.ok()) << s.status();
      streams.push_back(*s);
    }
    probe.Watch(streams);  // before the first step
    engine->Start();
    ASSERT_TRUE(engine->WaitIdle(absl::Seconds(20)));
    engine->Stop();

    // One step a token: the first prefills both prompts and samples their first tokens.
    const std::vector<OverlapProbe::Call>& calls = probe.calls();
    ASSERT_EQ(calls.size(), lengths[1]);
    for (size_t k = 0; k < calls.size(); ++k) {
      SCOPED_TRACE("forward pass " + std::to_string(k));
      // Overlapped, the work comes with every pass that follows a step with an unfinished
      // request, and only those.
      EXPECT_EQ(calls[k].had_work, overlap && k > 0);
      for (size_t i = 0; i < 2; ++i) {
        // Tokens sampled before this pass (steps 0..k-1), as many as the request asked for.
        const size_t sampled = std::min(k, lengths[i]);
        // The last step's unfinished outputs wait for this pass's work.
        const bool waits = overlap && k > 0 && k - 1 < lengths[i] - 1;
        EXPECT_EQ(calls[k].tokens_before[i], waits ? sampled - 1 : sampled) << "request " << i;
        EXPECT_EQ(calls[k].tokens_after[i], sampled) << "request " << i;
      }
    }
    for (size_t i = 0; i < 2; ++i) {
      EXPECT_EQ(probe.tokens(i),
                std::vector<int32_t>(refs[i].tokens.begin(), refs[i].tokens.begin() + lengths[i]))
          << "request " << i;
      EXPECT_EQ(probe.num_done(i), 1) << "request " << i;
    }
  }
}

// A request aborted while its last step's outputs wait (overlapped) gets them, in order,
// with its abort and one done output; the request beside it goes on undisturbed.
TEST_F(EngineTest, ARequestAbortedWhileItsOutputsWaitGetsThemAll) {
  const std::vector<Reference> refs = LoadReferences();
  testing::RecordingStepRunner runner(*loaded_.runner);
  OverlapProbe probe(runner);
  EngineOptions options;  // overlap_outputs by default
  auto created = Engine::Create(runner, *tokenizer_, options);
  ASSERT_TRUE(created.ok()) << created.status();
  std::unique_ptr<Engine> engine = std::move(*created);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 2; ++i) {
    auto s = engine->Submit(Greedy("a" + std::to_string(i), refs[i].prompt, 12));
    ASSERT_TRUE(s.ok()) << s.status();
    streams.push_back(*s);
  }
  probe.Watch(streams);
  // During pass 4 (its 4th token, of step 3, just emitted): the abort lands before the next
  // step, while step 4's output waits.
  probe.set_after_call([&](size_t call) {
    if (call == 4) {
      EXPECT_TRUE(engine->Abort("a0", "enough"));
    }
  });
  engine->Start();
  ASSERT_TRUE(engine->WaitIdle(absl::Seconds(20)));
  engine->Stop();
  EXPECT_EQ(probe.tokens(0),
            std::vector<int32_t>(refs[0].tokens.begin(), refs[0].tokens.begin() + 5));
  EXPECT_EQ(probe.num_done(0), 1);
  ASSERT_NE(probe.final_delta(0), nullptr);
  EXPECT_EQ(probe.final_delta(0)->finish_reason, FinishReason::kAbort);
  EXPECT_EQ(probe.final_delta(0)->message, "enough");
  EXPECT_EQ(probe.tokens(1),
            std::vector<int32_t>(refs[1].tokens.begin(), refs[1].tokens.begin() + 12));
  EXPECT_EQ(probe.num_done(1), 1);
  // After the abort, no pass saw request 0's stream change.
  for (size_t k = 5; k < probe.calls().size(); ++k) {
    EXPECT_EQ(probe.calls()[k].tokens_before[0], 5u) << "pass " << k;
    EXPECT_EQ(probe.calls()[k].tokens_after[0], 5u) << "pass " << k;
  }
}

}  // namespace
}  // namespace glimpse::scheduler
