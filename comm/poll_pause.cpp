#include "comm/poll_pause.h"

#include <sched.h>

#include <algorithm>
#include <thread>

namespace switchyard::comm {

namespace {
thread_local std::chrono::microseconds first_pause{0};
thread_local std::chrono::microseconds longest_pause{0};
thread_local std::chrono::microseconds next_pause{0};
}  // namespace

void set_poll_pause(std::chrono::microseconds first, std::chrono::microseconds longest) {
  first_pause = first;
  longest_pause = std::max(first, longest);
  next_pause = first;
}

void poll_pause_restart() { next_pause = first_pause; }

void poll_pause() {
  if (next_pause.count() == 0) {
    sched_yield();
    return;
  }
  std::this_thread::sleep_for(next_pause);
  next_pause = std::min(2 * next_pause, longest_pause);
}

ScopedPollPause::ScopedPollPause(std::chrono::microseconds first, std::chrono::microseconds longest)
    : saved_first_(first_pause), saved_longest_(longest_pause) {
  set_poll_pause(first, longest);
}

ScopedPollPause::~ScopedPollPause() { set_poll_pause(saved_first_, saved_longest_); }

}  // namespace switchyard::comm
