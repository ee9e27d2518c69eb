// For tests: a CPU backend that records the host memory its AllocateHost hands out and
// FreeHost takes back, so that a test can tell where a buffer came from.
//
// Thread-safety: none (one test thread).
#ifndef GLIMPSE_KERNELS_CPU_TESTING_COUNTING_HOST_BACKEND_H_
#define GLIMPSE_KERNELS_CPU_TESTING_COUNTING_HOST_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "kernels/cpu/cpu_backend.h"

namespace glimpse::kernels::cpu {

class CountingHostBackend final : public CpuBackend {
 public:
  CountingHostBackend() : CpuBackend(1) {}

  void* AllocateHost(size_t num_bytes) override {
    void* p = CpuBackend::AllocateHost(num_bytes);
    live_[p] = num_bytes;
    ++allocations_;
    return p;
  }
  void FreeHost(void* ptr) override {
    if (ptr == nullptr) return;
    if (live_.erase(ptr) != 1) {
      std::fprintf(stderr, "CountingHostBackend: FreeHost of memory it did not allocate\n");
      std::abort();
    }
    CpuBackend::FreeHost(ptr);
  }

  // True if [p, p + num_bytes) lies in one allocation not yet freed.
  bool Holds(const void* p, size_t num_bytes) const {
    const auto q = reinterpret_cast<uintptr_t>(p);
    for (const auto& [base, size] : live_) {
      const auto b = reinterpret_cast<uintptr_t>(base);
      if (q >= b && q + num_bytes <= b + size) return true;
    }
    return false;
  }
  size_t num_live() const { return live_.size(); }
  int num_allocations() const { return allocations_; }

 private:
  std::map<void*, size_t> live_;
  int allocations_ = 0;
};

}  // namespace glimpse::kernels::cpu

#endif  // GLIMPSE_KERNELS_CPU_TESTING_COUNTING_HOST_BACKEND_H_
