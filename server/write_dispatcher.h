// Runs the Generate calls' write scheduling off the engine thread.
//
// A request's RequestStream calls its listener on the engine thread after every output. The
// work that output then needs — draining the stream, building the response messages, starting
// the gRPC write — costs ~5-10 us a call; done on the engine thread at batch 256 it adds
// milliseconds to every decode step, during which no forward pass runs (measured with
// //tools/bench:grpc_overhead_bench). So the listeners only Post that work here, and a few
// threads run it while the engine goes on with its next step.
//
// Posting is cheap for the caller (a mutex, a vector append, and a wake-up only when a thread
// sleeps). Tasks start oldest first, on whichever thread is free; a task's own caller orders its
// effects (GenerateReactor::Pump is safe on any thread and drains what its stream holds).
//
// Ownership: shared (std::shared_ptr) by its owner and whoever may still Post after the
// owner is gone. Stop() runs what is queued and joins the threads; after it, Post runs tasks
// inline on the caller's thread, so a late listener call is never lost.
// Thread-safety: Post from any thread; Stop from one thread, not a task.
#ifndef GLIMPSE_SERVER_WRITE_DISPATCHER_H_
#define GLIMPSE_SERVER_WRITE_DISPATCHER_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace glimpse::server {

class WriteDispatcher {
 public:
  // Starts `num_threads` (≥ 1) threads.
  static std::shared_ptr<WriteDispatcher> Start(int num_threads);
  ~WriteDispatcher();  // Stop()s.
  WriteDispatcher(const WriteDispatcher&) = delete;
  WriteDispatcher& operator=(const WriteDispatcher&) = delete;

  // Runs `task` on one of the threads soon (inline once stopped).
  void Post(std::function<void()> task);
  // Runs the queued tasks, then joins the threads. Idempotent.
  void Stop();

  int num_threads() const { return num_threads_; }
  // Tasks run so far (on the threads or inline).
  uint64_t num_run() const;

 private:
  explicit WriteDispatcher(int num_threads);
  void Work();

  const int num_threads_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> queue_;   // oldest first; guarded by mu_
  int idle_ = 0;                              // threads waiting on wake_; guarded by mu_
  bool stopping_ = false;                     // guarded by mu_
  uint64_t run_ = 0;                          // guarded by mu_
  std::vector<std::thread> threads_;
};

// A task run on a WriteDispatcher however often it is signalled, never twice at once and
// never left unrun after a signal: Signal() posts a run unless one is queued already; a
// signal that comes while the task runs makes it run once more afterwards (posted again,
// behind what is queued). A stream's listener signals one per call: each run drains whatever
// the stream holds by then.
// Ownership: shared; a posted run holds a reference. Thread-safety: Signal from any thread.
class CoalescedTask : public std::enable_shared_from_this<CoalescedTask> {
 public:
  static std::shared_ptr<CoalescedTask> Create(std::shared_ptr<WriteDispatcher> dispatcher,
                                               std::function<void()> task);
  void Signal();

 private:
  enum State : int { kIdle, kQueued, kRunning, kRunningSignalled };
  CoalescedTask(std::shared_ptr<WriteDispatcher> dispatcher, std::function<void()> task)
      : dispatcher_(std::move(dispatcher)), task_(std::move(task)) {}
  void PostRun();
  void Run();

  const std::shared_ptr<WriteDispatcher> dispatcher_;
  const std::function<void()> task_;
  std::atomic<int> state_{kIdle};
};

// The default thread count: one per 8 CPUs, 1 to 4.
int DefaultWriteThreads();

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_WRITE_DISPATCHER_H_
