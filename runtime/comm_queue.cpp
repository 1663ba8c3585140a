#include "runtime/comm_queue.h"

#include <utility>

#include "comm/poll_pause.h"

namespace switchyard {

CommQueue::CommQueue(comm::Communicator& comm, Mode mode, ThreadPriority priority)
    : comm_(comm), mode_(mode), priority_(mode == Mode::background_thread ? priority
                                                                          : ThreadPriority::normal) {
  if (mode_ != Mode::background_thread) return;
  thread_ = std::thread([this] { run(); });
  try {
    set_thread_priority(thread_, priority_);
  } catch (...) {
    stop_thread();
    throw;
  }
}

CommQueue::~CommQueue() {
  if (mode_ == Mode::background_thread) stop_thread();
}

void CommQueue::stop_thread() {
  cancel();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_ready_.notify_all();
  thread_.join();
}

uint64_t CommQueue::submit(std::function<void()> op) {
  if (mode_ == Mode::inline_on_caller) {
    // Waits the way the thread does: overlap off and on then differ in overlap alone, not also
    // in how much CPU a waiting rank takes from the ranks that compute on shared cores.
    comm::ScopedPollPause pause(kFirstPollPause, kLongestPollPause);
    op();
    return ++submitted_;
  }
  uint64_t ticket = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(std::move(op));
    ticket = ++submitted_;
  }
  work_ready_.notify_one();
  return ticket;
}

void CommQueue::wait(uint64_t ticket) {
  if (mode_ == Mode::inline_on_caller) return;
  std::unique_lock<std::mutex> lock(mutex_);
  // Bounded: every op's waits are bounded by the communicator's timeout.
  const auto failed_by = [&] { return failure_ != nullptr && failed_ticket_ <= ticket; };
  work_done_.wait(lock, [&] { return completed_ >= ticket || failed_by(); });
  if (failed_by()) std::rethrow_exception(failure_);
}

void CommQueue::wait_all() { wait(submitted_); }

void CommQueue::cancel() noexcept {
  if (mode_ != Mode::background_thread) return;
  std::unique_lock<std::mutex> lock(mutex_);
  completed_ += queue_.size();
  queue_.clear();
  if (running_) {
    comm_.interrupt();
    work_done_.wait(lock, [&] { return !running_; });
    comm_.clear_interrupt();
  }
  failure_ = nullptr;
  failed_ticket_ = 0;
}

void CommQueue::run() {
  comm::set_poll_pause(kFirstPollPause, kLongestBackgroundPollPause);
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    work_ready_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    std::function<void()> op = std::move(queue_.front());
    queue_.pop_front();
    if (failure_ != nullptr) {  // skipped: an earlier op failed
      ++completed_;
      work_done_.notify_all();
      continue;
    }
    running_ = true;
    lock.unlock();
    std::exception_ptr failure;
    try {
      op();
    } catch (...) {
      failure = std::current_exception();
    }
    lock.lock();
    running_ = false;
    if (failure != nullptr && failure_ == nullptr) {
      failure_ = failure;
      failed_ticket_ = completed_ + 1;
    }
    ++completed_;
    work_done_.notify_all();
  }
}

}  // namespace switchyard
