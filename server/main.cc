// The one `glimpse` binary: dispatches to a subcommand. Flags are absl flags shared by all
// subcommands (each flag's help says which subcommands read it).
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "server/gateway_command.h"
#include "server/generate_command.h"
#include "server/make_model_command.h"
#include "server/serve_command.h"
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
  absl::SetProgramUsageMessage(kUsage);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() != 2) {
    std::fprintf(stderr, "%s\n\n%s\n",
                 positional.size() < 2 ? "glimpse: no command given."
                                       : "glimpse: give exactly one command.",
                 kUsage);
    return 2;
  }
  const std::string command = positional[1];
  if (command == "serve") return glimpse::server::RunServeCommand();
  if (command == "gateway") return glimpse::server::RunGatewayCommand();
  if (command == "generate") return glimpse::server::RunGenerateCommand();
  if (command == "tokenize") return glimpse::server::RunTokenizeCommand();
  if (command == "make-model") return glimpse::server::RunMakeModelCommand();
  if (command == "bench") return glimpse::tools::RunBenchCommand();
  if (command == "loadgen") return glimpse::tools::RunLoadgenCommand();
  std::fprintf(stderr, "glimpse: unknown command '%s'.\n\n%s\n", command.c_str(), kUsage);
  return 2;
}
