// OpenAI-style errors for the HTTP gateway: the one place where absl / gRPC status codes become
// HTTP statuses and OpenAI's error JSON (DESIGN.md, "Interfaces users see"; proto/README.md,
// "Status codes").
//
//   INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE → 400 invalid_request_error
//                         (code "context_length_exceeded" when the message says so)
//   UNAUTHENTICATED     → 401 invalid_request_error, code "invalid_api_key"
//   PERMISSION_DENIED   → 403 invalid_request_error, code "permission_denied"
//   NOT_FOUND           → 404 invalid_request_error, code "model_not_found"
//   ALREADY_EXISTS, ABORTED → 409 invalid_request_error
//   RESOURCE_EXHAUSTED  → 429 rate_limit_error, code "rate_limit_exceeded"; 413
//                         invalid_request_error ("request_too_large") when the message is gRPC's
//                         "larger than max" or the status came from BodyTooLarge()
//   CANCELLED           → 499 (nginx's "client closed request"; nobody is left to read it)
//   UNIMPLEMENTED       → 501 invalid_request_error, code "not_implemented"
//   UNAVAILABLE         → 503 server_error, code "service_unavailable"
//   DEADLINE_EXCEEDED   → 504 server_error, code "timeout"
//   INTERNAL, UNKNOWN, DATA_LOSS (and OK, which is a caller bug) → 500 server_error
//
// Request parsing reports a bad field as INVALID_ARGUMENT carrying the OpenAI parameter name as
// a status payload (InvalidParam); FromStatus turns it into the JSON's "param".
//
// Thread-safety: plain functions, no state.
#ifndef GLIMPSE_SERVER_OPENAI_ERRORS_H_
#define GLIMPSE_SERVER_OPENAI_ERRORS_H_

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace glimpse::server::openai {

// One error as OpenAI's API reports it. `code` empty → JSON null.
struct OpenAiError {
  int http_status = 500;
  std::string type;     // "invalid_request_error", "rate_limit_error", "server_error", ...
  std::string code;     // "context_length_exceeded", "model_not_found", ... or empty.
  std::string message;  // Human-readable; never contains prompt text.
  std::optional<std::string> param;  // The offending request field, e.g. "temperature".
};

// INVALID_ARGUMENT whose message is `message` and which carries `param` (an OpenAI field name,
// e.g. "messages[1].content") for FromStatus.
absl::Status InvalidParam(std::string_view param, std::string_view message);

// The param carried by a status made with InvalidParam, if any.
std::optional<std::string> ParamOf(const absl::Status& status);

// RESOURCE_EXHAUSTED marked as "request body over the limit" (→ 413).
absl::Status BodyTooLargeStatus(size_t limit_bytes);

// The OpenAI error for `status` (see the table above). An OK status is a caller bug → 500.
OpenAiError FromStatus(const absl::Status& status);

// The OpenAI error for a gRPC status from a replica. `grpc_code` is a grpc::StatusCode value
// (gRPC and absl number their codes identically), e.g. static_cast<int>(s.error_code()).
OpenAiError FromGrpcStatus(int grpc_code, std::string_view message);

// OpenAI's error body: {"error":{"message":...,"type":...,"param":...,"code":...}}.
std::string ToJson(const OpenAiError& error);

}  // namespace glimpse::server::openai

#endif  // GLIMPSE_SERVER_OPENAI_ERRORS_H_
