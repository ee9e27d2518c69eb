// Fibers for the emulated CUDA threads: a stack of their own and a cooperative switch (no
// system call per switch on x86-64; ucontext elsewhere). Switches are annotated for
// AddressSanitizer. Not thread-safe: a fiber is created, run and destroyed by one OS thread.
#ifndef GLIMPSE_KERNELS_CUDA_EMULATION_FIBER_H_
#define GLIMPSE_KERNELS_CUDA_EMULATION_FIBER_H_

#include <cstddef>
#include <memory>

namespace cuda_emu::internal {

class Fiber {
 public:
  using Entry = void (*)(void* arg);

  // A fiber with a `stack_bytes` stack (plus a guard page below it); it starts in
  // entry(arg) at its first SwitchTo. `entry` must never return: it ends with SwitchTo back.
  Fiber(size_t stack_bytes, Entry entry, void* arg);
  // The fiber of the calling OS thread's own stack (the scheduler).
  Fiber();
  ~Fiber();
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;

  // Restarts a finished (or never started) fiber at entry(arg), reusing its stack.
  void Reset(Entry entry, void* arg);

  // Saves the running context into `this` and resumes `next`. `this` must be the fiber that
  // is running.
  void SwitchTo(Fiber& next);
  // The last switch of a fiber whose entry has finished: like SwitchTo, but its stack's
  // sanitizer state is released (it resumes only after Reset).
  void ExitTo(Fiber& next);

  struct State;  // public so that the switch trampolines in fiber.cc can name it

 private:
  void Switch(Fiber& next, bool exiting);

  std::unique_ptr<State> state_;
};

}  // namespace cuda_emu::internal

#endif  // GLIMPSE_KERNELS_CUDA_EMULATION_FIBER_H_
