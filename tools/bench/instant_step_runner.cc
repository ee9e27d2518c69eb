#include "tools/bench/instant_step_runner.h"

#include <time.h>

#include <algorithm>
#include <thread>

namespace glimpse::bench {
namespace {

double CpuMicros(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) * 1e-3;
}

}  // namespace

absl::Status InstantStepRunner::Forward(const model::StepBatch& batch, float* logits) {
  BeginCall(batch);
  const size_t vocab = static_cast<size_t>(config_.vocab_size);
  for (size_t r = 0; r < batch.logits_rows.size(); ++r) {
    std::fill(logits + r * vocab, logits + (r + 1) * vocab, -20.0f);
    logits[r * vocab + Token(r)] = 5.0f;
  }
  EndCall();
  return absl::OkStatus();
}

absl::Status InstantStepRunner::ForwardGreedy(const model::StepBatch& batch, int32_t* tokens) {
  BeginCall(batch);
  for (size_t r = 0; r < batch.logits_rows.size(); ++r) tokens[r] = Token(r);
  EndCall();
  return absl::OkStatus();
}

absl::Status InstantStepRunner::ForwardTopK(const model::StepBatch& batch, int32_t k,
                                            std::span<const float> normalizer_temperatures,
                                            bool sums_t1, model::TopTokens* top) {
  BeginCall(batch);
  const size_t rows = batch.logits_rows.size();
  top->Resize(rows, k, !normalizer_temperatures.empty(), sums_t1);
  const int32_t count = std::min(k, kTextTokens);
  for (size_t r = 0; r < rows; ++r) {
    top->count[r] = count;
    for (int32_t j = 0; j < count; ++j) {
      // Increasing ids, values in a made-up order; the row's own token the likeliest.
      const size_t at = r * static_cast<size_t>(k) + static_cast<size_t>(j);
      top->ids[at] = kFirstTextToken + (Token(r) - kFirstTextToken + j) % kTextTokens;
      top->logits[at] = j == 0 ? 5.0f : -0.05f * static_cast<float>((j * 37) % count);
    }
    std::sort(top->ids.begin() + r * k, top->ids.begin() + r * k + count);
    if (!top->row_max.empty()) {
      top->row_max[r] = 5.0f;
      top->row_exp_sum[r] = 1.5;
      if (!top->row_exp_sum_t1.empty()) top->row_exp_sum_t1[r] = 1.5;
    }
  }
  EndCall();
  return absl::OkStatus();
}

absl::Status InstantStepRunner::CopyStepLogitsRow(size_t row, float* logits) {
  std::fill(logits, logits + config_.vocab_size, -20.0f);
  logits[Token(row)] = 5.0f;
  return absl::OkStatus();
}

StepIntervals InstantStepRunner::Intervals(size_t rows) const {
  StepIntervals out;
  for (size_t i = 1; i < calls_.size(); ++i) {
    if (calls_[i].rows != rows || calls_[i - 1].rows != rows) continue;
    out.wall_us.push_back(
        std::chrono::duration<double, std::micro>(calls_[i].start - calls_[i - 1].start).count());
    out.engine_cpu_us.push_back(calls_[i].thread_cpu_us - calls_[i - 1].thread_cpu_us);
    out.process_cpu_us.push_back(calls_[i].process_cpu_us - calls_[i - 1].process_cpu_us);
    out.gap_us.push_back(
        std::chrono::duration<double, std::micro>(calls_[i].start - calls_[i - 1].end).count());
    out.gap_cpu_us.push_back(calls_[i].thread_cpu_us - calls_[i - 1].end_thread_cpu_us);
  }
  return out;
}

void InstantStepRunner::BeginCall(const model::StepBatch& batch) {
  Call call;
  call.start = std::chrono::steady_clock::now();
  call.thread_cpu_us = CpuMicros(CLOCK_THREAD_CPUTIME_ID);
  call.process_cpu_us = CpuMicros(CLOCK_PROCESS_CPUTIME_ID);
  call.rows = batch.logits_rows.size();
  calls_.push_back(call);
  ++step_;
  // As on a GPU: the host work handed to this step (the engine's last outputs) runs while the
  // "device" computes, and the step ends forward_time after it began, or when that work is
  // done if it takes longer.
  if (kernels::HostWork* work = TakeOverlapWork(); work != nullptr) work->Run();
}

void InstantStepRunner::EndCall() {
  if (forward_time_.count() > 0) std::this_thread::sleep_until(calls_.back().start + forward_time_);
  calls_.back().end = std::chrono::steady_clock::now();
  calls_.back().end_thread_cpu_us = CpuMicros(CLOCK_THREAD_CPUTIME_ID);
}

int32_t InstantStepRunner::Token(size_t row) const {
  return kFirstTextToken + static_cast<int32_t>((row * 131 + step_ * 17) % kTextTokens);
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

}  // namespace glimpse::bench
