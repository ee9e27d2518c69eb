// mma.sync.m16n8k16 (bf16 -> fp32), ldmatrix.x4 and wgmma (m64nNk16, bf16 -> fp32) for
// emulated builds, as warp collectives: every lane deposits its fragment registers (or row
// address), then computes its own outputs from the whole warp's, with the fragment layouts of
// the PTX ISA (kernels/cuda/mma_utils.cuh spells them out).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <vector>

#include "kernels/cuda/emulation/block_runner.h"
#include "kernels/cuda/emulation/include/cuda_bf16.h"

namespace cuda_emu {
namespace {

using internal::BlockRunner;
constexpr unsigned kFullMask = 0xffffffffu;

float Half(uint32_t reg, int high) {
  return Bf16BitsToFloat(static_cast<unsigned short>(high ? reg >> 16 : reg & 0xffffu));
}

struct MmaFragments {
  uint32_t a[4];
  uint32_t b[2];
};

// The warp's A fragments (mma.m16n8k16's layout) as a 16 x 16 matrix.
struct WarpA {
  float at[16][16];
};

WarpA GatherWarpA(BlockRunner& runner, const uint32_t (&a)[4], const char* what) {
  uint32_t mine[4] = {a[0], a[1], a[2], a[3]};
  const unsigned char* slots = runner.WarpCollective(kFullMask, mine, sizeof(mine), what);
  WarpA w;
  for (int r = 0; r < 16; ++r) {
    for (int k = 0; k < 16; ++k) {
      // A(r, k): lane 4 * (r % 8) + (k % 8) / 2, register (r >= 8) + 2 * (k >= 8), half k % 2.
      uint32_t reg;
      std::memcpy(&reg,
                  slots + (4 * (r % 8) + (k % 8) / 2) * BlockRunner::kSlotBytes +
                      4 * ((r >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)),
                  4);
      w.at[r][k] = Half(reg, k & 1);
    }
  }
  return w;
}

// One issued wgmma, executed when its group completes. A is the warp's registers (gathered
// at issue into `a`), or, when desc_a is not 0, read through that descriptor at completion
// (a valid descriptor is never 0: its swizzle bits are set).
struct PendingWgmma {
  float* d;
  int n;
  WarpA a;
  uint64_t desc_b;
  bool accumulate;
  bool trans_b;
  uint64_t desc_a = 0;
};

// A thread's in-flight wgmma operations. `values` holds the true contents of every
// accumulator array with operations in flight (the registers themselves read NaN meanwhile),
// so that operations chained on one accumulator (the k-steps of a product) see each other's
// results, in issue order, as on the GPU.
struct WgmmaState {
  std::vector<PendingWgmma> uncommitted;
  std::vector<std::vector<PendingWgmma>> committed;  // oldest first
  std::map<float*, std::vector<float>> values;
  // wgmma.fence bookkeeping (the PTX ISA: a register access by a thread and a wgmma that
  // accesses the same registers need a wgmma.fence between them). The values each A array
  // and accumulator (by address; every one a wgmma of this thread has used) held at the last
  // fence, or since then when a wgmma read them (A) or left them at its wait (D): a later
  // wgmma that finds them changed means the thread wrote them after the fence.
  bool fenced = false;  // a fence since the block started
  std::map<const void*, std::array<uint32_t, 4>> a_read;
  std::map<float*, std::vector<float>> d_written;
  std::map<float*, int> accumulators;  // every accumulator used, with its N / 2
};

// Reads `bytes` at `src` for the fence's snapshots. A register array of an earlier wgmma may
// be out of scope by the fence (its stack slot reused); what it holds then is compared, not
// trusted, so the read is kept out of AddressSanitizer's stack-scope checks.
__attribute__((no_sanitize_address)) void SnapshotBytes(void* dst, const void* src, size_t bytes) {
  const auto* from = static_cast<const unsigned char*>(src);
  auto* to = static_cast<unsigned char*>(dst);
  for (size_t i = 0; i < bytes; ++i) to[i] = from[i];
}

// wgmma.mma_async is .sync.aligned: the four warps of a warpgroup must issue the same
// sequence of operations. The first warp of a warpgroup to issue its k-th operation records
// it (shape, descriptors, accumulate); the others must match it.
struct IssuedWgmma {
  int n;
  uint64_t desc_b;
  bool accumulate;
  bool trans_b;
  uint64_t desc_a;  // 0 when A comes from registers
  bool operator==(const IssuedWgmma&) const = default;
};
struct WarpgroupLog {
  std::vector<IssuedWgmma> ops;  // by issue index within the warpgroup
  int issued[4] = {0, 0, 0, 0};  // per warp of the warpgroup
};
struct BlockWgmmaLog {
  std::map<int, WarpgroupLog> warpgroups;
};

void CheckWarpgroupAligned(BlockRunner& runner, const IssuedWgmma& op) {
  std::shared_ptr<void>& slot = runner.BlockWgmmaState();
  if (slot == nullptr) slot = std::make_shared<BlockWgmmaLog>();
  WarpgroupLog& log = static_cast<BlockWgmmaLog*>(slot.get())->warpgroups[runner.WarpIndex() / 4];
  const size_t k = static_cast<size_t>(log.issued[runner.WarpIndex() % 4]++);
  if (k == log.ops.size()) {
    log.ops.push_back(op);
  } else if (!(log.ops[k] == op)) {
    runner.Fail("wgmma.mma_async number " + std::to_string(k) + " of warp " +
                std::to_string(runner.WarpIndex()) +
                " differs from the same operation of another warp of its warpgroup (N, A or B "
                "descriptor, or accumulate): wgmma is .sync.aligned, all four warps must issue "
                "the same operations");
  }
}

WgmmaState& StateOf(BlockRunner& runner) {
  std::shared_ptr<void>& slot = runner.ThreadWgmmaState();
  if (slot == nullptr) slot = std::make_shared<WgmmaState>();
  return *static_cast<WgmmaState*>(slot.get());
}

// The shared address of element (k, n) of B, 0 <= k < 16, through a descriptor with the
// 128-byte swizzle (PTX ISA, "Matrix Descriptor" and the canonical layouts; CUTLASS's
// GMMA::Layout_*_SW128 atoms spell out the same):
//   start address bits 0-13, leading byte offset (LBO) 16-29, stride byte offset (SBO)
//   32-45, all in 16-byte units; swizzle mode bits 62-63 (1 = 128B).
//   K-major (B is N x K with K contiguous): rows of 128 bytes; row n at (n / 8) * SBO +
//     (n % 8) * 128, element k at 2k within it (a k16 step spans 32 bytes); LBO unused.
//   MN-major (trans_b; K x N with N contiguous): 64 elements of N per 128-byte row; k-row at
//     (k / 8) * SBO + (k % 8) * 128, element n at (n / 64) * LBO + 2 (n % 64).
//   The swizzle then XORs address bits 4-6 (the 16-byte chunk) with bits 7-9 (the row within
//   an 8-row, 1024-byte atom), on the absolute shared address.
uint32_t BAddress(uint64_t desc, bool trans_b, int k, int n) {
  const uint32_t start = static_cast<uint32_t>(desc & 0x3FFF) << 4;
  const uint32_t lbo = static_cast<uint32_t>((desc >> 16) & 0x3FFF) << 4;
  const uint32_t sbo = static_cast<uint32_t>((desc >> 32) & 0x3FFF) << 4;
  uint32_t address;
  if (trans_b) {
    address = start + (k / 8) * sbo + (k % 8) * 128 + (n / 64) * lbo + 2 * (n % 64);
  } else {
    address = start + (n / 8) * sbo + (n % 8) * 128 + 2 * k;
  }
  return address ^ (((address >> 7) & 7u) << 4);
}

// Element (k, n) of B, as bf16 widened to float.
float ReadB(BlockRunner& runner, uint64_t desc, bool trans_b, int k, int n) {
  unsigned short bits;
  std::memcpy(&bits, runner.SharedPointer(BAddress(desc, trans_b, k, n)), 2);
  return Bf16BitsToFloat(bits);
}

// Fails when any 16-byte chunk of B's shared memory has a cp.async in flight, unpublished or
// not fenced to the async proxy (BlockRunner::CheckCopiesVisible), one check per chunk: the first
// element of each run of 8 contiguous ones (along k when K-major, along n when MN-major). At issue,
// B may be read from then on; at completion, it has been read until then.
void CheckBCopiesDone(BlockRunner& runner, uint64_t desc, bool trans_b, int n, const char* what) {
  const int k_step = trans_b ? 1 : 8;
  const int n_step = trans_b ? 8 : 1;
  for (int k = 0; k < 16; k += k_step) {
    for (int col = 0; col < n; col += n_step) {
      runner.CheckCopiesVisible(BAddress(desc, trans_b, k, col), 16, what,
                                /*async_proxy=*/true);
    }
  }
}

// A (64 x 16, K-major) through a descriptor has B's K-major addressing with its rows as n.
void CheckACopiesDone(BlockRunner& runner, uint64_t desc_a, const char* what) {
  CheckBCopiesDone(runner, desc_a, /*trans_b=*/false, 64, what);
}

// This warp's 16 rows of a shared-memory A.
WarpA ReadWarpA(BlockRunner& runner, uint64_t desc_a) {
  const int first_row = 16 * (runner.WarpIndex() % 4);
  WarpA w;
  for (int r = 0; r < 16; ++r) {
    for (int k = 0; k < 16; ++k) w.at[r][k] = ReadB(runner, desc_a, false, k, first_row + r);
  }
  return w;
}

void Execute(BlockRunner& runner, WgmmaState& state, const PendingWgmma& op) {
  const int lane = runner.Lane();
  // Every lane of the warpgroup reads the same B (and A): one check per warp is enough.
  if (lane == 0) {
    CheckBCopiesDone(runner, op.desc_b, op.trans_b, op.n, "wgmma (operand B, at completion)");
    if (op.desc_a != 0) CheckACopiesDone(runner, op.desc_a, "wgmma (operand A, at completion)");
  }
  const WarpA a = op.desc_a != 0 ? ReadWarpA(runner, op.desc_a) : op.a;
  std::vector<float>& d = state.values.at(op.d);
  const int g = lane >> 2;
  const int t = lane & 3;
  // This lane's columns of B: 8j + 2t and 8j + 2t + 1 of every n-tile j, each read once.
  float b[16][64];
  for (int j = 0; j < op.n / 8; ++j) {
    for (int e = 0; e < 2; ++e) {
      for (int k = 0; k < 16; ++k) {
        b[k][2 * j + e] = ReadB(runner, op.desc_b, op.trans_b, k, 8 * j + 2 * t + e);
      }
    }
  }
  // Accumulator i: n-tile i / 4; rows g (i % 4 < 2) or g + 8; columns 8 (i / 4) + 2t + i % 2.
  for (int i = 0; i < op.n / 2; ++i) {
    const int r = g + ((i & 2) ? 8 : 0);
    const int col = 2 * (i / 4) + (i & 1);
    float sum = 0.0f;
    for (int k = 0; k < 16; ++k) sum += a.at[r][k] * b[k][col];
    d[i] = (op.accumulate ? d[i] : 0.0f) + sum;
  }
}

// What every wgmma issue does beside reading A: shape and B checks, the warpgroup alignment
// check, the fence rules for the accumulators, and queueing the operation.
void IssueWgmma(BlockRunner& runner, PendingWgmma op) {
  if (op.n < 8 || op.n > 256 || op.n % 8 != 0) {
    runner.Fail("wgmma: N must be a multiple of 8 in 8..256");
  }
  if ((op.desc_b >> 62) != 1) runner.Fail("wgmma: only the 128-byte swizzle is emulated");
  if (runner.Lane() == 0) {
    CheckBCopiesDone(runner, op.desc_b, op.trans_b, op.n, "wgmma (operand B, at issue)");
    CheckWarpgroupAligned(runner,
                          IssuedWgmma{op.n, op.desc_b, op.accumulate, op.trans_b, op.desc_a});
  }
  WgmmaState& state = StateOf(runner);
  if (!state.fenced) runner.Fail("wgmma.mma_async before any wgmma.fence of the thread");
  float* d = op.d;
  const int n = op.n;
  state.accumulators[d] = n / 2;
  if (op.accumulate && state.values.count(d) == 0) {
    const auto written = state.d_written.find(d);
    if (written != state.d_written.end() && !std::equal(d, d + n / 2, written->second.begin())) {
      runner.Fail(
          "wgmma.mma_async accumulates into registers the thread changed after the "
          "wgmma that wrote them completed, with no wgmma.fence in between (WgmmaFence "
          "after rescaling or otherwise writing the accumulators)");
    }
  }
  auto [it, inserted] = state.values.try_emplace(d);
  if (inserted) {
    it->second.assign(d, d + n / 2);
    std::fill(d, d + n / 2, std::numeric_limits<float>::quiet_NaN());
  } else if (static_cast<int>(it->second.size()) != n / 2) {
    runner.Fail("wgmma: accumulator reused with another N while in flight");
  }
  state.uncommitted.push_back(std::move(op));
}

}  // namespace

void WgmmaAsync(float* d, int n, const uint32_t (&a)[4], uint64_t desc_b, bool accumulate,
                bool trans_b) {
  BlockRunner& runner = BlockRunner::ForThisThread();
  IssueWgmma(runner, PendingWgmma{d, n, GatherWarpA(runner, a, "wgmma.mma_async"), desc_b,
                                  accumulate, trans_b});
  WgmmaState& state = StateOf(runner);
  const std::array<uint32_t, 4> a_now = {a[0], a[1], a[2], a[3]};
  auto [a_it, a_new] = state.a_read.try_emplace(static_cast<const void*>(a), a_now);
  if (!a_new && a_it->second != a_now) {
    runner.Fail(
        "wgmma.mma_async reads A registers the thread rewrote after an earlier wgmma "
        "read them, with no wgmma.fence in between (WgmmaFence after writing them)");
  }
  a_it->second = a_now;
}

void WgmmaAsyncSS(float* d, int n, uint64_t desc_a, uint64_t desc_b, bool accumulate,
                  bool trans_b) {
  BlockRunner& runner = BlockRunner::ForThisThread();
  if ((desc_a >> 62) != 1) runner.Fail("wgmma: only the 128-byte swizzle is emulated");
  if (runner.Lane() == 0) CheckACopiesDone(runner, desc_a, "wgmma (operand A, at issue)");
  IssueWgmma(runner, PendingWgmma{d, n, WarpA{}, desc_b, accumulate, trans_b, desc_a});
}

void WgmmaCommit() {
  BlockRunner& runner = BlockRunner::ForThisThread();
  WgmmaState& state = StateOf(runner);
  state.committed.push_back(std::move(state.uncommitted));
  state.uncommitted.clear();
}

void WgmmaWait(int pending_groups) {
  BlockRunner& runner = BlockRunner::ForThisThread();
  WgmmaState& state = StateOf(runner);
  while (static_cast<int>(state.committed.size()) > pending_groups) {
    for (const PendingWgmma& op : state.committed.front()) Execute(runner, state, op);
    state.committed.erase(state.committed.begin());
  }
  // Accumulators with nothing left in flight get their values back.
  for (auto it = state.values.begin(); it != state.values.end();) {
    auto uses = [&](const std::vector<PendingWgmma>& ops) {
      return std::any_of(ops.begin(), ops.end(),
                         [&](const PendingWgmma& op) { return op.d == it->first; });
    };
    const bool in_flight = uses(state.uncommitted) ||
                           std::any_of(state.committed.begin(), state.committed.end(), uses);
    if (in_flight) {
      ++it;
    } else {
      std::copy(it->second.begin(), it->second.end(), it->first);
      state.d_written[it->first] = it->second;
      it = state.values.erase(it);
    }
  }
}

void WgmmaFence() {
  WgmmaState& state = StateOf(BlockRunner::ForThisThread());
  state.fenced = true;
  for (auto& [address, values] : state.a_read) {
    SnapshotBytes(values.data(), address, values.size() * sizeof(uint32_t));
  }
  state.d_written.clear();
  for (const auto& [d, count] : state.accumulators) {
    if (state.values.count(d) != 0) continue;  // in flight: the registers read NaN
    std::vector<float>& values = state.d_written[d];
    values.resize(count);
    SnapshotBytes(values.data(), d, count * sizeof(float));
  }
}

void MmaM16n8k16Bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  BlockRunner& runner = BlockRunner::ForThisThread();
  const MmaFragments mine{{a[0], a[1], a[2], a[3]}, {b0, b1}};
  const unsigned char* slots =
      runner.WarpCollective(kFullMask, &mine, sizeof(mine), "mma.sync.m16n8k16");
  auto lane_fragments = [&](int lane) {
    MmaFragments f;
    std::memcpy(&f, slots + lane * BlockRunner::kSlotBytes, sizeof(f));
    return f;
  };
  MmaFragments all[32];
  for (int l = 0; l < 32; ++l) all[l] = lane_fragments(l);
  // A(r, k): lane 4 * (r % 8) + (k % 8) / 2, register (r >= 8) + 2 * (k >= 8), half k % 2.
  auto a_at = [&](int r, int k) {
    return Half(all[4 * (r % 8) + (k % 8) / 2].a[(r >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)], k & 1);
  };
  // B(k, n): lane 4 * n + (k % 8) / 2, register k >= 8, half k % 2.
  auto b_at = [&](int k, int n) { return Half(all[4 * n + (k % 8) / 2].b[k >= 8 ? 1 : 0], k & 1); };
  const int lane = runner.Lane();
  const int g = lane >> 2;
  const int t = lane & 3;
  for (int i = 0; i < 4; ++i) {
    const int r = g + (i >= 2 ? 8 : 0);
    const int n = 2 * t + (i & 1);
    float sum = 0.0f;
    for (int k = 0; k < 16; ++k) sum += a_at(r, k) * b_at(k, n);
    c[i] += sum;
  }
}

void LdMatrixX4(uint32_t (&r)[4], uint32_t smem_address, bool transpose) {
  BlockRunner& runner = BlockRunner::ForThisThread();
  const unsigned char* slots = runner.WarpCollective(kFullMask, &smem_address,
                                                     sizeof(smem_address), "ldmatrix.x4");
  auto row_pointer = [&](int matrix, int row) {
    uint32_t address;
    std::memcpy(&address, slots + (8 * matrix + row) * BlockRunner::kSlotBytes, 4);
    if ((address & 15u) != 0) runner.Fail("ldmatrix row address is not 16-byte aligned");
    // The row's 16 bytes must lie inside shared memory, with no copy to them in flight.
    runner.SharedPointer(address + 16);
    runner.CheckCopiesVisible(address, 16, "ldmatrix");
    return static_cast<const unsigned short*>(runner.SharedPointer(address));
  };
  const int lane = runner.Lane();
  const int g = lane >> 2;
  const int t = lane & 3;
  for (int m = 0; m < 4; ++m) {
    unsigned short lo;
    unsigned short hi;
    if (transpose) {
      lo = row_pointer(m, 2 * t)[g];
      hi = row_pointer(m, 2 * t + 1)[g];
    } else {
      const unsigned short* row = row_pointer(m, g);
      lo = row[2 * t];
      hi = row[2 * t + 1];
    }
    r[m] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
  }
}

}  // namespace cuda_emu
