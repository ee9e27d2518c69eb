#include "server/openai_errors.h"

#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include <nlohmann/json.hpp>

namespace glimpse::server::openai {
namespace {

// Status payload type URLs (private to this file).
constexpr char kParamPayload[] = "type.googleapis.com/glimpse.openai.Param";
constexpr char kBodyTooLargePayload[] = "type.googleapis.com/glimpse.openai.BodyTooLarge";

OpenAiError Make(int http_status, std::string type, std::string code, std::string message) {
  OpenAiError e;
  e.http_status = http_status;
  e.type = std::move(type);
  e.code = std::move(code);
  e.message = std::move(message);
  return e;
}

bool SaysContextLengthExceeded(const std::string& message) {
  return absl::StrContains(message, "context_length_exceeded") ||
         absl::StrContains(message, "maximum context length");
}

}  // namespace

absl::Status InvalidParam(std::string_view param, std::string_view message) {
  absl::Status status = absl::InvalidArgumentError(std::string(message));
  status.SetPayload(kParamPayload, absl::Cord(std::string(param)));
  return status;
}

std::optional<std::string> ParamOf(const absl::Status& status) {
  const auto payload = status.GetPayload(kParamPayload);  // absl::optional (Debian absl).
  if (!payload.has_value()) return std::nullopt;
  return std::string(*payload);
}

absl::Status BodyTooLargeStatus(size_t limit_bytes) {
  absl::Status status = absl::ResourceExhaustedError(
      absl::StrCat("The request body is larger than the limit of ", limit_bytes, " bytes."));
  status.SetPayload(kBodyTooLargePayload, absl::Cord("1"));
  return status;
}

OpenAiError FromStatus(const absl::Status& status) {
  std::string message(status.message());
  OpenAiError e;
  switch (status.code()) {
    case absl::StatusCode::kOk:
      e = Make(500, "server_error", "", "internal error: an OK status was reported as an error");
      break;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      e = Make(400, "invalid_request_error",
               SaysContextLengthExceeded(message) ? "context_length_exceeded" : "", message);
      break;
    case absl::StatusCode::kUnauthenticated:
      e = Make(401, "invalid_request_error", "invalid_api_key", message);
      break;
    case absl::StatusCode::kPermissionDenied:
      e = Make(403, "invalid_request_error", "permission_denied", message);
      break;
    case absl::StatusCode::kNotFound:
      e = Make(404, "invalid_request_error", "model_not_found", message);
      break;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      e = Make(409, "invalid_request_error", "", message);
      break;
    case absl::StatusCode::kResourceExhausted:
      if (status.GetPayload(kBodyTooLargePayload).has_value() ||
          absl::StrContains(message, "larger than max")) {
        e = Make(413, "invalid_request_error", "request_too_large", message);
      } else {
        e = Make(429, "rate_limit_error", "rate_limit_exceeded", message);
      }
      break;
    case absl::StatusCode::kCancelled:
      e = Make(499, "invalid_request_error", "cancelled", message);
      break;
    case absl::StatusCode::kUnimplemented:
      e = Make(501, "invalid_request_error", "not_implemented", message);
      break;
    case absl::StatusCode::kUnavailable:
      e = Make(503, "server_error", "service_unavailable", message);
      break;
    case absl::StatusCode::kDeadlineExceeded:
      e = Make(504, "server_error", "timeout", message);
      break;
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDataLoss:
      e = Make(500, "server_error", "", message);
      break;
    // Never produced: absl's sentinel that forces callers to keep a default-free switch working.
    case absl::StatusCode::kDoNotUseReservedForFutureExpansionUseDefaultInSwitchInstead_:
      e = Make(500, "server_error", "", message);
      break;
  }
  if (e.http_status == 500 && e.message.empty()) e.message = "internal server error";
  e.param = ParamOf(status);
  return e;
}

OpenAiError FromGrpcStatus(int grpc_code, std::string_view message) {
  // Codes outside 0..16 (never sent by a conforming peer) are reported as UNKNOWN.
  const auto code = (grpc_code >= 0 && grpc_code <= 16) ? static_cast<absl::StatusCode>(grpc_code)
                                                       : absl::StatusCode::kUnknown;
  if (code == absl::StatusCode::kOk) return FromStatus(absl::OkStatus());
  return FromStatus(absl::Status(code, std::string(message)));
}

std::string ToJson(const OpenAiError& error) {
  nlohmann::ordered_json inner;
  inner["message"] = error.message;
  inner["type"] = error.type;
  inner["param"] = error.param.has_value() ? nlohmann::ordered_json(*error.param) : nullptr;
  inner["code"] = error.code.empty() ? nlohmann::ordered_json(nullptr)
                                     : nlohmann::ordered_json(error.code);
  nlohmann::ordered_json body;
  body["error"] = std::move(inner);
  // Replace invalid UTF-8 (e.g. echoed from a backend message) instead of throwing.
  return body.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace glimpse::server::openai
