// The one `glimpse` binary: dispatches to a subcommand. Flags are absl flags shared by all
// subcommands (each flag's help says which subcommands read it).
#include "server/gateway_command.h"
#include "server/generate_command.h"
#include "server/make_model_command.h"
#include "server/serve_command.h"
#include "server/subcommand_main.h"
#include "server/tokenize_command.h"
#include "tools/bench/bench.h"
#include "tools/loadgen/loadgen.h"

namespace {

constexpr char kUsage[] =
    "glimpse — a high-throughput LLM inference server.\n"
    "\n"
    "Usage: glimpse <command> [--flag=value ...]\n"
    "\n"
    "Commands:\n"
    "  serve       Serve --model over gRPC (glimpse.v1.Engine) on --host:--port until SIGTERM.\n"
    "  gateway     OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions) in front\n"
    "              of one or more `serve` replicas (--backends=host:port,...).\n"
    "  generate    Generate a continuation of --prompt with --model and stream it to stdout.\n"
    "  tokenize    Print the token ids and pieces of --prompt.\n"
    "  make-model  Write a GGUF with random weights in a real model's shape (--shape, --out).\n"
    "  bench       Measure prefill and decode throughput (llama-bench style).\n"
    "  loadgen     Load-test glimpse (gRPC) or any OpenAI-compatible server: table, JSON, plots.\n"
    "\n"
    "Examples:\n"
    "  glimpse serve --port=50051 --max_num_seqs=64\n"
    "  glimpse generate --prompt='def add(a, b):' --max_tokens=32\n"
    "  glimpse tokenize --prompt='hello world'\n"
    "  glimpse make-model --shape=small-110m --out=/tmp/small.gguf --type=f16\n"
    "  glimpse bench --threads=2\n"
    "\n"
    "Run 'glimpse --help' for every flag.";

}  // namespace

int main(int argc, char** argv) {
  return glimpse::server::RunSubcommandMain(
      argc, argv, "glimpse", kUsage,
      {
          {"serve", &glimpse::server::RunServeCommand},
          {"gateway", &glimpse::server::RunGatewayCommand},
          {"generate", &glimpse::server::RunGenerateCommand},
          {"tokenize", &glimpse::server::RunTokenizeCommand},
          {"make-model", &glimpse::server::RunMakeModelCommand},
          {"bench", &glimpse::tools::RunBenchCommand},
          {"loadgen", &glimpse::tools::RunLoadgenCommand},
      });
}
