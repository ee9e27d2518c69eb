// `glimpse make-model`: writes a GGUF with random weights in the shape of a real model.
#ifndef GLIMPSE_SERVER_MAKE_MODEL_COMMAND_H_
#define GLIMPSE_SERVER_MAKE_MODEL_COMMAND_H_

namespace glimpse::server {

int RunMakeModelCommand();

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_MAKE_MODEL_COMMAND_H_
