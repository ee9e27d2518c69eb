// The kernel harness's --filter rule (test_filter.h). gpu_check.sh runs the experimental
// kernels' tests in a process of their own with it (--filter=Wgmma,DecodeMma, the rest with
// --filter=-Wgmma,-DecodeMma): a rule that selected a test twice, or none, would make the GPU
// session report a kernel as tested that never ran. Std-only, no CUDA: runs in every build.
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
  std::printf("%s\n", failures == 0 ? "PASS" : "FAILED");
  return failures == 0 ? 0 : 1;
}
