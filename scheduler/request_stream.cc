#include "scheduler/request_stream.h"

#include <utility>

namespace glimpse::scheduler {

void RequestStream::Push(RequestOutput output) {
  std::function<void()> listener;
  {
    absl::MutexLock lock(&mu_);
    if (closed_) return;
    if (output.done) {
      closed_ = true;
      final_status_ = output.status;
    }
    queue_.push_back(std::move(output));
    listener = listener_;
  }
  if (listener) listener();
}

RequestOutput RequestStream::Next() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](RequestStream* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
        return !s->queue_.empty() || s->closed_;
      },
      this));
  if (queue_.empty()) {
    RequestOutput end;
    end.done = true;
    end.status = final_status_;
    return end;
  }
  RequestOutput out = std::move(queue_.front());
  queue_.pop_front();
  return out;
}

std::optional<RequestOutput> RequestStream::TryNext() {
  absl::MutexLock lock(&mu_);
  if (queue_.empty()) return std::nullopt;
  RequestOutput out = std::move(queue_.front());
  queue_.pop_front();
  return out;
}

void RequestStream::SetListener(std::function<void()> listener) {
  bool ready;
  {
    absl::MutexLock lock(&mu_);
    listener_ = listener;
    ready = !queue_.empty();
  }
  if (ready && listener) listener();
}

}  // namespace glimpse::scheduler
