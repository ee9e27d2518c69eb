// The channel from the engine thread to one request's front end. The engine pushes
// RequestOutputs; the consumer either blocks on Next() (simple clients, tests) or registers
// a listener that is called — on the engine thread, so it must be quick and must not call
// back into the engine — whenever output is ready (the gRPC reactor uses this to start its
// next write). Cancel() is how a consumer that went away tells the engine; the engine sees
// it at the next step boundary and frees the request's blocks.
//
// Thread-safety: all methods are safe from any thread.
#ifndef GLIMPSE_SCHEDULER_REQUEST_STREAM_H_
#define GLIMPSE_SCHEDULER_REQUEST_STREAM_H_

#include <atomic>
#include <deque>
#include <functional>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "scheduler/request.h"

namespace glimpse::scheduler {

class RequestStream {
 public:
  explicit RequestStream(std::string request_id) : request_id_(std::move(request_id)) {}

  const std::string& request_id() const { return request_id_; }

  // Engine side. Pushing after the final (done) output is a bug and is ignored.
  void Push(RequestOutput output);

  // Consumer side.
  // Blocks until an output is available; returns it. After the done output, returns a done
  // output again (with the same status) forever.
  RequestOutput Next();
  // Non-blocking: the next output, if any.
  std::optional<RequestOutput> TryNext();
  // Called (engine thread) after each Push; replaces any previous listener. If outputs are
  // already waiting, it is called once right away (on the caller's thread).
  void SetListener(std::function<void()> listener);
  void Cancel() { cancelled_.store(true, std::memory_order_release); }
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }

 private:
  const std::string request_id_;
  std::atomic<bool> cancelled_{false};
  absl::Mutex mu_;
  std::deque<RequestOutput> queue_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status final_status_ ABSL_GUARDED_BY(mu_);
  std::function<void()> listener_ ABSL_GUARDED_BY(mu_);
};

}  // namespace glimpse::scheduler

#endif  // GLIMPSE_SCHEDULER_REQUEST_STREAM_H_
