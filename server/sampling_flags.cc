#include "server/sampling_flags.h"

#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

ABSL_FLAG(float, temperature, 0.0f,
          "Sampling temperature; 0 is greedy decoding (the most likely token every step).");
ABSL_FLAG(int32_t, top_k, 0, "Keep only the k most likely tokens; 0 turns it off.");
ABSL_FLAG(float, top_p, 1.0f, "Nucleus sampling: keep the smallest set of tokens whose "
                              "probability reaches top_p; 1 turns it off.");
ABSL_FLAG(float, min_p, 0.0f, "Drop tokens less likely than min_p times the most likely one.");
ABSL_FLAG(float, repetition_penalty, 1.0f,
          "Divide positive (multiply negative) logits of tokens already in the prompt or "
          "output by this; 1 turns it off.");
ABSL_FLAG(float, presence_penalty, 0.0f,
          "Subtract this from the logit of every token generated at least once (-2..2).");
ABSL_FLAG(float, frequency_penalty, 0.0f,
          "Subtract this times the token's count so far in the output (-2..2).");
ABSL_FLAG(std::string, logit_bias, "",
          "Comma-separated id:bias pairs added to the logits, e.g. '13:-100,42:5'; a bias of "
          "-inf bans the token.");
ABSL_FLAG(int64_t, seed, -1, "Random seed for sampling; -1 uses a fixed default (0).");
ABSL_FLAG(int32_t, logprobs, 0,
          "Print the log-probability of each generated token and of the top N alternatives.");

namespace glimpse::server {

absl::StatusOr<model::SamplingParams> SamplingParamsFromFlags() {
  model::SamplingParams p;
  p.temperature = absl::GetFlag(FLAGS_temperature);
  p.top_k = absl::GetFlag(FLAGS_top_k);
  p.top_p = absl::GetFlag(FLAGS_top_p);
  p.min_p = absl::GetFlag(FLAGS_min_p);
  p.repetition_penalty = absl::GetFlag(FLAGS_repetition_penalty);
  p.presence_penalty = absl::GetFlag(FLAGS_presence_penalty);
  p.frequency_penalty = absl::GetFlag(FLAGS_frequency_penalty);
  p.num_logprobs = absl::GetFlag(FLAGS_logprobs);
  if (absl::GetFlag(FLAGS_seed) >= 0) p.seed = static_cast<uint64_t>(absl::GetFlag(FLAGS_seed));
  const std::string bias = absl::GetFlag(FLAGS_logit_bias);
  if (!bias.empty()) {
    for (const std::string& pair : std::vector<std::string>(absl::StrSplit(bias, ','))) {
      std::vector<std::string> parts = absl::StrSplit(pair, ':');
      int32_t id;
      float value;
      const bool minus_inf = parts.size() == 2 && parts[1] == "-inf";
      if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &id) ||
          (!minus_inf && !absl::SimpleAtof(parts[1], &value))) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--logit_bias: '", pair, "' is not id:bias (e.g. --logit_bias=13:-100,42:5)"));
      }
      p.logit_bias.emplace_back(id, minus_inf ? -std::numeric_limits<float>::infinity() : value);
    }
  }
  return p;
}

}  // namespace glimpse::server
