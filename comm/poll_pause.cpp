#include "comm/poll_pause.h"

#include <sched.h>

#include <thread>

namespace switchyard::comm {

namespace {
thread_local std::chrono::microseconds this_thread_pause{0};
}  // namespace

void set_poll_pause(std::chrono::microseconds pause) { this_thread_pause = pause; }

std::chrono::microseconds poll_pause_of_this_thread() { return this_thread_pause; }

void poll_pause() {
  if (this_thread_pause.count() > 0) {
    std::this_thread::sleep_for(this_thread_pause);
  } else {
    sched_yield();
  }
}

}  // namespace switchyard::comm
