// mma.sync.m16n8k16 (bf16 -> fp32) and ldmatrix.x4 for emulated builds, as warp collectives:
// every lane deposits its fragment registers (or row address), then computes its own outputs
// from the whole warp's, with the fragment layouts of the PTX ISA (kernels/cuda/mma_utils.cuh
// spells them out).
#include <cstring>

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

}  // namespace

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
    // The row's 16 bytes must lie inside shared memory.
    runner.SharedPointer(address + 16);
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
