// Helpers for the tests of the communication thread's priority: the environment variable set for
// a scope, and whether this process may ask for real-time priority at all.
#pragma once

#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace switchyard::testing {

// Sets SWITCHYARD_COMM_THREAD_PRIORITY (nullptr: unsets it) for the scope, then restores it.
class ScopedCommThreadPriority {
 public:
  static constexpr const char* kEnv = "SWITCHYARD_COMM_THREAD_PRIORITY";

  explicit ScopedCommThreadPriority(const char* value) {
    if (const char* old = std::getenv(kEnv)) {
      saved_ = old;
      had_ = true;
    }
    if (value != nullptr) {
      setenv(kEnv, value, 1);
    } else {
      unsetenv(kEnv);
    }
  }
  ~ScopedCommThreadPriority() {
    if (had_) {
      setenv(kEnv, saved_.c_str(), 1);
    } else {
      unsetenv(kEnv);
    }
  }
  ScopedCommThreadPriority(const ScopedCommThreadPriority&) = delete;
  ScopedCommThreadPriority& operator=(const ScopedCommThreadPriority&) = delete;

 private:
  std::string saved_;
  bool had_ = false;
};

// Root (CAP_SYS_NICE), or a real-time limit of at least 1: SCHED_RR at the lowest priority.
inline bool realtime_priority_permitted() {
  rlimit limit{};
  return geteuid() == 0 || (getrlimit(RLIMIT_RTPRIO, &limit) == 0 && limit.rlim_cur >= 1);
}

}  // namespace switchyard::testing
