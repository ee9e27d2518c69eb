// Greedy decoding's reduction of a step's logits: for each row, the largest value and its
// column, so that only 8 bytes per row (not the row) cross to the host.
//
// Semantics (the host Sampler's greedy ArgMax, model/sampler.cc, exactly): NaN is never
// chosen; ties go to the lowest column; a row with no value above -inf (all -inf or NaN)
// gives column 0 and value -inf. +inf is a value like any other (the first +inf wins).
// Deterministic: the result does not depend on the launch's thread count or timing.
#ifndef GLIMPSE_KERNELS_CUDA_ARGMAX_ROWS_H_
#define GLIMPSE_KERNELS_CUDA_ARGMAX_ROWS_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace glimpse::kernels::cuda {

struct ArgMaxRowsParams {
  const float* x = nullptr;  // device, [num_rows][cols] fp32
  int64_t num_rows = 0;      // < 2^31
  int64_t cols = 0;          // 1 .. 2^31 - 1
  int32_t* index = nullptr;  // device, [num_rows]
  float* value = nullptr;    // device, [num_rows]; may be null. A maximum of -0.0 reads +0.0.
  // Blocks per row (ArgMaxRowsSplits; 1 .. min(kMaxArgMaxSplits, cols)). Above 1 each block
  // reduces its chunk of the row into `partial` (an atomic maximum of a 64-bit key: the value's
  // order, then the complement of its column, so that ties go to the lowest column whatever
  // the blocks' order) and the last of the row's blocks to finish, counted in `counters`,
  // writes the result and zeroes both again.
  int32_t splits = 1;
  unsigned long long* partial = nullptr;  // device, [num_rows]: zero before, left zero
  unsigned int* counters = nullptr;       // device, [num_rows]: zero before, left zero
};

inline constexpr int32_t kMaxArgMaxSplits = 256;
// A split's chunk is at least this many columns: 16 KiB of fp32, what a block's 256 threads
// have in flight at once (16 loads each, as nvcc unrolls the loop), so that one pass of loads
// reads a chunk, not one SM's latency-bound stream the whole row.
inline constexpr int64_t kMinArgMaxColsPerSplit = 4096;

// The blocks per row a step of `num_rows` rows of `cols` logits wants on a GPU with `num_sms`
// multiprocessors: enough for two blocks per SM over all rows, each reading at least
// kMinArgMaxColsPerSplit columns, at most kMaxArgMaxSplits; 1 (no split) when that is below 2.
// E.g. a 128256-word vocabulary on 132 SMs: 31 at batch 1 to 8, 4 at batch 64, 1 from 133.
int32_t ArgMaxRowsSplits(int64_t num_rows, int64_t cols, int32_t num_sms);

// splits 1: one 256-thread block per row. splits s > 1: s blocks a row, as above.
cudaError_t LaunchArgMaxRows(const ArgMaxRowsParams& params, cudaStream_t stream);

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_ARGMAX_ROWS_H_
