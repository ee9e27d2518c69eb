#include "kernels/cuda/emulation/fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GLIMPSE_EMU_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define GLIMPSE_EMU_ASAN 1
#endif
#ifdef GLIMPSE_EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#if defined(__x86_64__)
// glimpse_emu_switch_context(save_sp, load_sp): pushes the callee-saved registers, stores the
// stack pointer in *save_sp, loads load_sp and pops the same from there. A new fiber's stack is
// laid out by Fiber::Reset so that the final `ret` lands in glimpse_emu_fiber_start with
// r13 = function and r12 = its argument. The SSE and x87 control words are not switched (they
// would cost more than the rest): nothing here changes rounding modes.
extern "C" void glimpse_emu_switch_context(void** save_sp, void* load_sp);
extern "C" void glimpse_emu_fiber_start();
asm(R"(
  .text
  .globl glimpse_emu_switch_context
  .type glimpse_emu_switch_context,@function
glimpse_emu_switch_context:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size glimpse_emu_switch_context, .-glimpse_emu_switch_context

  .globl glimpse_emu_fiber_start
  .type glimpse_emu_fiber_start,@function
glimpse_emu_fiber_start:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size glimpse_emu_fiber_start, .-glimpse_emu_fiber_start
)");
#endif

namespace cuda_emu::internal {

struct Fiber::State {
  // Stack (null for the OS thread's own): [stack_lo, stack_lo + stack_bytes), guard page
  // below.
  void* mapping = nullptr;
  size_t mapping_bytes = 0;
  char* stack_lo = nullptr;
  size_t stack_bytes = 0;
  Entry entry = nullptr;
  void* arg = nullptr;
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t context;
#endif
  // AddressSanitizer's view of the stack we switched away from.
  void* asan_fake_stack = nullptr;
  const void* asan_bottom = nullptr;
  size_t asan_size = 0;
};

namespace {

thread_local Fiber::State* t_switching_from = nullptr;

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "CUDA emulation: %s: %s\n", what, std::strerror(errno));
  std::abort();
}

void FinishSwitch(Fiber::State* resumed) {
#ifdef GLIMPSE_EMU_ASAN
  const void* bottom = nullptr;
  size_t size = 0;
  __sanitizer_finish_switch_fiber(resumed != nullptr ? resumed->asan_fake_stack : nullptr,
                                  &bottom, &size);
  if (t_switching_from != nullptr && t_switching_from->stack_lo == nullptr) {
    t_switching_from->asan_bottom = bottom;  // the OS thread's stack, learnt on first switch
    t_switching_from->asan_size = size;
  }
#else
  (void)resumed;
#endif
}

}  // namespace

// Runs on the new fiber's stack.
extern "C" void GlimpseEmuFiberMain(void* raw) {
  auto* state = static_cast<Fiber::State*>(raw);
  FinishSwitch(nullptr);
  state->entry(state->arg);
  std::fprintf(stderr, "CUDA emulation: a fiber's entry returned\n");
  std::abort();
}

#if !defined(__x86_64__)
namespace {
void UcontextEntry(unsigned hi, unsigned lo) {
  GlimpseEmuFiberMain(reinterpret_cast<void*>((static_cast<uintptr_t>(hi) << 32) | lo));
}
}  // namespace
#endif

Fiber::Fiber() : state_(std::make_unique<State>()) {}

Fiber::Fiber(size_t stack_bytes, Entry entry, void* arg) : state_(std::make_unique<State>()) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  stack_bytes = (stack_bytes + page - 1) / page * page;
  state_->mapping_bytes = stack_bytes + page;
  state_->mapping = mmap(nullptr, state_->mapping_bytes, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (state_->mapping == MAP_FAILED) Die("mmap of a fiber stack failed");
  if (mprotect(state_->mapping, page, PROT_NONE) != 0) Die("mprotect of a guard page failed");
  state_->stack_lo = static_cast<char*>(state_->mapping) + page;
  state_->stack_bytes = stack_bytes;
  state_->asan_bottom = state_->stack_lo;
  state_->asan_size = stack_bytes;
  Reset(entry, arg);
}

Fiber::~Fiber() {
  if (state_->mapping != nullptr) munmap(state_->mapping, state_->mapping_bytes);
}

void Fiber::Reset(Entry entry, void* arg) {
  State& s = *state_;
  s.entry = entry;
  s.arg = arg;
  s.asan_fake_stack = nullptr;
#if defined(__x86_64__)
  // [sp..sp+47] r15 r14 r13 r12 rbx rbp, [sp+48] return address. After the pops and `ret`,
  // rsp = sp + 56 is 16-byte aligned, as the call in glimpse_emu_fiber_start needs.
  const uintptr_t top = (reinterpret_cast<uintptr_t>(s.stack_lo) + s.stack_bytes) & ~uintptr_t{15};
  auto* frame = reinterpret_cast<uint64_t*>(top - 72);
  std::memset(frame, 0, 72);
  frame[2] = reinterpret_cast<uint64_t>(&GlimpseEmuFiberMain);  // r13
  frame[3] = reinterpret_cast<uint64_t>(&s);                   // r12
  frame[6] = reinterpret_cast<uint64_t>(&glimpse_emu_fiber_start);
  s.sp = frame;
#else
  if (getcontext(&s.context) != 0) Die("getcontext failed");
  s.context.uc_stack.ss_sp = s.stack_lo;
  s.context.uc_stack.ss_size = s.stack_bytes;
  s.context.uc_link = nullptr;
  const auto raw = reinterpret_cast<uintptr_t>(&s);
  makecontext(&s.context, reinterpret_cast<void (*)()>(&UcontextEntry), 2,
              static_cast<unsigned>(raw >> 32), static_cast<unsigned>(raw & 0xffffffffu));
#endif
}

void Fiber::SwitchTo(Fiber& next) { Switch(next, /*exiting=*/false); }

void Fiber::ExitTo(Fiber& next) { Switch(next, /*exiting=*/true); }

void Fiber::Switch(Fiber& next, bool exiting) {
  State* from = state_.get();
  State* to = next.state_.get();
#ifdef GLIMPSE_EMU_ASAN
  // A null save slot tells AddressSanitizer the stack is done with (its fake frames go).
  __sanitizer_start_switch_fiber(exiting ? nullptr : &from->asan_fake_stack, to->asan_bottom,
                                 to->asan_size);
#else
  (void)exiting;
#endif
  t_switching_from = from;
#if defined(__x86_64__)
  glimpse_emu_switch_context(&from->sp, to->sp);
#else
  if (swapcontext(&from->context, &to->context) != 0) Die("swapcontext failed");
#endif
  FinishSwitch(from);
}

}  // namespace cuda_emu::internal
