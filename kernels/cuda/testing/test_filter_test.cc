// The kernel harness's --filter rule and its sharding (test_filter.h). gpu_check.sh runs the
// experimental kernels' tests in a process of their own with the filter (--filter=Wgmma,
// DecodeMma, the rest with --filter=-Wgmma,-DecodeMma), and Bazel shards the long emulated
// tests: a rule that selected a test twice, or none, would report a kernel as tested that
// never ran. Std-only, no CUDA: runs in every build.
#include "kernels/cuda/testing/test_filter.h"

#include <cstdio>
#include <string>

namespace {

int failures = 0;

void Expect(bool selected, const char* name, const char* filter, bool want) {
  if (selected != want) {
    std::printf("FAIL: --filter='%s' %s '%s'\n", filter, want ? "must select" : "must not select",
                name);
    ++failures;
  }
}

void Check(const char* name, const char* filter, bool want) {
  Expect(glimpse::kernels::cuda::testing::TestSelected(name, filter), name, filter, want);
}

}  // namespace

int main() {
  const char* wgmma = "PrefillWgmmaMatchesReference";
  const char* pipelined = "PrefillWgmmaPipelinedMatchesReference";
  const char* fp32 = "PrefillFp32MatchesReference";
  const char* refuse = "PrefillRefusesAPlanOfAnotherKernel";
  const char* decode_mma = "PagedDecodeMmaMatchesReference";

  // No filter, or only empty terms: everything.
  Check(fp32, "", true);
  Check(fp32, ",", true);
  Check(fp32, ",,", true);
  // One term: substring match, case-sensitive.
  Check(fp32, "Fp32", true);
  Check(wgmma, "Fp32", false);
  Check(fp32, "fp32", false);
  // A comma list selects any of its terms (the hand check of the last stop).
  Check(fp32, "Fp32,RefusesAPlan", true);
  Check(refuse, "Fp32,RefusesAPlan", true);
  Check(wgmma, "Fp32,RefusesAPlan", false);
  Check(refuse, "Fp32,,RefusesAPlan,", true);
  Check(wgmma, "Fp32,,RefusesAPlan,", false);
  // Exclusions: all but those; exclusion wins over a selecting term.
  Check(fp32, "-Wgmma", true);
  Check(wgmma, "-Wgmma", false);
  Check(pipelined, "-Wgmma,-Pipelined", false);
  Check(fp32, "-Wgmma,-Pipelined", true);
  Check(wgmma, "Prefill,-Pipelined", true);
  Check(pipelined, "Prefill,-Pipelined", false);
  Check(pipelined, "-Pipelined,Prefill", false);
  // A bare '-' excludes nothing (it is an empty term, not "every name contains ''").
  Check(fp32, "-", true);
  Check(fp32, "Fp32,-", true);
  // gpu_check.sh's split: every test lands in exactly one of the two processes.
  for (const char* name : {wgmma, pipelined, fp32, refuse, decode_mma}) {
    const bool risky = glimpse::kernels::cuda::testing::TestSelected(name, "Wgmma,DecodeMma");
    const bool rest = glimpse::kernels::cuda::testing::TestSelected(name, "-Wgmma,-DecodeMma");
    if (risky == rest) {
      std::printf("FAIL: '%s' is in %s of gpu_check.sh's two processes\n", name,
                  risky ? "both" : "neither");
      ++failures;
    }
  }
  // Sharding: every test in exactly one of the shards, neighbours in different ones, and one
  // shard (or none asked for) runs everything.
  using glimpse::kernels::cuda::testing::InTestShard;
  for (const int shards : {2, 3, 4}) {
    for (size_t test = 0; test < 10; ++test) {
      int owners = 0;
      for (int shard = 0; shard < shards; ++shard) owners += InTestShard(test, shard, shards);
      if (owners != 1) {
        std::printf("FAIL: test %zu is in %d of %d shards\n", test, owners, shards);
        ++failures;
      }
      if (InTestShard(test, 0, shards) && InTestShard(test + 1, 0, shards)) {
        std::printf("FAIL: tests %zu and %zu share shard 0 of %d\n", test, test + 1, shards);
        ++failures;
      }
    }
  }
  for (size_t test = 0; test < 10; ++test) {
    if (!InTestShard(test, 0, 1) || !InTestShard(test, 0, 0)) {
      std::printf("FAIL: without sharding, test %zu must run\n", test);
      ++failures;
    }
  }
  std::printf("%s\n", failures == 0 ? "PASS" : "FAILED");
  return failures == 0 ? 0 : 1;
}
