// One of a backend's counters (kernels::Backend::Counters) by name, for the CUDA backend's
// tests; a gtest failure and -1 when the backend has no such counter.
#ifndef GLIMPSE_KERNELS_CUDA_BACKEND_COUNTER_VALUE_H_
#define GLIMPSE_KERNELS_CUDA_BACKEND_COUNTER_VALUE_H_

#include <cstdint>
#include <string>

#include "gtest/gtest.h"
#include "kernels/backend.h"

namespace glimpse::kernels::testing {

inline int64_t CounterValue(const Backend& backend, const std::string& name) {
  for (const BackendCounter& c : backend.Counters()) {
    if (c.name == name) return c.value;
  }
  ADD_FAILURE() << "no counter " << name;
  return -1;
}

}  // namespace glimpse::kernels::testing

#endif  // GLIMPSE_KERNELS_CUDA_BACKEND_COUNTER_VALUE_H_
