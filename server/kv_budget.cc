#include "server/kv_budget.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace glimpse::server {

namespace {

std::string GiB(double bytes) { return absl::StrFormat("%.1f GiB", bytes / (1 << 30)); }

}  // namespace

absl::StatusOr<KvBudget> KvBudgetPerDevice(const KvBudgetInputs& in) {
  KvBudget budget;
  const int64_t ranks = std::max<int64_t>(1, static_cast<int64_t>(in.devices.size()));
  if (in.kv_cache_fraction <= 0) {
    budget.bytes_per_device = in.kv_cache_bytes;
    budget.rule = "--kv_cache_bytes";
  } else {
    const size_t on_devices = static_cast<size_t>(std::count_if(
        in.devices.begin(), in.devices.end(), [](const auto& d) { return d.has_value(); }));
    if (on_devices == 0) {
      // CPU ranks allocate from the one host memory the fraction is of.
      budget.bytes_per_device = static_cast<int64_t>(
          in.kv_cache_fraction * static_cast<double>(in.host_memory_bytes) / ranks);
      budget.rule =
          absl::StrFormat("--kv_cache_fraction=%g of %s of host memory%s", in.kv_cache_fraction,
                          GiB(static_cast<double>(in.host_memory_bytes)),
                          ranks > 1 ? absl::StrCat(", shared by ", ranks, " ranks") : "");
    } else if (on_devices != in.devices.size()) {
      return absl::InvalidArgumentError(
          "some tensor-parallel ranks allocate device memory and some host memory; "
          "--kv_cache_fraction cannot size both, set --kv_cache_bytes");
    } else {
      size_t least_free = std::numeric_limits<size_t>::max();
      for (const auto& d : in.devices) least_free = std::min(least_free, d->free_bytes);
      budget.bytes_per_device =
          static_cast<int64_t>(in.kv_cache_fraction * static_cast<double>(least_free));
      budget.rule =
          absl::StrFormat("--kv_cache_fraction=%g of the %s free on %s once the weights are loaded",
                          in.kv_cache_fraction, GiB(static_cast<double>(least_free)),
                          ranks > 1 ? "the device with the least free" : "the device");
    }
  }
  if (budget.bytes_per_device < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the KV cache budget (", budget.rule, ") is ", budget.bytes_per_device,
        " bytes; raise --kv_cache_bytes or --kv_cache_fraction, or free device memory"));
  }
  return budget;
}

}  // namespace glimpse::server
