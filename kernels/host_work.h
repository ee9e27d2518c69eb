// Host work a forward pass may do while its device work runs: the serving engine hands the
// next step the previous step's outputs to emit (scheduler::Engine), so that on a GPU the
// host builds and pushes them while the step computes instead of before it starts.
//
// It runs at most once, on whichever thread calls Run first; whoever handed it over runs what
// is left once the forward pass returns (Run again is then a no-op). Backends whose ops run on
// the host run it when the step begins (nothing to overlap); a GPU backend once the step's
// launches are enqueued, where the host would otherwise only wait (Backend::OverlapHostWork).
//
// The work must not call back into the backend or runner running the step.
//
// Ownership: holds the function it was given. Thread-safety: one thread at a time.
#ifndef GLIMPSE_KERNELS_HOST_WORK_H_
#define GLIMPSE_KERNELS_HOST_WORK_H_

#include <functional>
#include <utility>

namespace glimpse::kernels {

class HostWork {
 public:
  HostWork() = default;
  explicit HostWork(std::function<void()> work) : work_(std::move(work)) {}
  HostWork(const HostWork&) = delete;
  HostWork& operator=(const HostWork&) = delete;

  // Whether Run has work left to do.
  bool pending() const { return static_cast<bool>(work_); }
  // Runs the work if it has not run yet.
  void Run() {
    if (!work_) return;
    // Emptied first, so that the work itself sees it as done.
    std::function<void()> work = std::exchange(work_, nullptr);
    work();
  }
  // Replaces the work (which must have run or be no longer wanted).
  void Reset(std::function<void()> work) { work_ = std::move(work); }

 private:
  std::function<void()> work_;
};

}  // namespace glimpse::kernels

#endif  // GLIMPSE_KERNELS_HOST_WORK_H_
