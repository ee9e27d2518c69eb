#include "common/status_macros.h"

#include <memory>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "common/check.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(int, glimpse_test_num_widgets, 7, "Only here to prove absl flags link and parse.");

namespace glimpse {
namespace {

using ::testing::HasSubstr;

// Counts copies and moves, so a test can tell "moved" from "copied".
struct Tracked {
  static inline int num_copies = 0;
  static inline int num_moves = 0;
  static void Reset() { num_copies = num_moves = 0; }

  explicit Tracked(int v) : value(v) {}
  Tracked(const Tracked& other) : value(other.value) { ++num_copies; }
  Tracked(Tracked&& other) noexcept : value(other.value) { ++num_moves; }
  Tracked& operator=(const Tracked& other) {
    value = other.value;
    ++num_copies;
    return *this;
  }
  Tracked& operator=(Tracked&& other) noexcept {
    value = other.value;
    ++num_moves;
    return *this;
  }

  int value;
};

// ---- RETURN_IF_ERROR ----------------------------------------------------------------------

absl::Status FailIf(bool fail, int* num_calls) {
  ++*num_calls;
  return fail ? absl::ResourceExhaustedError("no free blocks") : absl::OkStatus();
}

absl::Status TwoSteps(bool fail_first, int* num_calls, bool* reached_end) {
  RETURN_IF_ERROR(FailIf(fail_first, num_calls));
  RETURN_IF_ERROR(FailIf(false, num_calls));
  *reached_end = true;
  return absl::OkStatus();
}

TEST(ReturnIfErrorTest, ReturnsTheErrorEarlyAndSkipsTheRest) {
  int num_calls = 0;
  bool reached_end = false;
  const absl::Status status = TwoSteps(/*fail_first=*/true, &num_calls, &reached_end);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(status.message(), "no free blocks");
  EXPECT_EQ(num_calls, 1);
  EXPECT_FALSE(reached_end);
}

TEST(ReturnIfErrorTest, ContinuesOnOkAndEvaluatesEachExpressionOnce) {
  int num_calls = 0;
  bool reached_end = false;
  EXPECT_TRUE(TwoSteps(/*fail_first=*/false, &num_calls, &reached_end).ok());
  EXPECT_EQ(num_calls, 2);
  EXPECT_TRUE(reached_end);
}

absl::StatusOr<int> ReturnIfErrorInStatusOrFunction(bool fail) {
  int num_calls = 0;
  RETURN_IF_ERROR(FailIf(fail, &num_calls));
  return 42;
}

TEST(ReturnIfErrorTest, WorksInFunctionsReturningStatusOr) {
  EXPECT_EQ(ReturnIfErrorInStatusOrFunction(true).status().code(),
            absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(ReturnIfErrorInStatusOrFunction(false).ok());
  EXPECT_EQ(*ReturnIfErrorInStatusOrFunction(false), 42);
}

// ---- ASSIGN_OR_RETURN ---------------------------------------------------------------------

absl::StatusOr<Tracked> MakeTracked(bool fail, int value) {
  if (fail) return absl::InvalidArgumentError("bad request");
  return Tracked(value);
}

absl::StatusOr<int> SumTwo(bool fail_first, bool fail_second, bool* reached_end) {
  ASSIGN_OR_RETURN(Tracked a, MakeTracked(fail_first, 1));
  ASSIGN_OR_RETURN(Tracked b, MakeTracked(fail_second, 2));  // two uses in one scope
  *reached_end = true;
  return a.value + b.value;
}

TEST(AssignOrReturnTest, ReturnsTheErrorEarlyAndSkipsTheRest) {
  bool reached_end = false;
  absl::StatusOr<int> sum = SumTwo(/*fail_first=*/false, /*fail_second=*/true, &reached_end);
  EXPECT_EQ(sum.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sum.status().message(), "bad request");
  EXPECT_FALSE(reached_end);

  sum = SumTwo(/*fail_first=*/true, /*fail_second=*/false, &reached_end);
  EXPECT_EQ(sum.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(reached_end);
}

TEST(AssignOrReturnTest, AssignsTheValueOnSuccess) {
  bool reached_end = false;
  absl::StatusOr<int> sum = SumTwo(false, false, &reached_end);
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(*sum, 3);
  EXPECT_TRUE(reached_end);
}

absl::Status AssignTrackedTo(Tracked* out) {
  ASSIGN_OR_RETURN(*out, MakeTracked(false, 9));
  return absl::OkStatus();
}

TEST(AssignOrReturnTest, MovesTheValueInsteadOfCopyingIt) {
  Tracked::Reset();
  bool reached_end = false;
  ASSERT_TRUE(SumTwo(false, false, &reached_end).ok());
  EXPECT_EQ(Tracked::num_copies, 0);

  Tracked target(0);
  Tracked::Reset();
  ASSERT_TRUE(AssignTrackedTo(&target).ok());
  EXPECT_EQ(target.value, 9);
  EXPECT_EQ(Tracked::num_copies, 0);
  EXPECT_GE(Tracked::num_moves, 1);
}

absl::StatusOr<std::unique_ptr<std::string>> MakeName(bool fail) {
  if (fail) return absl::NotFoundError("no such model");
  return std::make_unique<std::string>("tiny-llama");
}

absl::StatusOr<std::unique_ptr<std::string>> Rename(bool fail) {
  ASSIGN_OR_RETURN(std::unique_ptr<std::string> name, MakeName(fail));
  *name += "-v2";
  return name;
}

TEST(AssignOrReturnTest, WorksWithMoveOnlyTypes) {
  absl::StatusOr<std::unique_ptr<std::string>> renamed = Rename(false);
  ASSERT_TRUE(renamed.ok()) << renamed.status();
  ASSERT_NE(*renamed, nullptr);
  EXPECT_EQ(**renamed, "tiny-llama-v2");

  EXPECT_EQ(Rename(true).status().code(), absl::StatusCode::kNotFound);
}

absl::Status AssignToExisting(bool fail, std::unique_ptr<std::string>* name) {
  ASSIGN_OR_RETURN(*name, MakeName(fail));
  return absl::OkStatus();
}

TEST(AssignOrReturnTest, LeavesAnExistingTargetUntouchedOnError) {
  auto name = std::make_unique<std::string>("old");
  EXPECT_EQ(AssignToExisting(true, &name).code(), absl::StatusCode::kNotFound);
  ASSERT_NE(name, nullptr);
  EXPECT_EQ(*name, "old");

  EXPECT_TRUE(AssignToExisting(false, &name).ok());
  EXPECT_EQ(*name, "tiny-llama");
}

// ---- CHECK --------------------------------------------------------------------------------

TEST(CheckDeathTest, AbortsWithTheFailedConditionAndLocation) {
  const int num_blocks = 3;
  CHECK(num_blocks == 3);  // passes: no abort
  EXPECT_DEATH(CHECK(num_blocks == 4), "status_macros_test.cc:[0-9]+: CHECK failed: num_blocks == 4");
}

// ---- The toolchain: Debian's absl (flags, strings, containers, sync) and spdlog link ------

TEST(SystemLibrariesTest, AbslFlagsParseAndStrFormatAndContainersLink) {
  char arg0[] = "status_macros_test";
  char arg1[] = "--glimpse_test_num_widgets=42";
  char* argv[] = {arg0, arg1};
  absl::ParseCommandLine(2, argv);
  EXPECT_EQ(absl::GetFlag(FLAGS_glimpse_test_num_widgets), 42);

  EXPECT_EQ(absl::StrFormat("%d blocks, %.1f%%", 12, 37.5), "12 blocks, 37.5%");

  absl::flat_hash_map<std::string, int> counts;
  absl::Mutex mu;
  {
    absl::MutexLock lock(&mu);
    counts["prefill"] += 2;
  }
  EXPECT_EQ(counts.at("prefill"), 2);
  EXPECT_THAT(absl::InternalError("kv pool corrupt").ToString(), HasSubstr("kv pool corrupt"));
}

TEST(SystemLibrariesTest, SpdlogFormatsWithExternalFmt) {
  spdlog::info("spdlog {} with fmt {}: {:.2f}", "links", FMT_VERSION, 1.5);
  EXPECT_EQ(fmt::format("{:>4}|{}", 7, "ok"), "   7|ok");
}

}  // namespace
}  // namespace glimpse
