#include "model/tensor_parallel_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/check.h"
#include "common/status_macros.h"

namespace glimpse::model {

// One thread per rank >= 1, alive for the model's lifetime (rank 0 runs on the caller): a step
// costs two wake-ups per rank instead of thread creation, and a GPU rank's thread keeps its
// device current between steps.
class TensorParallelModel::RankThreads {
 public:
  explicit RankThreads(int size) : size_(size) {
    for (int rank = 1; rank < size; ++rank) threads_.emplace_back([this, rank] { Loop(rank); });
  }
  ~RankThreads() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    for (std::thread& t : threads_) t.join();
  }

  // Runs fn(rank) for every rank concurrently and returns when all have finished.
  void Run(const std::function<void(int)>& fn) {
    {
      absl::MutexLock lock(&mu_);
      job_ = &fn;
      pending_ = size_ - 1;
      ++generation_;
    }
    fn(0);
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(+[](int* pending) { return *pending == 0; }, &pending_));
    job_ = nullptr;
  }

 private:
  void Loop(int rank) {
    uint64_t seen = 0;
    while (true) {
      const std::function<void(int)>* job = nullptr;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stop_ || generation_ != seen;
        };
        mu_.Await(absl::Condition(&ready));
        if (stop_) return;
        seen = generation_;
        job = job_;
      }
      (*job)(rank);
      absl::MutexLock lock(&mu_);
      --pending_;
    }
  }

  const int size_;
  absl::Mutex mu_;
  const std::function<void(int)>* job_ ABSL_GUARDED_BY(mu_) = nullptr;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

absl::StatusOr<std::unique_ptr<TensorParallelModel>> TensorParallelModel::Load(
    const GgufFile& file, std::vector<std::unique_ptr<kernels::Backend>> backends) {
  if (backends.empty()) {
    return absl::InvalidArgumentError("a tensor-parallel model needs at least one backend");
  }
  const int size = static_cast<int>(backends.size());
  std::unique_ptr<TensorParallelModel> model(new TensorParallelModel());
  model->ranks_.resize(size);
  for (int r = 0; r < size; ++r) model->ranks_[r].backend = std::move(backends[r]);
  model->threads_ = std::make_unique<RankThreads>(size);
  // Each rank packs its shard on its own thread (on GPUs: its own device, in parallel).
  std::vector<absl::Status> status(size);
  model->threads_->Run([&](int r) {
    Rank& rank = model->ranks_[r];
    auto loaded = LlamaModel::Load(file, *rank.backend, TensorParallelRank{r, size});
    if (loaded.ok()) {
      rank.model = std::move(*loaded);
    } else {
      status[r] = loaded.status();
    }
  });
  for (const absl::Status& s : status) {
    if (!s.ok()) return s;
  }
  return model;
}

TensorParallelModel::~TensorParallelModel() = default;

size_t TensorParallelModel::weight_bytes() const {
  size_t total = 0;
  for (const Rank& rank : ranks_) total += rank.model->weight_bytes();
  return total;
}

void TensorParallelModel::AllocateKvCache(int32_t num_blocks, int32_t block_size,
                                          int32_t num_host_blocks) {
  threads_->Run([&](int r) {
    Rank& rank = ranks_[r];
    rank.kv.reset();  // Free the old cache before allocating the new one.
    rank.kv = std::make_unique<KvCacheStorage>(*rank.backend, rank.model->config(), num_blocks,
                                               block_size, rank.model->shard().tp);
    rank.kv->SetNumHostBlocks(num_host_blocks);
  });
}

void TensorParallelModel::ReserveActivations(int32_t max_step_tokens, int32_t max_logits_rows) {
  threads_->Run([&](int r) {
    ranks_[r].model->ReserveActivations(max_step_tokens, max_logits_rows);
  });
}

void TensorParallelModel::MoveKvBlocks(std::span<const KvBlockMove> moves) {
  if (moves.empty()) return;  // Most steps: no wake-up of the rank threads.
  CHECK(ranks_[0].kv != nullptr);
  threads_->Run([&](int r) { ranks_[r].kv->ApplyMoves(moves); });
}

absl::Status TensorParallelModel::OnEveryRank(const std::function<absl::Status(Rank&)>& forward) {
  // Either all ranks return an error before their first all-reduce, or none does (a rank that
  // stopped early would leave its peers waiting in a collective forever).
  std::vector<absl::Status> status(size());
  threads_->Run([&](int r) { status[r] = forward(ranks_[r]); });
  for (int r = 0; r < size(); ++r) {
    if (!status[r].ok()) {
      return size() == 1 ? status[r]
                         : absl::Status(status[r].code(), absl::StrCat("tensor-parallel rank ", r,
                                                                       ": ", status[r].message()));
    }
  }
  return absl::OkStatus();
}

absl::Status TensorParallelModel::ForwardGreedy(const StepBatch& batch, int32_t* tokens) {
  kernels::HostWork* const overlap = TakeOverlapWork();
  if (ranks_[0].kv == nullptr) {
    return absl::FailedPreconditionError("Forward before AllocateKvCache");
  }
  const size_t num_rows = batch.logits_rows.size();
  for (Rank& rank : ranks_) {
    rank.argmax_index.resize(num_rows);
    rank.argmax_value.resize(num_rows);
  }
  // Rank 0 runs on this thread: the work overlaps every rank's step there.
  ranks_[0].model->OverlapNextForward(overlap);
  RETURN_IF_ERROR(OnEveryRank([&](Rank& rank) {
    return rank.model->ForwardArgMax(batch, *rank.kv, rank.argmax_index.data(),
                                     rank.argmax_value.data());
  }));
  for (size_t i = 0; i < num_rows; ++i) {
    // A rank wins only by a strictly larger value: a lower rank keeps ties, and a row with
    // nothing above -inf anywhere stays at rank 0's answer (id 0).
    int32_t token = ranks_[0].model->shard().vocab.begin + ranks_[0].argmax_index[i];
    float best = ranks_[0].argmax_value[i];
    for (const Rank& rank : ranks_) {
      if (rank.argmax_value[i] > best) {
        best = rank.argmax_value[i];
        token = rank.model->shard().vocab.begin + rank.argmax_index[i];
      }
    }
    tokens[i] = token;
  }
  return absl::OkStatus();
}

absl::Status TensorParallelModel::ForwardTopK(const StepBatch& batch, int32_t k,
                                              std::span<const float> normalizer_temperatures,
                                              bool sums_t1, TopTokens* top) {
  kernels::HostWork* const overlap = TakeOverlapWork();
  if (ranks_[0].kv == nullptr) {
    return absl::FailedPreconditionError("Forward before AllocateKvCache");
  }
  const size_t num_rows = batch.logits_rows.size();
  const bool normalizers = !normalizer_temperatures.empty();
  CHECK(!normalizers || normalizer_temperatures.size() == num_rows);
  CHECK(!sums_t1 || normalizers);
  for (Rank& rank : ranks_) {
    rank.top.Resize(num_rows, k, normalizers, sums_t1);  // k < 1: every rank's model refuses
  }
  ranks_[0].model->OverlapNextForward(overlap);
  RETURN_IF_ERROR(OnEveryRank([&](Rank& rank) {
    return rank.model->ForwardTopK(
        batch, *rank.kv, k, rank.top.count.data(), rank.top.ids.data(), rank.top.logits.data(),
        rank.top.row_max_data(), rank.top.row_exp_sum_data(),
        normalizers ? normalizer_temperatures.data() : nullptr, rank.top.row_exp_sum_t1_data());
  }));
  top->Resize(num_rows, k, normalizers, sums_t1);
  if (normalizers) {
    for (size_t i = 0; i < num_rows; ++i) {
      MergeRowNormalizers(i, normalizer_temperatures[i], top);
    }
  }
  std::vector<std::pair<float, int32_t>> merged;
  for (size_t i = 0; i < num_rows; ++i) {
    // Slices are in id order, so the ranks' candidates joined in rank order are in id order.
    merged.clear();
    for (const Rank& rank : ranks_) {
      const int32_t begin = rank.model->shard().vocab.begin;
      const std::span<const int32_t> ids = rank.top.Ids(i);
      const std::span<const float> logits = rank.top.Logits(i);
      for (size_t j = 0; j < ids.size(); ++j) merged.emplace_back(logits[j], begin + ids[j]);
    }
    if (merged.size() > static_cast<size_t>(k)) {
      std::nth_element(merged.begin(), merged.begin() + k, merged.end(),
                       [](const auto& a, const auto& b) {
                         return a.first > b.first || (a.first == b.first && a.second < b.second);
                       });
      merged.resize(static_cast<size_t>(k));
      std::sort(merged.begin(), merged.end(),
                [](const auto& a, const auto& b) { return a.second < b.second; });
    }
    top->count[i] = static_cast<int32_t>(merged.size());
    for (size_t j = 0; j < merged.size(); ++j) {
      top->ids[i * k + j] = merged[j].second;
      top->logits[i * k + j] = merged[j].first;
    }
  }
  return absl::OkStatus();
}

absl::Status TensorParallelModel::CopyStepLogitsRow(size_t row, float* logits) {
  // Each rank on its own thread (its device's), into its own part of the row.
  return OnEveryRank([&](Rank& rank) {
    return rank.model->CopyStepLogitsRow(static_cast<int64_t>(row),
                                         logits + rank.model->shard().vocab.begin);
  });
}

absl::Status TensorParallelModel::GatherStepLogits(std::span<const int32_t> rows,
                                                   std::span<const int32_t> ids, float* logits) {
  if (rows.size() != ids.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("logits to gather: ", rows.size(), " rows for ", ids.size(), " token ids"));
  }
  const int32_t vocab = config().vocab_size;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " to gather is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  return OnEveryRank([&](Rank& rank) {
    // This rank's share: the ids in its slice, as offsets into it, and where they go.
    const auto& slice = rank.model->shard().vocab;
    std::vector<int32_t> own_rows;
    std::vector<int32_t> own_ids;
    std::vector<size_t> at;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] >= slice.begin && ids[i] < slice.begin + slice.size()) {
        own_rows.push_back(rows[i]);
        own_ids.push_back(static_cast<int32_t>(ids[i] - slice.begin));
        at.push_back(i);
      }
    }
    std::vector<float> values(own_ids.size());
    RETURN_IF_ERROR(rank.model->GatherStepLogits(own_rows, own_ids, values.data()));
    for (size_t j = 0; j < at.size(); ++j) logits[at[j]] = values[j];
    return absl::OkStatus();
  });
}

void TensorParallelModel::MergeRowNormalizers(size_t row, float temperature, TopTokens* top) const {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  float max = -kInf;
  for (const Rank& rank : ranks_) max = std::max(max, rank.top.row_max[row]);  // never NaN
  // The ranks' sums (`sums` of their TopTokens) at temperature t merged.
  auto merged = [&](std::vector<double> TopTokens::*sums, float t) {
    double sum = 0.0;
    for (const Rank& rank : ranks_) {
      const float rank_max = rank.top.row_max[row];
      const double rank_sum = (rank.top.*sums)[row];
      if (max == kInf) {
        if (rank_max == kInf) sum += rank_sum;
      } else if (rank_max != -kInf) {
        sum += rank_sum * std::exp((static_cast<double>(rank_max) - static_cast<double>(max)) /
                                   static_cast<double>(t));
      }
    }
    return sum;
  };
  top->row_max[row] = max;
  top->row_exp_sum[row] = merged(&TopTokens::row_exp_sum, temperature);
  if (!top->row_exp_sum_t1.empty()) {
    top->row_exp_sum_t1[row] = merged(&TopTokens::row_exp_sum_t1, 1.0f);
  }
}

absl::Status TensorParallelModel::Forward(const StepBatch& batch, float* logits) {
  kernels::HostWork* const overlap = TakeOverlapWork();
  if (ranks_[0].kv == nullptr) {
    return absl::FailedPreconditionError("Forward before AllocateKvCache");
  }
  // Each rank computes the logits of its vocabulary slice ([R][V_r]); they are placed side by
  // side into the caller's [R][vocab] below. Unsplit, rank 0 writes the answer directly.
  const size_t num_rows = batch.logits_rows.size();
  if (size() > 1) {
    for (Rank& rank : ranks_) {
      rank.logits.SetBackend(rank.backend.get());  // a no-op after the first step
      rank.logits.Resize(num_rows * static_cast<size_t>(rank.model->shard().vocab.size()));
    }
  }
  ranks_[0].model->OverlapNextForward(overlap);
  RETURN_IF_ERROR(OnEveryRank([&](Rank& rank) {
    return rank.model->Forward(batch, *rank.kv, size() == 1 ? logits : rank.logits.data());
  }));
  if (size() > 1) {
    const size_t vocab = static_cast<size_t>(config().vocab_size);
    for (const Rank& rank : ranks_) {
      const kernels::ShardRange slice = rank.model->shard().vocab;
      const size_t width = static_cast<size_t>(slice.size());
      for (size_t i = 0; i < num_rows; ++i) {
        std::memcpy(logits + i * vocab + slice.begin, rank.logits.data() + i * width,
                    width * sizeof(float));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace glimpse::model
