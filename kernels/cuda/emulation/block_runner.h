// Runs one thread block of an emulated kernel: every CUDA thread on its own fiber, switched
// cooperatively at __syncthreads and at warp collectives (shuffles, mma.sync, ldmatrix), which complete when every thread they wait for has arrived.
//
// The order in which runnable threads run between two barriers is the schedule: forward,
// reverse, or shuffled (GLIMPSE_CUDA_EMULATION_SCHEDULE=forward|reverse|shuffle|mixed;
// mixed, the default, alternates forward and reverse from block to block). A kernel whose
// result depends on it reads shared memory without the barrier it needs.
//
// Misuse the hardware would hang on or leave undefined — a barrier some threads never reach,
// a warp collective whose mask names an exited lane or disagrees between lanes, a shuffle from
// a lane outside the mask — stops the process with a message naming the kernel, block and
// threads.
//
// Thread-safety: one BlockRunner per OS thread (ForThisThread); blocks of one launch run on
// several OS threads at once.
#ifndef GLIMPSE_KERNELS_CUDA_EMULATION_BLOCK_RUNNER_H_
#define GLIMPSE_KERNELS_CUDA_EMULATION_BLOCK_RUNNER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cuda/emulation/cuda_emulation.h"
#include "kernels/cuda/emulation/fiber.h"
#include "kernels/cuda/emulation/launch.h"

namespace cuda_emu::internal {

// The order in which a block's threads run between synchronization points
// (GLIMPSE_CUDA_EMULATION_SCHEDULE; README.md):
//   kForward / kReverse: passes over the threads in index order / reversed; every warp gets
//       one turn per pass, so warps advance about one warp collective per pass, in step.
//   kShuffle: a fresh random order every pass.
//   kWarpSerial: forward, but after every completed warp collective or block barrier the
//       lowest runnable thread runs next: each warp runs alone from one block barrier to the
//       next, as far ahead of the others as the hardware would allow.
//   kMixed (default): per block, forward or reverse (bit 0 of the block index), in step or
//       warp-serial (bit 0 xor bit 1), so that any four consecutive blocks cover the four
//       combinations, the two with early-landing copies (bit 1; eager_copies_) included.
enum class Schedule { kForward, kReverse, kShuffle, kWarpSerial, kMixed };
Schedule ScheduleFromEnvironment();

class BlockRunner {
 public:
  static BlockRunner& ForThisThread();

  // Runs block `block_idx` to completion; returns when every thread has exited.
  void RunBlock(const char* kernel_name, const LaunchShape& shape, uint3 block_idx,
                const std::function<void()>& thread_body, Schedule schedule);

  // ---- Called by the running CUDA thread ----
  const ThreadCoordinates& Coordinates() const { return current_->coords; }
  int Lane() const { return current_->linear & 31; }
  int WarpIndex() const { return current_->linear >> 5; }
  void SyncThreads();
  // Deposits `bytes` (<= kSlotBytes) for this lane, waits for every lane of `mask`, and
  // returns the 32 lanes' slots (lane i at i * kSlotBytes), valid until this lane's next
  // collective.
  static constexpr int kSlotBytes = 64;
  const unsigned char* WarpCollective(unsigned mask, const void* in, int bytes,
                                      const char* what);
  uint32_t SharedAddress(const void* ptr);
  void* SharedPointer(uint32_t address);
  void PoisonSharedOnce(void* ptr, size_t bytes);
  unsigned char* DynamicSharedMemory() { return dynamic_smem_.get(); }
  void CpAsync16(uint32_t smem_address, const void* global, bool valid);
  // Fails when [address, address + bytes) of dynamic shared memory has a cp.async in flight
  // (issued, not yet completed by its thread's wait), or one that landed at its thread's wait
  // but was not yet published by a barrier that thread passed since (__syncthreads,
  // __syncwarp, mbarrier arrive): the tensor-core reads (ldmatrix, wgmma) call it, whose data
  // reaches other lanes. It catches a thread that signals readers before waiting for its
  // copies, and a warp that reads its lanes' copies after their waits without a barrier
  // (cp.async.wait_group makes a copy visible to its own thread only).
  // `async_proxy` (wgmma's operand reads): also fails when a landed copy's thread has not
  // since run fence.proxy.async, without which writes of the generic proxy (cp.async is one)
  // are not visible to the async proxy that wgmma reads shared memory through.
  void CheckCopiesVisible(uint32_t address, size_t bytes, const char* what,
                          bool async_proxy = false);
  // fence.proxy.async.shared::cta: this thread's landed copies become visible to the async
  // proxy (still to be published to other threads by a barrier).
  void FenceProxyAsync();
  // __syncwarp: publishes this thread's landed copies, then the warp collective.
  void SyncWarp(unsigned mask);
  // Named barriers (bar.sync / bar.arrive id, count; id 1..15, 0 being __syncthreads'): each
  // call counts one thread toward `count` (a multiple of 32, at most the block's threads); Sync
  // waits until the count is reached, Arrive does not. Reaching it releases the waiting threads
  // and starts the barrier afresh. Threads disagreeing on a barrier's count, and a barrier left
  // part-way at the end of the block (arrivals no one waited for), are reported.
  void NamedBarrierSync(int id, int count);
  void NamedBarrierArrive(int id, int count);
  void CpAsyncCommit();
  void CpAsyncWait(int pending_groups);
  // mbarrier (sm_90's shared-memory transaction barrier; an 8-byte object at `address`):
  // init with an arrival count; arrive, optionally adding expected transaction bytes; wait
  // until the phase of parity `parity` has completed (a fresh barrier is in phase 0, so
  // waiting on parity 1 returns at once). Waiting blocks this thread's fiber; a barrier no
  // thread or copy will ever complete is reported as a deadlock.
  void MbarrierInit(uint32_t address, int arrivals);
  void MbarrierArrive(uint32_t address, uint32_t expect_tx_bytes);
  void MbarrierWait(uint32_t address, uint32_t parity);
  // An asynchronous bulk copy (cp.async.bulk.tensor) of `bytes` to `smem_address` that
  // completes `bytes` transaction bytes on the mbarrier at `mbarrier`. It lands at one of the
  // two ends of the window the GPU may land it in, alternating every other block: at issue
  // (a copy issued into a buffer that threads still read corrupts their results), or only
  // when a thread next waits on the mbarrier (a read that does not wait sees stale data).
  void BulkCopyToShared(uint32_t smem_address, std::vector<unsigned char> bytes, uint32_t mbarrier);
  // The running thread's state of the emulated wgmma pipeline (tensor_core.cc owns its type);
  // empty at the start of every block.
  std::shared_ptr<void>& ThreadWgmmaState() { return current_->wgmma; }
  // The block's record of the wgmma its warpgroups issued (tensor_core.cc owns its type);
  // empty at the start of every block.
  std::shared_ptr<void>& BlockWgmmaState() { return block_wgmma_; }
  [[noreturn]] void Fail(const std::string& message) const;

 private:
  enum class Status { kRunnable, kAtBarrier, kAtCollective, kExited, kAtMbarrier, kAtNamedBarrier };
  struct PendingCopy {
    uint32_t smem_address;
    bool valid;
    bool landed;  // written at issue (eager_copies_): the wait only completes it
    unsigned char bytes[16];
  };
  struct Thread {
    std::unique_ptr<Fiber> fiber;
    ThreadCoordinates coords;
    int linear = 0;
    Status status = Status::kExited;
    int collective_buffer = 0;
    const char* collective_what = "";
    std::vector<PendingCopy> uncommitted;
    std::vector<std::vector<PendingCopy>> committed;  // oldest first
    std::vector<size_t> unpublished;  // granules its copies landed in since its last barrier
    std::vector<size_t> unfenced;     // ... since its last fence.proxy.async
    std::shared_ptr<void> wgmma;  // in-flight wgmma operations (tensor_core.cc)
    uint32_t mbarrier = 0;        // kAtMbarrier: the barrier's address and awaited parity
    uint32_t mbarrier_parity = 0;
    int named_barrier = 0;  // kAtNamedBarrier: its id
  };
  struct BulkCopy {
    uint32_t smem_address;
    std::vector<unsigned char> bytes;
  };
  struct Mbarrier {
    int arrivals = 0;                 // per phase, from init
    int pending = 0;                  // arrivals still missing in the current phase
    int64_t tx = 0;                   // transaction bytes still expected in the current phase
    uint32_t phase = 0;               // completed phases
    std::vector<BulkCopy> in_flight;  // copies that complete bytes on it
  };
  struct NamedBarrier {
    int count = 0;    // threads it waits for in the current round (0: no round under way)
    int arrived = 0;  // threads counted so far
  };
  // Counts the current thread on named barrier `id`; true when that completed the round.
  bool CountOnNamedBarrier(int id, int count, const char* what);
  struct Warp {
    unsigned live = 0;     // lanes that have not exited
    unsigned arrived = 0;  // lanes waiting at the collective in progress
    unsigned mask = 0;     // its mask
    int buffer = 0;        // slot buffer the collective in progress writes
    alignas(16) unsigned char slots[2][32][kSlotBytes];
  };
  struct SharedRegion {
    unsigned char* base;
    size_t bytes;
  };

  static void ThreadMain(void* arg);
  // Advances the pass to the next runnable thread in order and makes it current; the
  // scheduler's fiber when the pass is over.
  Fiber& NextInPass();
  void Yield();
  void OnExit(Thread& t);
  void MaybeReleaseBarrier();
  // Lands `copies` of the current thread (or of `t`, exiting) in shared memory.
  void ApplyCopies(const std::vector<PendingCopy>& copies, Thread& t);
  void WriteCopy(const PendingCopy& copy);  // its 16 bytes (zeros when !valid) into shared
  // A barrier `t` passes orders its landed copies before the other threads' later reads.
  void Publish(Thread& t);
  Mbarrier& MbarrierAt(uint32_t address, const char* what);
  void MaybeCompletePhase(Mbarrier& barrier);
  // Lands the barrier's copies; true when the phase of `parity` has completed.
  bool MbarrierReady(uint32_t address, uint32_t parity);
  std::string DescribeThreads() const;

  Fiber scheduler_;
  std::vector<Thread> threads_;
  std::vector<Warp> warps_;
  Thread* current_ = nullptr;
  std::vector<int> order_;  // this block's schedule: thread indices in pass order
  int pass_position_ = -1;  // index into order_ of the current thread
  const char* kernel_name_ = "";
  const std::function<void()>* body_ = nullptr;
  int live_threads_ = 0;
  int at_barrier_ = 0;
  std::unique_ptr<unsigned char[]> dynamic_smem_;
  size_t dynamic_smem_bytes_ = 0;
  std::vector<SharedRegion> shared_regions_;  // [0] dynamic shared memory
  // cp.async copies in flight per 16-byte granule of dynamic shared memory.
  std::vector<uint16_t> copies_in_flight_;
  // Granules holding a landed copy that its thread has not yet released by a later act, and
  // which thread (-1: none); the thread keeps the list of the granules it marked.
  struct LandedMarks {
    std::vector<int> by_granule;
    void Reset(size_t granules) { by_granule.assign(granules, -1); }
    void Mark(size_t granule, int thread, std::vector<size_t>& marked) {
      by_granule[granule] = thread;
      marked.push_back(granule);
    }
    void Release(int thread, std::vector<size_t>& marked) {
      for (const size_t g : marked) {
        if (by_granule[g] == thread) by_granule[g] = -1;
      }
      marked.clear();
    }
  };
  LandedMarks unpublished_;                   // released by a barrier the thread passes (Publish)
  LandedMarks unfenced_;                      // released by the thread's fence.proxy.async
  std::map<uint32_t, Mbarrier> mbarriers_;    // by shared address; the block's
  NamedBarrier named_barriers_[16];           // [1..15]; the block's
  bool eager_copies_ = false;  // this block's cp.async and bulk copies land at issue
  std::shared_ptr<void> block_wgmma_;  // BlockWgmmaState
  bool warp_serial_ = false;   // this block restarts its pass after each collective/barrier
  uint64_t shuffle_state_ = 0x9e3779b97f4a7c15ull;
};

}  // namespace cuda_emu::internal

#endif  // GLIMPSE_KERNELS_CUDA_EMULATION_BLOCK_RUNNER_H_
