#include "tools/bench/bench.h"

#include <sys/stat.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/backend.h"
#include "kvcache/block_pool.h"
#include "model/sampling_params.h"
#include "nlohmann/json.hpp"
#include "scheduler/offline_generator.h"
#include "server/common_flags.h"
#include "server/loaded_model.h"
#include "tools/make_model/make_model.h"

ABSL_FLAG(std::string, bench_model, "",
          "bench: GGUF model to measure; empty makes (once, under $TMPDIR) a synthetic "
          "small-110m F16 model, the shape of ../shared/reference/peer_numbers.md.");
ABSL_FLAG(int32_t, prompt_tokens, 512, "bench: prompt length per sequence.");
ABSL_FLAG(int32_t, gen_tokens, 128, "bench: tokens generated per sequence after the prompt.");
ABSL_FLAG(std::string, batch_sizes, "1,8,32", "bench: comma-separated batch sizes to measure.");
ABSL_FLAG(int32_t, repetitions, 2, "bench: runs per batch size (mean and spread reported).");
ABSL_FLAG(std::string, json_out, "", "bench: also write the results as JSON to this file.");
ABSL_FLAG(bool, bench_logprobs, false,
          "bench: give every generated token its logprob, as a request with logprobs gets: "
          "each step also brings back its rows' softmax normalizers with the candidates "
          "(--bench_device_top_k above 0), or the whole rows, sampled on the host "
          "(--bench_device_top_k=0). Off (the default), greedy decoding reduces each row to its "
          "token where the logits are (on a GPU only 4 bytes a row come back).");

ABSL_FLAG(int32_t, bench_top_k, 0,
          "bench: 0 decodes greedily; N > 0 samples every token with temperature 0.8 and top-k "
          "N (the tokens then differ from run to run of the seed only by the backend's logits).");
ABSL_FLAG(float, bench_top_p, 1.0f,
          "bench: below 1, samples every token with temperature 0.8 and this top-p (with "
          "--bench_top_k if set): without top-k, the rows' candidates and weight sums decide "
          "the nucleus where they can (--bench_nucleus_candidates).");
ABSL_FLAG(float, bench_temperature, 0.0f,
          "bench: above 0, samples every token at this temperature, with --bench_top_k and "
          "--bench_top_p if set; without them plain temperature sampling, whose draw the rows' "
          "candidates and weight sums decide where they can (--bench_nucleus_candidates). 0: "
          "greedy, unless --bench_top_k or --bench_top_p asks for sampling (then at 0.8).");
ABSL_FLAG(float, bench_repetition_penalty, 1.0f,
          "bench: other than 1, every request's repetition penalty (over its random prompt and "
          "its output): the rows then come back as candidates that the penalty may reorder "
          "(a nucleus row with the gathered logits of its prompt and output tokens), fetched "
          "whole when those do not decide (with --bench_device_top_k above 0), or whole (0).");
ABSL_FLAG(int32_t, bench_nucleus_candidates, glimpse::server::kAutoCandidates,
          "bench: candidates a row sampled without top-k (top-p, or plain temperature) brings "
          "back with its weight sum; 0 brings such rows back whole (the A/B of the device "
          "nucleus). -1 (default): as serve's --nucleus_candidates, 256 on CUDA, 0 on the CPU.");
ABSL_FLAG(int32_t, bench_device_top_k, glimpse::server::kAutoCandidates,
          "bench: steps whose rows sample with top-k up to this select the candidates where the "
          "logits are (on a GPU k pairs a row come back); 0 brings every row back to the host "
          "and samples there (the A/B of the device top-k). -1 (default): as serve's "
          "--device_top_k, 1024 on CUDA, 0 on the CPU.");

namespace glimpse::tools {
namespace {

// --bench_device_top_k and --bench_nucleus_candidates, -1 (auto) resolved for --device.
int32_t BenchDeviceTopK() {
  return server::DeviceTopKFor(absl::GetFlag(FLAGS_bench_device_top_k),
                               absl::GetFlag(FLAGS_device));
}
int32_t BenchNucleusCandidates() {
  return server::NucleusCandidatesFor(absl::GetFlag(FLAGS_bench_nucleus_candidates),
                                      absl::GetFlag(FLAGS_device));
}

struct Sample {
  double prefill_tok_s = 0;
  double decode_tok_s = 0;
  int64_t steps = 0;
  int64_t prefill_tokens = 0;
  int64_t decode_tokens = 0;
  int64_t nucleus_rows_decided = 0;   // rows without top-k sampled from their candidates
  int64_t adjusted_rows_decided = 0;  // penalised greedy or top-k rows, from candidates
  int64_t rows_fetched = 0;           // rows fetched after their step instead
  int64_t rows_gathered = 0;          // penalised rows that gathered a few logits
};

struct Stats {
  double mean = 0;
  double stdev = 0;
};

Stats Summarize(const std::vector<double>& v) {
  Stats s;
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  for (double x : v) s.stdev += (x - s.mean) * (x - s.mean);
  s.stdev = v.size() > 1 ? std::sqrt(s.stdev / static_cast<double>(v.size() - 1)) : 0.0;
  return s;
}

absl::StatusOr<std::string> DefaultBenchModel() {
  const char* tmp = std::getenv("TMPDIR");
  const std::string path =
      absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/glimpse-bench-small-110m-f16.gguf");
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) return path;
  std::fprintf(stderr, "bench: writing synthetic small-110m F16 model to %s\n", path.c_str());
  MakeModelOptions options;
  options.shape = "small-110m";
  options.out_path = path;
  options.type = model::GgmlType::kF16;
  if (absl::Status s = MakeModel(options); !s.ok()) return s;
  return path;
}

absl::StatusOr<Sample> RunOnce(server::LoadedModel& loaded, int32_t batch, int32_t prompt_len,
                               int32_t gen_len, uint32_t seed) {
  const model::LlamaConfig& config = loaded.config();
  const int32_t block_size = 16;
  const int32_t blocks_per_seq = (prompt_len + gen_len + block_size - 1) / block_size;
  loaded.runner->AllocateKvCache(batch * blocks_per_seq, block_size, /*num_host_blocks=*/0);
  kvcache::BlockPool pool(batch * blocks_per_seq);
  std::mt19937 rng(seed);
  // Ordinary tokens only (ids 0-2 are <unk>, <s>, </s> in the bundled vocabulary).
  std::uniform_int_distribution<int32_t> token(3, config.vocab_size - 1);
  std::vector<scheduler::GenerationRequest> requests(batch);
  for (auto& r : requests) {
    r.prompt_tokens.resize(prompt_len);
    for (int32_t& t : r.prompt_tokens) t = token(rng);
    r.max_tokens = gen_len;
    r.sampling.temperature = absl::GetFlag(FLAGS_bench_temperature);
    if (absl::GetFlag(FLAGS_bench_top_k) > 0 || absl::GetFlag(FLAGS_bench_top_p) < 1.0f) {
      if (r.sampling.temperature == 0.0f) r.sampling.temperature = 0.8f;
      r.sampling.top_k = absl::GetFlag(FLAGS_bench_top_k);
      r.sampling.top_p = absl::GetFlag(FLAGS_bench_top_p);
    }
    r.sampling.repetition_penalty = absl::GetFlag(FLAGS_bench_repetition_penalty);
    r.ignore_eos = true;
    // As a server request with or without logprobs: without, the token alone.
    r.report_logprobs = absl::GetFlag(FLAGS_bench_logprobs);
  }
  scheduler::OfflineGeneratorOptions options;
  options.prefill_chunk_tokens = 512;
  options.max_step_tokens = 512;  // As llama-bench's default micro-batch.
  options.step_logits.max_device_top_k = BenchDeviceTopK();
  options.step_logits.nucleus_candidates = BenchNucleusCandidates();
  scheduler::OfflineGenerator generator(*loaded.runner, pool, options);
  auto results = generator.Run(requests);
  if (!results.ok()) return results.status();
  const auto& c = generator.counters();
  Sample s;
  s.prefill_tok_s = c.num_prefill_tokens / c.prefill_seconds;
  s.decode_tok_s = c.num_decode_tokens / c.decode_seconds;
  s.steps = c.num_steps;
  s.prefill_tokens = c.num_prefill_tokens;
  s.decode_tokens = c.num_decode_tokens;
  s.nucleus_rows_decided = c.num_nucleus_rows_decided;
  s.adjusted_rows_decided = c.num_adjusted_rows_decided;
  s.rows_fetched = c.num_rows_fetched;
  s.rows_gathered = c.num_rows_gathered;
  return s;
}

}  // namespace

int RunBenchCommand() {
  std::string path = absl::GetFlag(FLAGS_bench_model);
  if (path.empty()) {
    auto made = DefaultBenchModel();
    if (!made.ok()) {
      std::fprintf(stderr, "glimpse bench: %s\n", std::string(made.status().message()).c_str());
      return 1;
    }
    path = *made;
  }
  std::vector<int32_t> batch_sizes;
  for (const std::string& b : std::vector<std::string>(absl::StrSplit(absl::GetFlag(FLAGS_batch_sizes), ','))) {
    int32_t n;
    if (!absl::SimpleAtoi(b, &n) || n < 1 || n > 4096) {
      std::fprintf(stderr, "glimpse bench: --batch_sizes: '%s' is not a batch size in 1..4096\n",
                   b.c_str());
      return 2;
    }
    batch_sizes.push_back(n);
  }
  const int32_t prompt_len = absl::GetFlag(FLAGS_prompt_tokens);
  const int32_t gen_len = absl::GetFlag(FLAGS_gen_tokens);
  const int32_t reps = std::max(1, absl::GetFlag(FLAGS_repetitions));
  if (prompt_len < 1 || gen_len < 2) {
    std::fprintf(stderr, "glimpse bench: need --prompt_tokens >= 1 and --gen_tokens >= 2\n");
    return 2;
  }
  const float top_p = absl::GetFlag(FLAGS_bench_top_p);
  if (!(top_p > 0.0f && top_p <= 1.0f) || BenchNucleusCandidates() < 0) {
    std::fprintf(stderr,
                 "glimpse bench: --bench_top_p must be in (0, 1] and --bench_nucleus_candidates "
                 ">= 0 (or -1: auto)\n");
    return 2;
  }
  const float temperature = absl::GetFlag(FLAGS_bench_temperature);
  if (!(temperature >= 0.0f && temperature <= model::kMaxTemperature)) {
    std::fprintf(stderr, "glimpse bench: --bench_temperature must be in [0, %g] (0: greedy)\n",
                 model::kMaxTemperature);
    return 2;
  }
  const float repetition = absl::GetFlag(FLAGS_bench_repetition_penalty);
  if (!(repetition > 0.0f && std::isfinite(repetition))) {
    std::fprintf(stderr,
                 "glimpse bench: --bench_repetition_penalty must be finite and > 0 (1: off)\n");
    return 2;
  }
  if (absl::GetFlag(FLAGS_bench_top_k) < 0 || BenchDeviceTopK() < 0) {
    std::fprintf(stderr,
                 "glimpse bench: --bench_top_k and --bench_device_top_k must be >= 0 (0: greedy; "
                 "0: every row to the host; -1: auto)\n");
    return 2;
  }
  auto loaded = server::LoadedModel::Load(path, absl::GetFlag(FLAGS_threads));
  if (!loaded.ok()) {
    std::fprintf(stderr, "glimpse bench: %s\n", std::string(loaded.status().message()).c_str());
    return 1;
  }
  const model::LlamaConfig& config = loaded->config();
  if (prompt_len + gen_len > config.context_length) {
    std::fprintf(stderr, "glimpse bench: prompt + generated tokens (%d) exceed the context (%d)\n",
                 prompt_len + gen_len, config.context_length);
    return 2;
  }
  std::printf("model: %s (%s, dim %d, %d layers, vocab %d), packed weights %.1f MiB\n",
              path.c_str(), config.name.c_str(), config.dim, config.num_layers, config.vocab_size,
              loaded->weight_bytes() / 1048576.0);
  std::printf("backend: %s, %s KV cache\n", loaded->backend_name().c_str(),
              loaded->kv_cache_dtype_name().c_str());
  // Warm-up: page in the weights and size the workspaces.
  if (auto warm = RunOnce(*loaded, 1, std::min(prompt_len, 64), 2, 99); !warm.ok()) {
    std::fprintf(stderr, "glimpse bench: %s\n", std::string(warm.status().message()).c_str());
    return 1;
  }

  nlohmann::json json;
  json["model"] = path;
  json["backend"] = loaded->backend_name();
  json["kv_cache_dtype"] = loaded->kv_cache_dtype_name();
  json["tensor_parallel_size"] = loaded->tensor_parallel_size();
  json["prompt_tokens"] = prompt_len;
  json["gen_tokens"] = gen_len;
  json["top_k"] = absl::GetFlag(FLAGS_bench_top_k);
  json["device_top_k"] = BenchDeviceTopK();
  json["top_p"] = top_p;
  json["temperature"] = absl::GetFlag(FLAGS_bench_temperature);
  json["repetition_penalty"] = repetition;
  json["nucleus_candidates"] = BenchNucleusCandidates();
  json["weight_bytes"] = loaded->weight_bytes();
  // K and V of one token in every layer, summed over the ranks' devices.
  constexpr int32_t kBlock = 16;
  const double kv_bytes_per_token =
      static_cast<double>(loaded->runner->KvBytesPerBlockPerDevice(kBlock)) / kBlock *
      loaded->tensor_parallel_size();
  json["kv_bytes_per_token"] = kv_bytes_per_token;
  std::printf(
      "\n| batch | prefill tok/s (pp%d) | decode tok/s (tg%d) | steps | decode GB/s of weights "
      "| decode GB/s of weights + KV |\n",
      prompt_len, gen_len);
  std::printf("|---:|---:|---:|---:|---:|---:|\n");
  std::string nucleus_notes;  // printed after the table
  for (int32_t batch : batch_sizes) {
    std::vector<double> pp, tg;
    Sample last;
    for (int32_t r = 0; r < reps; ++r) {
      auto s = RunOnce(*loaded, batch, prompt_len, gen_len, 1000 + r);
      if (!s.ok()) {
        std::fprintf(stderr, "glimpse bench: batch %d: %s\n", batch,
                     std::string(s.status().message()).c_str());
        return 1;
      }
      pp.push_back(s->prefill_tok_s);
      tg.push_back(s->decode_tok_s);
      last = *s;
    }
    const Stats p = Summarize(pp), t = Summarize(tg);
    // One decode step streams the weights once for the whole batch (every rank its shard: the
    // figure is summed over the devices).
    const double gbps = t.mean / batch * loaded->weight_bytes() / 1e9;
    // And every sequence's KV once per step, at the mean context of the timed steps.
    const double kv_per_step = batch * (prompt_len + gen_len / 2.0) * kv_bytes_per_token;
    const double gbps_with_kv = t.mean / batch * (loaded->weight_bytes() + kv_per_step) / 1e9;
    std::printf("| %d | %.1f ± %.1f | %.1f ± %.1f | %lld | %.1f | %.1f |\n", batch, p.mean, p.stdev,
                t.mean, t.stdev, static_cast<long long>(last.steps), gbps, gbps_with_kv);
    std::fflush(stdout);
    if (last.nucleus_rows_decided + last.adjusted_rows_decided + last.rows_fetched > 0) {
      nucleus_notes += absl::StrCat("  batch ", batch, ": ", last.nucleus_rows_decided,
                                    " rows without top-k and ", last.adjusted_rows_decided,
                                    " penalised rows sampled from their candidates, ",
                                    last.rows_gathered, " rows gathered a few logits, ",
                                    last.rows_fetched, " fetched whole after their step\n");
    }
    json["results"].push_back({{"batch", batch},
                               {"prefill_tok_s", p.mean},
                               {"prefill_tok_s_stdev", p.stdev},
                               {"decode_tok_s", t.mean},
                               {"decode_tok_s_stdev", t.stdev},
                               {"steps", last.steps},
                               {"prefill_tokens", last.prefill_tokens},
                               {"decode_tokens", last.decode_tokens},
                               {"nucleus_rows_decided", last.nucleus_rows_decided},
                               {"adjusted_rows_decided", last.adjusted_rows_decided},
                               {"rows_fetched", last.rows_fetched},
                               {"rows_gathered", last.rows_gathered},
                               {"repetitions", reps}});
  }
  if (!nucleus_notes.empty()) {
    std::printf("\nrows that may need their whole row (last run of each batch size):\n%s",
                nucleus_notes.c_str());
  }
  // The backend's own counters over every run above, the warm-up included (with
  // --device=cuda: CUDA graph captures, replays and eagerly run steps by reason). Rank 0's:
  // every rank runs the same steps.
  const std::vector<kernels::BackendCounter> counters = loaded->rank_backend(0).Counters();
  if (!counters.empty()) {
    std::printf("\nbackend counters (all runs, warm-up included; zeros omitted):\n");
    for (const kernels::BackendCounter& c : counters) {
      if (c.value != 0) std::printf("  %s %lld\n", c.name.c_str(), static_cast<long long>(c.value));
      json["backend_counters"][c.name] = c.value;
    }
  }
  const std::string json_out = absl::GetFlag(FLAGS_json_out);
  if (!json_out.empty()) {
    std::ofstream out(json_out);
    out << json.dump(2) << "\n";
    if (!out) {
      std::fprintf(stderr, "glimpse bench: cannot write %s\n", json_out.c_str());
      return 1;
    }
  }
  std::printf("\n%s\n", json.dump().c_str());
  return 0;
}

}  // namespace glimpse::tools
