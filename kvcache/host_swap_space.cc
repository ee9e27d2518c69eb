#include "kvcache/host_swap_space.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/check.h"

namespace glimpse::kvcache {

HostSwapSpace::HostSwapSpace(int32_t num_blocks) : in_use_(num_blocks, false) {
  CHECK(num_blocks >= 0);
  free_.reserve(num_blocks);
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);  // low ids first
}

bool HostSwapSpace::in_use(int32_t block) const {
  CHECK(block >= 0 && block < num_blocks());
  return in_use_[block];
}

std::optional<std::vector<int32_t>> HostSwapSpace::Allocate(int32_t n) {
  CHECK(n >= 0);
  if (n > num_free()) return std::nullopt;
  std::vector<int32_t> out(free_.rbegin(), free_.rbegin() + n);
  free_.resize(free_.size() - n);
  for (int32_t b : out) in_use_[b] = true;
  return out;
}

void HostSwapSpace::Release(std::span<const int32_t> blocks) {
  for (int32_t b : blocks) {
    CHECK(in_use(b));
    in_use_[b] = false;
    free_.push_back(b);
  }
}

absl::Status HostSwapSpace::CheckInvariants() const {
  std::vector<bool> listed(in_use_.size(), false);
  for (int32_t b : free_) {
    if (b < 0 || b >= num_blocks() || listed[b] || in_use_[b]) {
      return absl::InternalError(absl::StrCat("host block ", b, " listed free wrongly"));
    }
    listed[b] = true;
  }
  for (int32_t b = 0; b < num_blocks(); ++b) {
    if (!listed[b] && !in_use_[b]) {
      return absl::InternalError(absl::StrCat("host block ", b, " lost: neither free nor used"));
    }
  }
  return absl::OkStatus();
}

}  // namespace glimpse::kvcache
