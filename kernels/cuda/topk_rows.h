// Top-k sampling's reduction of a step's logits: each row's k most likely columns, so that k
// (column, value) pairs per row cross to the host instead of the row (at a 128k vocabulary
// and k = 50, 400 bytes instead of 513 KB), and the host samples from those alone.
//
// Order (the host Sampler's top-k, model/sampler.cc, exactly): value descending, then column
// ascending; NaN and -inf are never chosen, +inf is a value like any other. Row r's output is
// count[r] = min(k, number of values above -inf) entries, index[r * k + j] and
// value[r * k + j] for j < count[r], in increasing column order (the order the host sums
// in); entries past count[r] are left unwritten.
//
// Exact and deterministic: a radix select over the values' bits (no floating-point
// arithmetic), then the chosen columns written in column order; nothing depends on the
// launch's thread count or timing.
//
// Optionally also each row's softmax normalizer at a temperature T_r (1 unless given), what
// the host sampler takes from the rest of the row (model/sampler.h): at T = 1 the raw row's
// log-softmax (Sampler::RowNormalizer, for logprobs), at the sampling temperature the weight
// sum of a nucleus (Sampler::TrySampleNucleus). row_max[r] = the largest value (NaN ignored;
// -inf when there is none) and row_exp_sum[r] = the sum over values x above -inf of
// expf((x - row_max[r]) / T_r) in double when row_max[r] is finite, the number of +inf
// values when it is +inf, 0 when -inf. The difference and the division are fp32 as on the
// host; each term is exp in double rounded once to fp32 (as a correctly rounded expf would);
// the sum runs in a fixed tree order, so it is deterministic, and differs from the host's
// id-order sum only in double rounding. On request also row_exp_sum_t1[r], the same sum at
// temperature 1 (the raw row's log-softmax normalizer, for a row that reports logprobs but
// samples a nucleus at another temperature), from the same pass.
#ifndef GLIMPSE_KERNELS_CUDA_TOPK_ROWS_H_
#define GLIMPSE_KERNELS_CUDA_TOPK_ROWS_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace glimpse::kernels::cuda {

struct TopKRowsParams {
  const float* x = nullptr;  // device, [num_rows][cols] fp32
  int64_t num_rows = 0;      // < 2^31
  int64_t cols = 0;          // 1 .. 2^31 - 1
  int32_t k = 0;             // >= 1 (may exceed cols: then every value above -inf)
  int32_t* count = nullptr;  // device, [num_rows]
  int32_t* index = nullptr;  // device, [num_rows][k]
  float* value = nullptr;    // device, [num_rows][k]; may be null
  // The rows' softmax normalizers (above): both or neither; their temperatures (> 0) only
  // with them, null for 1.
  float* row_max = nullptr;            // device, [num_rows]
  double* row_exp_sum = nullptr;       // device, [num_rows]
  const float* temperature = nullptr;  // device, [num_rows]
  // The sums at temperature 1 besides (only with the normalizers; null: not written).
  double* row_exp_sum_t1 = nullptr;  // device, [num_rows]
  // How many blocks share a row (TopKRowsSplits; 1 .. kMaxTopKSplits): above 1, each selects
  // the top k of its chunk of the row into `workspace`, and one block per row selects the top
  // k of those (the same entries: each of a row's top k is among its chunk's top k), so that
  // a few rows keep many SMs busy instead of one SM reading each row eight times. The outputs
  // are the same bit for bit but for the exp sums' double rounding (their terms are the
  // same; they are summed per chunk, then over the chunks in order).
  int32_t splits = 1;
  void* workspace = nullptr;  // device, TopKRowsWorkspaceBytes(num_rows, splits, k) bytes
  size_t workspace_bytes = 0;
};

inline constexpr int32_t kMaxTopKSplits = 64;

// The blocks per row a step of `num_rows` rows of `cols` logits wants for top k on a GPU with
// `num_sms` multiprocessors: about sqrt(cols / k) chunks (a chunk of cols / s values and the
// merged s x k candidates then cost a block about as much), no more than keep two blocks per
// SM busy over all rows, at most kMaxTopKSplits; 1 (no split) when that is below 2. E.g. a
// 128256-word vocabulary, k 64, 132 SMs: 44 at batch 1, 4 at batch 64, 1 from batch 133.
int32_t TopKRowsSplits(int64_t num_rows, int64_t cols, int32_t k, int32_t num_sms);
// The workspace a split launch needs: num_rows x splits x (8k + 20) bytes; 0 for splits 1.
size_t TopKRowsWorkspaceBytes(int64_t num_rows, int32_t splits, int32_t k);

// splits 1: one 512-thread block per row; it reads the row four times (one 8-bit radix digit
// each) and twice more to write the chosen columns in order, and twice more for the
// normalizers. splits s > 1: s blocks a row do that over their chunks (the normalizers' sums
// in a second launch, once the row's maximum is known), then one block a row over the s x k
// candidates.
cudaError_t LaunchTopKRows(const TopKRowsParams& params, cudaStream_t stream);

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_TOPK_ROWS_H_
