#include "server/subcommand_main.h"

#include <cstdio>
#include <cstring>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"

namespace glimpse::server {

int RunSubcommandMain(int argc, char** argv, const char* program, const char* usage,
                      std::initializer_list<Subcommand> subcommands) {
  absl::SetProgramUsageMessage(usage);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() != 2) {
    std::fprintf(stderr, "%s: %s\n\n%s\n", program,
                 positional.size() < 2 ? "no command given." : "give exactly one command.",
                 usage);
    return 2;
  }
  for (const Subcommand& s : subcommands) {
    if (std::strcmp(positional[1], s.name) == 0) return s.run();
  }
  std::fprintf(stderr, "%s: unknown command '%s'.\n\n%s\n", program, positional[1], usage);
  return 2;
}

}  // namespace glimpse::server
