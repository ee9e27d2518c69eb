// For tests: a CPU backend that shows what a GPU backend's host-side contracts hide on a CPU.
//   - It records the host memory its AllocateHost hands out and FreeHost takes back (and can
//     refuse, as a GPU host short of page-lockable memory does), so that a test can tell
//     where a buffer came from and that it goes back the right way.
//   - CopyToHostAsync reads the source at the call (as a stream-ordered copy does, before
//     later work) but writes the host only at the next WaitForCopiesToHost or CopyToHost (as
//     a GPU's copy lands later): a caller that reads too early reads stale bytes.
//   - CopyToBackendAsync lands those first (it is ordered after them) and refuses host
//     memory it did not allocate, as the contract asks; copies each way are counted, so that
//     a test can tell which way a caller went.
//   - Batches of copies (BatchCopyToHostAsync and the like) are counted, and refused (abort)
//     when a copy of one writes where another of it reads or writes: a GPU runs them in any
//     order.
//
// Thread-safety: none (one test thread).
#ifndef GLIMPSE_KERNELS_CPU_TESTING_INSTRUMENTED_CPU_BACKEND_H_
#define GLIMPSE_KERNELS_CPU_TESTING_INSTRUMENTED_CPU_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <span>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace glimpse::kernels::cpu {

class InstrumentedCpuBackend final : public CpuBackend {
 public:
  InstrumentedCpuBackend() : CpuBackend(1) {}

  void* AllocateHost(size_t num_bytes) override {
    if (refuse_host_allocations_) return nullptr;
    void* p = CpuBackend::AllocateHost(num_bytes);
    live_[p] = num_bytes;
    ++allocations_;
    return p;
  }
  void FreeHost(void* ptr) override {
    if (ptr == nullptr) return;
    if (live_.erase(ptr) != 1) {
      std::fprintf(stderr, "InstrumentedCpuBackend: FreeHost of memory it did not allocate\n");
      std::abort();
    }
    CpuBackend::FreeHost(ptr);
  }
  void CopyToHostAsync(void* host_dst, const void* src, size_t num_bytes) override {
    const auto* bytes = static_cast<const uint8_t*>(src);
    pending_.push_back({host_dst, std::vector<uint8_t>(bytes, bytes + num_bytes)});
  }
  void WaitForCopiesToHost() override {
    ++waits_;
    Deliver();
  }
  void CopyToBackend(void* dst, const void* host_src, size_t num_bytes) override {
    ++copies_to_backend_;
    CpuBackend::CopyToBackend(dst, host_src, num_bytes);
  }
  void CopyToBackendAsync(void* dst, const void* host_src, size_t num_bytes) override {
    if (!Holds(host_src, num_bytes)) {
      std::fprintf(stderr,
                   "InstrumentedCpuBackend: CopyToBackendAsync from memory it did not allocate\n");
      std::abort();
    }
    ++async_copies_to_backend_;
    Deliver();
    CpuBackend::CopyToBackend(dst, host_src, num_bytes);
  }
  void CopyToHost(void* host_dst, const void* src, size_t num_bytes) override {
    Deliver();
    CpuBackend::CopyToHost(host_dst, src, num_bytes);
  }

  void BatchCopyToHostAsync(std::span<const CopyOp> copies) override {
    CheckBatch(copies);
    ++batches_to_host_;
    CpuBackend::BatchCopyToHostAsync(copies);
  }
  void BatchCopyToBackendAsync(std::span<const CopyOp> copies) override {
    CheckBatch(copies);
    ++batches_to_backend_;
    CpuBackend::BatchCopyToBackendAsync(copies);
  }
  void BatchCopyWithinBackend(std::span<const CopyOp> copies) override {
    CheckBatch(copies);
    ++batches_within_;
    CpuBackend::BatchCopyWithinBackend(copies);
  }

  void set_refuse_host_allocations(bool refuse) { refuse_host_allocations_ = refuse; }
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
  int num_waits() const { return waits_; }
  int num_copies_to_backend() const { return copies_to_backend_; }
  int num_async_copies_to_backend() const { return async_copies_to_backend_; }
  size_t num_copies_pending() const { return pending_.size(); }
  int num_batches_to_host() const { return batches_to_host_; }
  int num_batches_to_backend() const { return batches_to_backend_; }
  int num_batches_within() const { return batches_within_; }

 private:
  // Whether [a, a + n) and [b, b + m) share a byte.
  static bool Overlap(const void* a, size_t n, const void* b, size_t m) {
    const auto x = reinterpret_cast<uintptr_t>(a);
    const auto y = reinterpret_cast<uintptr_t>(b);
    return n > 0 && m > 0 && x < y + m && y < x + n;
  }
  // Aborts when a copy of the batch writes where another reads or writes.
  static void CheckBatch(std::span<const CopyOp> copies) {
    for (size_t i = 0; i < copies.size(); ++i) {
      for (size_t j = 0; j < copies.size(); ++j) {
        if (i == j) continue;
        const CopyOp& a = copies[i];
        const CopyOp& b = copies[j];
        if (Overlap(a.dst, a.num_bytes, b.dst, b.num_bytes) ||
            Overlap(a.dst, a.num_bytes, b.src, b.num_bytes)) {
          std::fprintf(stderr,
                       "InstrumentedCpuBackend: copies %zu and %zu of one batch overlap where "
                       "one writes\n",
                       i, j);
          std::abort();
        }
      }
    }
  }

  struct PendingCopy {
    void* host_dst;
    std::vector<uint8_t> bytes;
  };
  void Deliver() {
    for (const PendingCopy& c : pending_) std::memcpy(c.host_dst, c.bytes.data(), c.bytes.size());
    pending_.clear();
  }

  std::map<void*, size_t> live_;
  int allocations_ = 0;
  int waits_ = 0;
  int copies_to_backend_ = 0;
  int async_copies_to_backend_ = 0;
  int batches_to_host_ = 0;
  int batches_to_backend_ = 0;
  int batches_within_ = 0;
  bool refuse_host_allocations_ = false;
  std::vector<PendingCopy> pending_;
};

}  // namespace glimpse::kernels::cpu

#endif  // GLIMPSE_KERNELS_CPU_TESTING_INSTRUMENTED_CPU_BACKEND_H_
