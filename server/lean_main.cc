// `glimpse_lean`: the engine without the network — model, kernels (CPU and, built with
// --config=cuda, CUDA), scheduler — and the subcommands that need nothing else: generate,
// tokenize, make-model, bench. No gRPC, HTTP or protobuf, so it can be carried to a bare GPU
// machine with only the few shared libraries it needs (tools/gpu_bundle.sh) to check and
// benchmark the CUDA backend end to end (kernels/cuda/gpu_e2e.sh).
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "server/generate_command.h"
#include "server/make_model_command.h"
#include "server/tokenize_command.h"
#include "tools/bench/bench.h"

namespace {

constexpr char kUsage[] =
    "glimpse_lean — glimpse's engine without the servers (for GPU checks).\n"
    "\n"
    "Usage: glimpse_lean <command> [--flag=value ...]\n"
    "\n"
    "Commands:\n"
    "  generate    Generate a continuation of --prompt with --model and stream it to stdout.\n"
    "  tokenize    Print the token ids and pieces of --prompt.\n"
    "  make-model  Write a GGUF with random weights in a real model's shape (--shape, --out).\n"
    "  bench       Measure prefill and decode throughput (llama-bench style).\n"
    "\n"
    "Examples:\n"
    "  glimpse_lean generate --device=cuda --prompt='def add(a, b):' --max_tokens=32\n"
    "  glimpse_lean make-model --shape=llama-3.1-8b --type=bf16 --out=/tmp/8b.gguf\n"
    "  glimpse_lean bench --device=cuda --bench_model=/tmp/8b.gguf --batch_sizes=1\n"
    "\n"
    "Run 'glimpse_lean --help' for every flag.";

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() != 2) {
    std::fprintf(stderr, "%s\n\n%s\n",
                 positional.size() < 2 ? "glimpse_lean: no command given."
                                       : "glimpse_lean: give exactly one command.",
                 kUsage);
    return 2;
  }
  const std::string command = positional[1];
  if (command == "generate") return glimpse::server::RunGenerateCommand();
  if (command == "tokenize") return glimpse::server::RunTokenizeCommand();
  if (command == "make-model") return glimpse::server::RunMakeModelCommand();
  if (command == "bench") return glimpse::tools::RunBenchCommand();
  std::fprintf(stderr, "glimpse_lean: unknown command '%s'.\n\n%s\n", command.c_str(), kUsage);
  return 2;
}
