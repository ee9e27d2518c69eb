// `glimpse tokenize`: prints the token ids and pieces of --prompt.
#ifndef GLIMPSE_SERVER_TOKENIZE_COMMAND_H_
#define GLIMPSE_SERVER_TOKENIZE_COMMAND_H_

namespace glimpse::server {

int RunTokenizeCommand();

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_TOKENIZE_COMMAND_H_
