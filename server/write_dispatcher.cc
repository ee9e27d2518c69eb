#include "server/write_dispatcher.h"

#include <algorithm>
#include <utility>

namespace glimpse::server {

std::shared_ptr<WriteDispatcher> WriteDispatcher::Start(int num_threads) {
  std::shared_ptr<WriteDispatcher> d(new WriteDispatcher(std::max(1, num_threads)));
  for (int i = 0; i < d->num_threads_; ++i)
    d->threads_.emplace_back([raw = d.get()] { raw->Work(); });
  return d;
}

WriteDispatcher::WriteDispatcher(int num_threads) : num_threads_(num_threads) {}

WriteDispatcher::~WriteDispatcher() { Stop(); }

void WriteDispatcher::Post(std::function<void()> task) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      // A thread is woken only for the first task of an empty queue: one woken earlier, or
      // one still running tasks, takes the rest (and wakes another for a big remainder).
      wake = queue_.empty() && idle_ > 0;
      queue_.push_back(std::move(task));
      task = nullptr;
    } else {
      ++run_;
    }
  }
  if (task) {
    task();
    return;
  }
  if (wake) wake_.notify_one();
}

void WriteDispatcher::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

uint64_t WriteDispatcher::num_run() const {
  std::lock_guard<std::mutex> lock(mu_);
  return run_;
}

void WriteDispatcher::Work() {
  std::vector<std::function<void()>> batch;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (queue_.empty()) {
      if (stopping_) return;
      ++idle_;
      wake_.wait(lock, [&] { return !queue_.empty() || stopping_; });
      --idle_;
      continue;
    }
    // Take an even share of what is queued, oldest first (all of it with one thread); leave
    // the rest to the others, waking one if it sleeps.
    const size_t share =
        std::max<size_t>(16, (queue_.size() + static_cast<size_t>(num_threads_) - 1) /
                                 static_cast<size_t>(num_threads_));
    const size_t take = std::min(queue_.size(), share);
    const auto end = queue_.begin() + static_cast<std::ptrdiff_t>(take);
    batch.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(end));
    queue_.erase(queue_.begin(), end);
    const bool wake_other = !queue_.empty() && idle_ > 0;
    lock.unlock();
    if (wake_other) wake_.notify_one();
    for (std::function<void()>& task : batch) task();
    batch.clear();
    lock.lock();
    run_ += take;
  }
}

std::shared_ptr<CoalescedTask> CoalescedTask::Create(std::shared_ptr<WriteDispatcher> dispatcher,
                                                     std::function<void()> task) {
  return std::shared_ptr<CoalescedTask>(new CoalescedTask(std::move(dispatcher), std::move(task)));
}

void CoalescedTask::Signal() {
  int state = state_.load();
  while (true) {
    int next;
    if (state == kIdle) {
      next = kQueued;
    } else if (state == kRunning) {
      next = kRunningSignalled;
    } else {
      return;  // a run is queued, or will follow the current one
    }
    if (state_.compare_exchange_weak(state, next)) break;
  }
  if (state == kIdle) PostRun();
}

void CoalescedTask::PostRun() {
  dispatcher_->Post([self = shared_from_this()] { self->Run(); });
}

void CoalescedTask::Run() {
  state_.store(kRunning);  // from kQueued, which no Signal leaves
  task_();
  int state = kRunning;
  if (state_.compare_exchange_strong(state, kIdle)) return;
  // kRunningSignalled, which no Signal leaves either: run again, behind what is queued.
  state_.store(kQueued);
  PostRun();
}

int DefaultWriteThreads() {
  const unsigned cpus = std::thread::hardware_concurrency();
  return std::clamp(static_cast<int>(cpus / 8), 1, 4);
}

}  // namespace glimpse::server
