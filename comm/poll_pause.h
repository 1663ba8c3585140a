// How a thread that polls transfers gives the core away between polls. Ranks oversubscribe the
// cores, so a busy poll would starve the peers being waited on; the default is sched_yield. A
// background communication thread (a pipelined MoE step) instead sleeps, starting short and
// doubling up to a bound while a wait goes on, so that it takes little from the compute threads of
// its own rank and of the others while the kernel's socket buffers and the peers keep the data
// moving.
#pragma once

#include <chrono>

namespace switchyard::comm {

// For the calling thread: first = 0 yields (the default); > 0 sleeps first, then twice as long
// after every further poll of the same wait, up to longest.
void set_poll_pause(std::chrono::microseconds first, std::chrono::microseconds longest);

// Every wait loop calls poll_pause_restart() when it starts and poll_pause() after a poll that
// left requests pending.
void poll_pause_restart();
void poll_pause();

// set_poll_pause for a scope; restores the thread's previous pauses when it ends.
class ScopedPollPause {
 public:
  ScopedPollPause(std::chrono::microseconds first, std::chrono::microseconds longest);
  ~ScopedPollPause();
  ScopedPollPause(const ScopedPollPause&) = delete;
  ScopedPollPause& operator=(const ScopedPollPause&) = delete;

 private:
  std::chrono::microseconds saved_first_;
  std::chrono::microseconds saved_longest_;
};

}  // namespace switchyard::comm
