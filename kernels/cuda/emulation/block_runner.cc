#include "kernels/cuda/emulation/block_runner.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <sstream>

namespace cuda_emu::internal {
namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr size_t kFiberStackBytes = 1 << 20;  // AddressSanitizer's red zones need room
#else
constexpr size_t kFiberStackBytes = 256 << 10;
#endif
constexpr int kRegionShift = 24;  // shared addresses: region index << 24 | offset
constexpr uint32_t kOffsetMask = (1u << kRegionShift) - 1;

// memcpy of the few bytes a collective moves, without a library call for the common sizes.
inline void CopySmall(void* dst, const void* src, int bytes) {
  switch (bytes) {
    case 0:
      return;
    case 4:
      std::memcpy(dst, src, 4);
      return;
    case 8:
      std::memcpy(dst, src, 8);
      return;
    default:
      std::memcpy(dst, src, static_cast<size_t>(bytes));
  }
}

std::string Dim(const uint3& d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}

}  // namespace

Schedule ScheduleFromEnvironment() {
  const char* value = std::getenv("GLIMPSE_CUDA_EMULATION_SCHEDULE");
  if (value == nullptr || *value == '\0' || std::strcmp(value, "mixed") == 0) {
    return Schedule::kMixed;
  }
  if (std::strcmp(value, "forward") == 0) return Schedule::kForward;
  if (std::strcmp(value, "reverse") == 0) return Schedule::kReverse;
  if (std::strcmp(value, "shuffle") == 0) return Schedule::kShuffle;
  if (std::strcmp(value, "warp_serial") == 0) return Schedule::kWarpSerial;
  std::fprintf(stderr,
               "CUDA emulation: GLIMPSE_CUDA_EMULATION_SCHEDULE=%s is not one of forward, "
               "reverse, shuffle, warp_serial, mixed\n",
               value);
  std::exit(2);
}

namespace {
// Each OS thread's runner lives as long as the thread: t_owner destroys it when the thread
// exits (an engine or rank thread that launched kernels), t_runner is the plain pointer every
// access reads (no guarded thread_local construction on each call).
thread_local std::unique_ptr<BlockRunner> t_owner;
thread_local BlockRunner* t_runner = nullptr;
}  // namespace

BlockRunner& BlockRunner::ForThisThread() {
  if (t_runner == nullptr) {
    t_owner.reset(new BlockRunner());
    t_runner = t_owner.get();
  }
  return *t_runner;
}

void BlockRunner::ThreadMain(void* arg) {
  auto* thread = static_cast<Thread*>(arg);
  BlockRunner& runner = ForThisThread();
  (*runner.body_)();
  runner.OnExit(*thread);
  thread->fiber->ExitTo(runner.NextInPass());
  std::fprintf(stderr, "CUDA emulation: an exited thread was resumed\n");
  std::abort();
}

void BlockRunner::RunBlock(const char* kernel_name, const LaunchShape& shape, uint3 block_idx,
                           const std::function<void()>& thread_body, Schedule schedule) {
  kernel_name_ = kernel_name;
  body_ = &thread_body;
  const int n = static_cast<int>(shape.block.x * shape.block.y * shape.block.z);
  if (static_cast<int>(threads_.size()) < n) threads_.resize(n);
  warps_.resize((n + 31) / 32);
  for (Warp& w : warps_) {
    w.live = 0;
    w.arrived = 0;
    w.mask = 0;
    w.buffer = 0;
  }
  for (int i = 0; i < n; ++i) {
    Thread& t = threads_[i];
    t.linear = i;
    t.coords.thread_idx = {static_cast<unsigned>(i) % shape.block.x,
                           static_cast<unsigned>(i) / shape.block.x % shape.block.y,
                           static_cast<unsigned>(i) / (shape.block.x * shape.block.y)};
    t.coords.block_idx = block_idx;
    t.coords.block_dim = shape.block;
    t.coords.grid_dim = shape.grid;
    t.status = Status::kRunnable;
    t.uncommitted.clear();
    t.committed.clear();
    t.wgmma.reset();
    t.unfenced.clear();
    if (t.fiber == nullptr) {
      t.fiber = std::make_unique<Fiber>(kFiberStackBytes, &ThreadMain, &t);
    } else {
      t.fiber->Reset(&ThreadMain, &t);
    }
    warps_[i >> 5].live |= 1u << (i & 31);
  }
  live_threads_ = n;
  at_barrier_ = 0;
  mbarriers_.clear();
  block_wgmma_.reset();
  for (NamedBarrier& b : named_barriers_) b = NamedBarrier{};
  if (shape.dynamic_smem_bytes != dynamic_smem_bytes_) {
    dynamic_smem_.reset(shape.dynamic_smem_bytes > 0
                            ? new unsigned char[shape.dynamic_smem_bytes]
                            : nullptr);
    dynamic_smem_bytes_ = shape.dynamic_smem_bytes;
  }
  if (dynamic_smem_bytes_ > 0) std::memset(dynamic_smem_.get(), 0xff, dynamic_smem_bytes_);
  shared_regions_.assign(1, SharedRegion{dynamic_smem_.get(), dynamic_smem_bytes_});
  copies_in_flight_.assign(dynamic_smem_bytes_ / 16, 0);
  unpublished_.Reset(dynamic_smem_bytes_ / 16);
  unfenced_.Reset(dynamic_smem_bytes_ / 16);

  std::vector<int>& order = order_;
  order.resize(n);
  std::iota(order.begin(), order.end(), 0);
  const uint64_t linear_block =
      block_idx.x + static_cast<uint64_t>(shape.grid.x) *
                        (block_idx.y + static_cast<uint64_t>(shape.grid.y) * block_idx.z);
  const bool reverse = schedule == Schedule::kReverse ||
                       (schedule == Schedule::kMixed && (linear_block & 1) == 1);
  if (reverse) std::reverse(order.begin(), order.end());
  // Asynchronous copies may land anywhere between their issue and their wait: every other
  // pair of blocks takes each end, so that a read racing a copy (a buffer refilled while
  // another warp still reads it, or read before its wait) sees the wrong bytes in one of them.
  eager_copies_ = ((linear_block >> 1) & 1) == 1;
  // Warps in step from collective to collective cannot show a warp reading a buffer another
  // warp has already moved on to refill; warp-serial blocks let one warp run ahead.
  warp_serial_ = schedule == Schedule::kWarpSerial ||
                 (schedule == Schedule::kMixed && ((linear_block ^ (linear_block >> 1)) & 1) == 1);

  while (live_threads_ > 0) {
    if (schedule == Schedule::kShuffle) {
      for (int i = n - 1; i > 0; --i) {
        shuffle_state_ ^= shuffle_state_ << 13;
        shuffle_state_ ^= shuffle_state_ >> 7;
        shuffle_state_ ^= shuffle_state_ << 17;
        std::swap(order[i], order[shuffle_state_ % static_cast<uint64_t>(i + 1)]);
      }
    }
    // One pass: the first runnable thread in order runs; when it blocks or exits it hands
    // over to the next runnable one after it (NextInPass), the last back to here.
    pass_position_ = -1;
    Fiber& first = NextInPass();
    const bool ran = &first != &scheduler_;
    if (ran) scheduler_.SwitchTo(first);
    if (!ran) {
      current_ = nullptr;
      Fail("deadlock: no thread can continue. " + DescribeThreads());
    }
  }
  for (int id = 1; id < 16; ++id) {
    const NamedBarrier& b = named_barriers_[id];
    if (b.arrived != 0) {
      Fail("named barrier " + std::to_string(id) + " ends the block with " +
           std::to_string(b.arrived) + " of its " + std::to_string(b.count) +
           " arrivals: a bar.arrive no bar.sync consumed");
    }
  }
  current_ = nullptr;
  body_ = nullptr;
}

Fiber& BlockRunner::NextInPass() {
  const int n = static_cast<int>(order_.size());
  for (++pass_position_; pass_position_ < n; ++pass_position_) {
    Thread& t = threads_[order_[pass_position_]];
    if (t.status == Status::kAtMbarrier && MbarrierReady(t.mbarrier, t.mbarrier_parity)) {
      t.status = Status::kRunnable;
    }
    if (t.status == Status::kRunnable) {
      current_ = &t;
      return *t.fiber;
    }
  }
  return scheduler_;
}

void BlockRunner::Yield() {
  Fiber& self = *current_->fiber;
  Fiber& next = NextInPass();
  if (&next != &self) self.SwitchTo(next);
}

void BlockRunner::OnExit(Thread& t) {
  // A thread that exits with copies it never waited for leaves them to land at no defined
  // time: no other thread can be ordered after them, so any read of them is a race.
  size_t unwaited = t.uncommitted.size();
  for (const auto& group : t.committed) unwaited += group.size();
  if (unwaited > 0) {
    Fail("exits with " + std::to_string(unwaited) +
         " cp.async copies it never waited for (cp.async.wait_group before the thread ends, "
         "and before any barrier or signal that lets other threads read them)");
  }
  Publish(t);
  t.committed.clear();
  t.uncommitted.clear();
  t.status = Status::kExited;
  --live_threads_;
  Warp& w = warps_[t.linear >> 5];
  const unsigned bit = 1u << (t.linear & 31);
  w.live &= ~bit;
  if (w.arrived != 0 && (w.mask & bit) != 0) {
    Fail("exited while lanes of its warp wait for it in a collective with mask " +
         std::to_string(w.mask) + ". " + DescribeThreads());
  }
  MaybeReleaseBarrier();
}

void BlockRunner::MaybeReleaseBarrier() {
  if (at_barrier_ == 0 || at_barrier_ != live_threads_) return;
  for (Thread& t : threads_) {
    if (t.status == Status::kAtBarrier) t.status = Status::kRunnable;
  }
  at_barrier_ = 0;
  if (warp_serial_) pass_position_ = -1;  // the first warp in order runs ahead again
}

void BlockRunner::SyncThreads() {
  Publish(*current_);
  current_->status = Status::kAtBarrier;
  ++at_barrier_;
  MaybeReleaseBarrier();
  if (current_->status != Status::kRunnable) Yield();
}

const unsigned char* BlockRunner::WarpCollective(unsigned mask, const void* in, int bytes,
                                                 const char* what) {
  Thread& t = *current_;
  const int lane = t.linear & 31;
  Warp& w = warps_[t.linear >> 5];
  if (((mask >> lane) & 1u) == 0) {
    Fail(std::string(what) + " with mask " + std::to_string(mask) +
         ", which does not include the calling lane");
  }
  if ((mask & ~w.live) != 0) {
    Fail(std::string(what) + " with mask " + std::to_string(mask) +
         " names lanes that have exited or do not exist (live lanes: " +
         std::to_string(w.live) + ")");
  }
  if (w.arrived == 0) {
    w.mask = mask;
  } else if (w.mask != mask) {
    Fail(std::string(what) + " with mask " + std::to_string(mask) + " while other lanes of " +
         "the warp wait in a collective with mask " + std::to_string(w.mask) + ". " +
         DescribeThreads());
  }
  CopySmall(w.slots[w.buffer][lane], in, bytes);
  t.collective_buffer = w.buffer;
  t.collective_what = what;
  t.status = Status::kAtCollective;
  w.arrived |= 1u << lane;
  if (w.arrived == mask) {
    const int base = t.linear & ~31;
    for (int l = 0; l < 32; ++l) {
      if ((mask >> l) & 1u) threads_[base + l].status = Status::kRunnable;
    }
    w.arrived = 0;
    w.buffer ^= 1;
    // Warp-serial: the next thread to run is the first runnable one in order, this warp's
    // lanes before any later warp, so the warp keeps running until a block barrier stops it.
    if (warp_serial_) pass_position_ = -1;
  } else {
    Yield();
  }
  return &warps_[t.linear >> 5].slots[t.collective_buffer][0][0];
}

uint32_t BlockRunner::SharedAddress(const void* ptr) {
  const auto* p = static_cast<const unsigned char*>(ptr);
  for (size_t r = 0; r < shared_regions_.size(); ++r) {
    const SharedRegion& region = shared_regions_[r];
    if (region.base != nullptr && p >= region.base && p <= region.base + region.bytes) {
      const size_t offset = static_cast<size_t>(p - region.base);
      if (offset > kOffsetMask) Fail("shared memory offset beyond 16 MiB");
      return static_cast<uint32_t>(r << kRegionShift) | static_cast<uint32_t>(offset);
    }
  }
  Fail("__cvta_generic_to_shared of a pointer outside the block's shared memory");
}

void* BlockRunner::SharedPointer(uint32_t address) {
  const size_t r = address >> kRegionShift;
  const size_t offset = address & kOffsetMask;
  if (r >= shared_regions_.size() || offset > shared_regions_[r].bytes) {
    Fail("shared address " + std::to_string(address) +
         " is outside the block's shared memory");
  }
  return shared_regions_[r].base + offset;
}

void BlockRunner::PoisonSharedOnce(void* ptr, size_t bytes) {
  auto* p = static_cast<unsigned char*>(ptr);
  for (const SharedRegion& region : shared_regions_) {
    if (region.base == p) return;
  }
  std::memset(p, 0xff, bytes);
  shared_regions_.push_back(SharedRegion{p, bytes});
}

void BlockRunner::CpAsync16(uint32_t smem_address, const void* global, bool valid) {
  const size_t offset = smem_address & kOffsetMask;
  const size_t r = smem_address >> kRegionShift;
  if (r >= shared_regions_.size() || offset + 16 > shared_regions_[r].bytes) {
    Fail("cp.async of 16 bytes to shared address " + std::to_string(smem_address) +
         " runs past the block's shared memory");
  }
  if ((offset & 15) != 0) Fail("cp.async 16-byte destination is not 16-byte aligned");
  PendingCopy copy{smem_address, valid, eager_copies_, {}};
  if (valid) {
    if ((reinterpret_cast<uintptr_t>(global) & 15) != 0) {
      Fail("cp.async 16-byte source is not 16-byte aligned");
    }
    std::memcpy(copy.bytes, global, 16);
  }
  if (copy.landed) WriteCopy(copy);
  current_->uncommitted.push_back(copy);
  if (r == 0) ++copies_in_flight_[offset / 16];
}

void BlockRunner::CheckCopiesVisible(uint32_t address, size_t bytes, const char* what,
                                     bool async_proxy) {
  if ((address >> kRegionShift) != 0 || bytes == 0) return;
  const size_t offset = address & kOffsetMask;
  for (size_t g = offset / 16; g <= (offset + bytes - 1) / 16 && g < copies_in_flight_.size();
       ++g) {
    if (copies_in_flight_[g] != 0) {
      Fail(std::string(what) + " reads dynamic shared memory at offset " + std::to_string(g * 16) +
           " while a cp.async to it is still in flight (no cp.async.wait_group by the copying "
           "thread before the barrier or signal that let this read happen?)");
    }
    if (unpublished_.by_granule[g] >= 0) {
      Fail(std::string(what) + " reads dynamic shared memory at offset " + std::to_string(g * 16) +
           " that a cp.async of thread " + std::to_string(unpublished_.by_granule[g]) +
           " wrote, which has passed no barrier since its cp.async.wait_group (the wait makes "
           "the copy visible to its own thread only: __syncwarp or __syncthreads before "
           "reading it across lanes)");
    }
    if (async_proxy && unfenced_.by_granule[g] >= 0) {
      Fail(std::string(what) + " reads dynamic shared memory at offset " + std::to_string(g * 16) +
           " that a cp.async of thread " + std::to_string(unfenced_.by_granule[g]) +
           " wrote, which has run no fence.proxy.async since its cp.async.wait_group (wgmma "
           "reads shared memory through the async proxy, which sees generic-proxy writes such "
           "as cp.async's only after that fence: FenceProxyAsync before the barrier)");
    }
  }
}

void BlockRunner::FenceProxyAsync() { unfenced_.Release(current_->linear, current_->unfenced); }

void BlockRunner::CpAsyncCommit() {
  current_->committed.push_back(std::move(current_->uncommitted));
  current_->uncommitted.clear();
}

void BlockRunner::CpAsyncWait(int pending_groups) {
  auto& committed = current_->committed;
  while (static_cast<int>(committed.size()) > pending_groups) {
    ApplyCopies(committed.front(), *current_);
    committed.erase(committed.begin());
  }
}

void BlockRunner::ApplyCopies(const std::vector<PendingCopy>& copies, Thread& t) {
  for (const PendingCopy& c : copies) {
    if ((c.smem_address >> kRegionShift) == 0) {
      const size_t g = (c.smem_address & kOffsetMask) / 16;
      --copies_in_flight_[g];
      unpublished_.Mark(g, t.linear, t.unpublished);
      unfenced_.Mark(g, t.linear, t.unfenced);
    }
    if (!c.landed) WriteCopy(c);
  }
}

void BlockRunner::WriteCopy(const PendingCopy& c) {
  void* dst = SharedPointer(c.smem_address);
  if (c.valid) {
    std::memcpy(dst, c.bytes, 16);
  } else {
    std::memset(dst, 0, 16);
  }
}

void BlockRunner::Publish(Thread& t) { unpublished_.Release(t.linear, t.unpublished); }

bool BlockRunner::CountOnNamedBarrier(int id, int count, const char* what) {
  if (id < 1 || id > 15) {
    Fail(std::string(what) + " on barrier " + std::to_string(id) +
         ": named barriers are 1..15 (0 is __syncthreads')");
  }
  if (count <= 0 || count % 32 != 0 || count > static_cast<int>(threads_.size())) {
    Fail(std::string(what) + " with a thread count of " + std::to_string(count) +
         ": a multiple of 32, at most the block's " + std::to_string(threads_.size()));
  }
  Publish(*current_);  // bar.sync and bar.arrive order this thread's earlier writes
  NamedBarrier& b = named_barriers_[id];
  if (b.arrived == 0) b.count = count;
  if (b.count != count) {
    Fail(std::string(what) + " on barrier " + std::to_string(id) + " with a count of " +
         std::to_string(count) + " while its round under way counts to " + std::to_string(b.count));
  }
  if (++b.arrived < b.count) return false;
  b.arrived = 0;
  b.count = 0;
  for (Thread& t : threads_) {
    if (t.status == Status::kAtNamedBarrier && t.named_barrier == id) {
      t.status = Status::kRunnable;
    }
  }
  return true;
}

void BlockRunner::NamedBarrierSync(int id, int count) {
  current_->status = Status::kAtNamedBarrier;
  current_->named_barrier = id;
  CountOnNamedBarrier(id, count, "bar.sync");
  if (current_->status != Status::kRunnable) Yield();
}

void BlockRunner::NamedBarrierArrive(int id, int count) {
  // Let the threads a completed round releases run before the arriving thread goes on.
  if (CountOnNamedBarrier(id, count, "bar.arrive")) Yield();
}

void BlockRunner::SyncWarp(unsigned mask) {
  Publish(*current_);
  WarpCollective(mask, nullptr, 0, "__syncwarp");
}

BlockRunner::Mbarrier& BlockRunner::MbarrierAt(uint32_t address, const char* what) {
  auto it = mbarriers_.find(address);
  if (it == mbarriers_.end()) {
    Fail(std::string(what) + " on shared address " + std::to_string(address) +
         ", which no mbarrier.init of this block initialized");
  }
  return it->second;
}

void BlockRunner::MbarrierInit(uint32_t address, int arrivals) {
  if ((address & 7u) != 0) Fail("mbarrier.init: the barrier is not 8-byte aligned");
  SharedPointer(address + 8);  // inside shared memory
  if (arrivals < 1) Fail("mbarrier.init with an arrival count below 1");
  Mbarrier& b = mbarriers_[address];
  if (!b.in_flight.empty()) Fail("mbarrier.init of a barrier with copies in flight");
  b = Mbarrier{};
  b.arrivals = arrivals;
  b.pending = arrivals;
}

void BlockRunner::MaybeCompletePhase(Mbarrier& b) {
  if (b.pending == 0 && b.tx == 0) {
    ++b.phase;
    b.pending = b.arrivals;
  }
}

void BlockRunner::MbarrierArrive(uint32_t address, uint32_t expect_tx_bytes) {
  Publish(*current_);  // an arrive releases this thread's earlier writes
  Mbarrier& b = MbarrierAt(address, "mbarrier.arrive");
  if (b.pending == 0) Fail("mbarrier.arrive beyond the phase's arrival count");
  b.tx += expect_tx_bytes;
  --b.pending;
  const uint32_t phase = b.phase;
  MaybeCompletePhase(b);
  // Let the threads this arrival releases run before the arriving thread goes on: what it
  // does next (e.g. its own copies completing only at exit) must not be what they rely on.
  if (b.phase != phase) Yield();
}

bool BlockRunner::MbarrierReady(uint32_t address, uint32_t parity) {
  Mbarrier& b = MbarrierAt(address, "mbarrier.try_wait");
  std::vector<BulkCopy> landing = std::move(b.in_flight);
  b.in_flight.clear();
  for (const BulkCopy& c : landing) {
    std::memcpy(SharedPointer(c.smem_address), c.bytes.data(), c.bytes.size());
    b.tx -= static_cast<int64_t>(c.bytes.size());
    if (b.tx < 0 && b.pending == 0) {
      Fail("a bulk copy completed more bytes than its mbarrier's phase expects");
    }
    MaybeCompletePhase(b);
  }
  return (b.phase & 1u) != (parity & 1u);
}

void BlockRunner::MbarrierWait(uint32_t address, uint32_t parity) {
  if (MbarrierReady(address, parity)) return;
  current_->status = Status::kAtMbarrier;
  current_->mbarrier = address;
  current_->mbarrier_parity = parity;
  Yield();
}

void BlockRunner::BulkCopyToShared(uint32_t smem_address, std::vector<unsigned char> bytes,
                                   uint32_t mbarrier) {
  if ((smem_address & 127u) != 0) {
    Fail("cp.async.bulk.tensor destination is not 128-byte aligned");
  }
  SharedPointer(smem_address + static_cast<uint32_t>(bytes.size()));  // fits
  Mbarrier& b = MbarrierAt(mbarrier, "cp.async.bulk.tensor");
  b.in_flight.push_back(BulkCopy{smem_address, std::move(bytes)});
  if (eager_copies_) (void)MbarrierReady(mbarrier, 0);  // lands now
}

std::string BlockRunner::DescribeThreads() const {
  std::ostringstream os;
  int counts[6] = {0, 0, 0, 0, 0, 0};
  std::string examples[6];
  const int n = static_cast<int>(warps_.size() * 32);
  for (int i = 0; i < n && i < static_cast<int>(threads_.size()); ++i) {
    const Thread& t = threads_[i];
    if ((warps_[i >> 5].live >> (i & 31) & 1u) == 0 && t.status != Status::kExited) continue;
    const int s = static_cast<int>(t.status);
    if (counts[s]++ < 4) {
      examples[s] += " " + Dim(t.coords.thread_idx);
      if (t.status == Status::kAtCollective) examples[s] += std::string(":") + t.collective_what;
      if (t.status == Status::kAtMbarrier) {
        examples[s] += ":" + std::to_string(t.mbarrier) + "/" + std::to_string(t.mbarrier_parity);
      }
      if (t.status == Status::kAtNamedBarrier) {
        examples[s] += ":" + std::to_string(t.named_barrier);
      }
    }
  }
  const char* names[6] = {"runnable",
                          "at __syncthreads",
                          "at a warp collective",
                          "exited",
                          "waiting on an mbarrier (address/parity)",
                          "at a named barrier (id)"};
  for (int s = 0; s < 6; ++s) {
    if (counts[s] > 0) os << counts[s] << " " << names[s] << " (e.g." << examples[s] << "); ";
  }
  return os.str();
}

void BlockRunner::Fail(const std::string& message) const {
  std::fprintf(stderr, "CUDA emulation: kernel %s, block %s%s: %s\n", kernel_name_,
               current_ != nullptr ? Dim(current_->coords.block_idx).c_str() : "?",
               current_ != nullptr
                   ? (", thread " + Dim(current_->coords.thread_idx)).c_str()
                   : "",
               message.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace cuda_emu::internal

// ---- The device-side API of cuda_emulation.h -------------------------------------------------
namespace cuda_emu {

using internal::BlockRunner;

const ThreadCoordinates& CurrentCoordinates() {
  return BlockRunner::ForThisThread().Coordinates();
}
void SyncThreads() { BlockRunner::ForThisThread().SyncThreads(); }
void WarpExchange(unsigned mask, const void* in, void* out, int bytes, int src_lane) {
  BlockRunner& runner = BlockRunner::ForThisThread();
  const unsigned char* slots = runner.WarpCollective(mask, in, bytes, "__shfl_*_sync");
  if (src_lane < 0 || src_lane > 31 || ((mask >> src_lane) & 1u) == 0) {
    runner.Fail("shuffle from lane " + std::to_string(src_lane) + ", outside mask " +
                std::to_string(mask));
  }
  internal::CopySmall(out, slots + src_lane * BlockRunner::kSlotBytes, bytes);
}
unsigned WarpBallot(unsigned mask, bool predicate) {
  BlockRunner& runner = BlockRunner::ForThisThread();
  const int32_t mine = predicate ? 1 : 0;
  const unsigned char* slots = runner.WarpCollective(mask, &mine, sizeof(mine), "__ballot_sync");
  unsigned ballot = 0;
  for (int lane = 0; lane < 32; ++lane) {
    int32_t value = 0;
    internal::CopySmall(&value, slots + lane * BlockRunner::kSlotBytes, sizeof(value));
    if (((mask >> lane) & 1u) != 0 && value != 0) ballot |= 1u << lane;
  }
  return ballot;
}
int LaneId() { return BlockRunner::ForThisThread().Lane(); }
uint32_t SharedAddress(const void* ptr) { return BlockRunner::ForThisThread().SharedAddress(ptr); }
void* SharedPointer(uint32_t address) {
  return BlockRunner::ForThisThread().SharedPointer(address);
}
void PoisonSharedOnce(void* ptr, size_t bytes) {
  BlockRunner::ForThisThread().PoisonSharedOnce(ptr, bytes);
}
unsigned char* DynamicSharedMemory() { return BlockRunner::ForThisThread().DynamicSharedMemory(); }
void CpAsync16(uint32_t smem_address, const void* global, bool valid) {
  BlockRunner::ForThisThread().CpAsync16(smem_address, global, valid);
}
void CpAsyncCommit() { BlockRunner::ForThisThread().CpAsyncCommit(); }
void CpAsyncWait(int pending_groups) { BlockRunner::ForThisThread().CpAsyncWait(pending_groups); }
void FenceProxyAsync() { BlockRunner::ForThisThread().FenceProxyAsync(); }
void MbarrierInit(uint32_t address, unsigned arrivals) {
  BlockRunner::ForThisThread().MbarrierInit(address, static_cast<int>(arrivals));
}
void MbarrierArrive(uint32_t address, uint32_t expect_tx_bytes) {
  BlockRunner::ForThisThread().MbarrierArrive(address, expect_tx_bytes);
}
void MbarrierWait(uint32_t address, uint32_t parity) {
  BlockRunner::ForThisThread().MbarrierWait(address, parity);
}
void SyncWarp(unsigned mask) { BlockRunner::ForThisThread().SyncWarp(mask); }
void NamedBarrierSync(int id, int count) {
  BlockRunner::ForThisThread().NamedBarrierSync(id, count);
}
void NamedBarrierArrive(int id, int count) {
  BlockRunner::ForThisThread().NamedBarrierArrive(id, count);
}

}  // namespace cuda_emu
