#include "runtime/thread_priority.h"

#include <pthread.h>
#include <sched.h>

#include <cstdlib>
#include <cstring>
#include <future>
#include <string>

#include <fmt/format.h>

#include "base/error.h"
#include "runtime/environment.h"

namespace switchyard {

namespace {
constexpr const char* kEnv = environment::kCommThreadPriority;
}  // namespace

ThreadPriority comm_thread_priority_from_env() {
  return environment::comm_thread_priority();
}

const char* thread_priority_name(ThreadPriority priority) {
  return priority == ThreadPriority::realtime ? "realtime" : "normal";
}

void set_thread_priority(std::thread& thread, ThreadPriority priority) {
  if (priority == ThreadPriority::normal) return;
  sched_param param{};
  param.sched_priority = sched_get_priority_min(SCHED_RR);
  const int rc = pthread_setschedparam(thread.native_handle(), SCHED_RR, &param);
  SY_ENFORCE(rc == 0, ErrorCode::unsupported,
             "{}=realtime: the system refused real-time priority (SCHED_RR {}) to the "
             "communication thread: {}. It needs CAP_SYS_NICE (e.g. root) or an RLIMIT_RTPRIO of "
             "at least {} (`ulimit -r`, rtprio in /etc/security/limits.conf); or unset {}",
             kEnv, param.sched_priority, std::strerror(rc), param.sched_priority, kEnv);
}

void require_thread_priority(ThreadPriority priority) {
  if (priority == ThreadPriority::normal) return;
  // The probe blocks rather than spins: at real-time priority a spinning thread would starve the
  // caller where both share a core (a rank bound to one).
  std::promise<void> release;
  std::thread probe([done = release.get_future()] { done.wait(); });
  try {
    set_thread_priority(probe, priority);
  } catch (...) {
    release.set_value();
    probe.join();
    throw;
  }
  release.set_value();
  probe.join();
}

}  // namespace switchyard
