// `glimpse_lean`: the engine without the network — model, kernels (CPU and, built with
// --config=cuda, CUDA), scheduler — and the subcommands that need nothing else: generate,
// tokenize, make-model, bench. No gRPC, HTTP or protobuf, so it can be carried to a bare GPU
// machine with only the few shared libraries it needs (tools/gpu_bundle.sh) to check and
// benchmark the CUDA backend end to end (kernels/cuda/gpu_e2e.sh).
#include "server/generate_command.h"
#include "server/make_model_command.h"
#include "server/subcommand_main.h"
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
  return glimpse::server::RunSubcommandMain(
      argc, argv, "glimpse_lean", kUsage,
      {
          {"generate", &glimpse::server::RunGenerateCommand},
          {"tokenize", &glimpse::server::RunTokenizeCommand},
          {"make-model", &glimpse::server::RunMakeModelCommand},
          {"bench", &glimpse::tools::RunBenchCommand},
      });
}
