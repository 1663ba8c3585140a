// Runs a layer's communication (all-to-all calls) in the order it was submitted, either on a
// thread of its own, so that transfers keep moving while the caller computes (every transport
// progresses only while it is polled), or at once on the caller's thread (overlap off).
//
// One thread uses the communicator at a time: between a submit and the wait that covers every
// op submitted, the caller must not communicate itself. Every rank must submit the same ops in the
// same order (they are collective).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

#include "comm/communicator.h"
#include "runtime/thread_priority.h"

namespace switchyard {

class CommQueue {
 public:
  // Between polls of an op: from short (a reply that is nearly there) to long enough that waking
  // up costs the compute little, yet short against the time a socket buffer's worth of data takes
  // on a link (~1 ms for 128 KiB at 1 Gbit/s).
  static constexpr std::chrono::microseconds kFirstPollPause{20};
  static constexpr std::chrono::microseconds kLongestPollPause{500};
  // The background thread's waits run while the caller computes, so it may sleep longer: each
  // wake-up preempts a compute thread where ranks share cores, and a 2 ms pause still leaves the
  // socket buffers well filled on the links measured (2 × 2 simulated cluster: forward η median
  // 0.77 against 0.74 at 500 µs, README). The caller's own waits stay short: nothing hides them.
  static constexpr std::chrono::microseconds kLongestBackgroundPollPause{2000};

  enum class Mode { inline_on_caller, background_thread };

  // background_thread starts the thread at once, with `priority` (inline: ignored); throws
  // Error(unsupported), with no thread left running, when the system refuses that priority. Both
  // modes sleep between polls (comm::set_poll_pause) so that a wait takes little CPU from compute.
  CommQueue(comm::Communicator& comm, Mode mode,
            ThreadPriority priority = ThreadPriority::normal);
  // Cancels whatever is still queued or running, then joins the thread.
  ~CommQueue();
  CommQueue(const CommQueue&) = delete;
  CommQueue& operator=(const CommQueue&) = delete;

  Mode mode() const { return mode_; }
  ThreadPriority priority() const { return priority_; }

  // Queues op and returns its ticket (1, 2, ...). Inline: runs op before returning, and an
  // exception from it propagates from here.
  uint64_t submit(std::function<void()> op);
  // Blocks until op `ticket` has run. If that op or an earlier one failed, rethrows the first
  // failure: once an op fails, the later ones are skipped (they would wait on peers that have
  // stopped) and report that failure too.
  void wait(uint64_t ticket);
  // wait() for every op submitted so far.
  void wait_all();
  // For unwinding after a failure on the caller's side: drops the queued ops, interrupts the
  // running one (its transfers are cancelled, comm::Communicator::interrupt) and returns once the
  // thread is idle, so that nothing writes the caller's buffers afterwards. Forgets the failure
  // state: the queue accepts ops again (though the peers of an interrupted op are left behind, see
  // Communicator::interrupt).
  void cancel() noexcept;

 private:
  void run();
  void stop_thread();

  comm::Communicator& comm_;
  const Mode mode_;
  const ThreadPriority priority_;
  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable work_done_;
  std::deque<std::function<void()>> queue_;
  uint64_t submitted_ = 0;
  uint64_t completed_ = 0;  // ops run or skipped, in ticket order
  bool running_ = false;
  bool stop_ = false;
  std::exception_ptr failure_;
  uint64_t failed_ticket_ = 0;  // the op that failed first
  std::thread thread_;
};

}  // namespace switchyard
