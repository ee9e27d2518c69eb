#include "server/openai_errors.h"

#include <string>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include <nlohmann/json.hpp>

namespace glimpse::server::openai {
namespace {

struct Case {
  absl::StatusCode code;
  int http_status;
  const char* type;
  const char* code_string;  // "" → JSON null.
};

TEST(OpenAiErrorsTest, StatusCodesMapToDesignHttpStatuses) {
  const Case cases[] = {
      {absl::StatusCode::kInvalidArgument, 400, "invalid_request_error", ""},
      {absl::StatusCode::kUnauthenticated, 401, "invalid_request_error", "invalid_api_key"},
      {absl::StatusCode::kNotFound, 404, "invalid_request_error", "model_not_found"},
      {absl::StatusCode::kAlreadyExists, 409, "invalid_request_error", ""},
      {absl::StatusCode::kResourceExhausted, 429, "rate_limit_error", "rate_limit_exceeded"},
      {absl::StatusCode::kUnimplemented, 501, "invalid_request_error", "not_implemented"},
      {absl::StatusCode::kUnavailable, 503, "server_error", "service_unavailable"},
      {absl::StatusCode::kDeadlineExceeded, 504, "server_error", "timeout"},
      {absl::StatusCode::kInternal, 500, "server_error", ""},
      {absl::StatusCode::kCancelled, 499, "invalid_request_error", "cancelled"},
  };
  for (const Case& c : cases) {
    const OpenAiError e = FromStatus(absl::Status(c.code, "why"));
    EXPECT_EQ(e.http_status, c.http_status) << absl::StatusCodeToString(c.code);
    EXPECT_EQ(e.type, c.type) << absl::StatusCodeToString(c.code);
    EXPECT_EQ(e.code, c.code_string) << absl::StatusCodeToString(c.code);
    EXPECT_EQ(e.message, "why");
    EXPECT_FALSE(e.param.has_value());
  }
}

TEST(OpenAiErrorsTest, PromptOverContextGetsContextLengthExceededCode) {
  const OpenAiError e = FromStatus(absl::InvalidArgumentError(
      "prompt: context_length_exceeded: the prompt has 5000 tokens, the limit is 4095"));
  EXPECT_EQ(e.http_status, 400);
  EXPECT_EQ(e.code, "context_length_exceeded");
}

TEST(OpenAiErrorsTest, InvalidParamCarriesParamIntoError) {
  const absl::Status s = InvalidParam("temperature", "'temperature' must be in [0, 2], got 3.");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(ParamOf(s).has_value());
  EXPECT_EQ(*ParamOf(s), "temperature");
  const OpenAiError e = FromStatus(s);
  EXPECT_EQ(e.http_status, 400);
  ASSERT_TRUE(e.param.has_value());
  EXPECT_EQ(*e.param, "temperature");
}

TEST(OpenAiErrorsTest, BodyTooLargeAndGrpcMessageTooLargeAre413) {
  EXPECT_EQ(FromStatus(BodyTooLargeStatus(1024)).http_status, 413);
  EXPECT_EQ(FromGrpcStatus(8, "Received message larger than max (5000 vs. 4096)").http_status,
            413);
  EXPECT_EQ(FromGrpcStatus(8, "waiting queue full").http_status, 429);
}

TEST(OpenAiErrorsTest, GrpcCodesUseTheSameMapping) {
  EXPECT_EQ(FromGrpcStatus(3, "x").http_status, 400);   // INVALID_ARGUMENT
  EXPECT_EQ(FromGrpcStatus(5, "x").http_status, 404);   // NOT_FOUND
  EXPECT_EQ(FromGrpcStatus(14, "x").http_status, 503);  // UNAVAILABLE
  EXPECT_EQ(FromGrpcStatus(4, "x").http_status, 504);   // DEADLINE_EXCEEDED
  EXPECT_EQ(FromGrpcStatus(13, "x").http_status, 500);  // INTERNAL
  EXPECT_EQ(FromGrpcStatus(99, "x").http_status, 500);  // Out of range → UNKNOWN.
  EXPECT_EQ(FromGrpcStatus(0, "").http_status, 500);    // OK is not an error: a caller bug.
}

TEST(OpenAiErrorsTest, ToJsonHasOpenAiShapeInOrder) {
  OpenAiError e = FromStatus(InvalidParam("n", "'n' must be in [1, 16], got 17."));
  EXPECT_EQ(ToJson(e),
            R"({"error":{"message":"'n' must be in [1, 16], got 17.","type":)"
            R"("invalid_request_error","param":"n","code":null}})");
  e = FromStatus(absl::NotFoundError("model 'x' is not served here"));
  EXPECT_EQ(ToJson(e),
            R"({"error":{"message":"model 'x' is not served here","type":)"
            R"("invalid_request_error","param":null,"code":"model_not_found"}})");
}

TEST(OpenAiErrorsTest, ToJsonReplacesInvalidUtf8InsteadOfFailing) {
  OpenAiError e = FromStatus(absl::InternalError(std::string("bad \xff byte")));
  const nlohmann::json j = nlohmann::json::parse(ToJson(e), nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["error"]["message"], "bad \xEF\xBF\xBD byte");
}

}  // namespace
}  // namespace glimpse::server::openai
