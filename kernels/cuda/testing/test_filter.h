// Which tests the kernel test harness runs: its --filter rule and Bazel's sharding, apart from
// the harness so that they can be tested without CUDA (test_filter_test.cc). Std-only.
//
// --filter=TEXT[,TEXT...] runs the tests whose name contains any TEXT; --filter=-TEXT[,-TEXT...]
// the others (so that a GPU session can run risky tests in a process of their own, see
// gpu_check.sh). A term without '-' selects, one with '-' excludes; exclusion wins. Empty
// terms (",,", a trailing ',') are ignored; an empty filter selects every test.
#ifndef GLIMPSE_KERNELS_CUDA_TESTING_TEST_FILTER_H_
#define GLIMPSE_KERNELS_CUDA_TESTING_TEST_FILTER_H_

#include <cstddef>
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

// Bazel's test sharding (shard_count in a BUILD rule; TEST_TOTAL_SHARDS / TEST_SHARD_INDEX in
// the environment): the shard that runs the test_index-th registered test, round-robin, so
// that tests registered side by side (a file's heavy variant tests) land in different shards.
// total_shards <= 1 is one shard, which runs every test.
inline bool InTestShard(size_t test_index, int shard_index, int total_shards) {
  if (total_shards <= 1) return true;
  return test_index % static_cast<size_t>(total_shards) == static_cast<size_t>(shard_index);
}

}  // namespace glimpse::kernels::cuda::testing

#endif  // GLIMPSE_KERNELS_CUDA_TESTING_TEST_FILTER_H_
