// The main() of a binary made of subcommands (`glimpse`, `glimpse_lean`): parses the absl
// flags, takes exactly one positional command and runs it, or prints the usage and exits 2.
#ifndef GLIMPSE_SERVER_SUBCOMMAND_MAIN_H_
#define GLIMPSE_SERVER_SUBCOMMAND_MAIN_H_

#include <initializer_list>

namespace glimpse::server {

struct Subcommand {
  const char* name;
  int (*run)();
};

// `program` names the binary in messages; `usage` is its --help text.
int RunSubcommandMain(int argc, char** argv, const char* program, const char* usage,
                      std::initializer_list<Subcommand> subcommands);

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_SUBCOMMAND_MAIN_H_
