// The kernel test harness's --filter rule, apart from the harness so that it can be tested
// without CUDA (test_filter_test.cc). Std-only.
//
// --filter=TEXT[,TEXT...] runs the tests whose name contains any TEXT; --filter=-TEXT[,-TEXT...]
// the others (so that a GPU session can run risky tests in a process of their own, see
// gpu_check.sh). A term without '-' selects, one with '-' excludes; exclusion wins. Empty
// terms (",,", a trailing ',') are ignored; an empty filter selects every test.
#ifndef GLIMPSE_KERNELS_CUDA_TESTING_TEST_FILTER_H_
#define GLIMPSE_KERNELS_CUDA_TESTING_TEST_FILTER_H_

#include <string>

namespace glimpse::kernels::cuda::testing {

inline bool TestSelected(const std::string& name, const std::string& filter) {
  bool any_positive = false;
  bool matched_positive = false;
  size_t start = 0;
  while (start <= filter.size()) {
    size_t end = filter.find(',', start);
    if (end == std::string::npos) end = filter.size();
    const std::string term = filter.substr(start, end - start);
    start = end + 1;
    if (term.empty()) continue;
    if (term[0] == '-') {
      if (term.size() > 1 && name.find(term.substr(1)) != std::string::npos) return false;
    } else {
      any_positive = true;
      matched_positive = matched_positive || name.find(term) != std::string::npos;
    }
  }
  return !any_positive || matched_positive;
}

}  // namespace glimpse::kernels::cuda::testing

#endif  // GLIMPSE_KERNELS_CUDA_TESTING_TEST_FILTER_H_
