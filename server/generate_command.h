// `glimpse generate`: runs one prompt through the model and streams the continuation.
#ifndef GLIMPSE_SERVER_GENERATE_COMMAND_H_
#define GLIMPSE_SERVER_GENERATE_COMMAND_H_

namespace glimpse::server {

// Reads its flags (see --help); returns the process exit code.
int RunGenerateCommand();

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_GENERATE_COMMAND_H_
