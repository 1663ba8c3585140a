// Helpers for the tests of the communication thread's priority: the environment variable set for
// a scope, and whether this process may ask for real-time priority at all.
#pragma once

#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
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

// For the scope, real-time priority is refused to what the calling thread asks for: the process's
// RLIMIT_RTPRIO is 0 and the thread's effective capabilities lack CAP_SYS_NICE (capabilities are
// per thread; the permitted set keeps it, so the destructor can restore it).
class ScopedNoRealtimePrivilege {
 public:
  ScopedNoRealtimePrivilege() {
    getrlimit(RLIMIT_RTPRIO, &saved_limit_);
    const rlimit none{0, saved_limit_.rlim_max};
    setrlimit(RLIMIT_RTPRIO, &none);
    syscall(SYS_capget, &header_, saved_caps_);
    __user_cap_data_struct lowered[2] = {saved_caps_[0], saved_caps_[1]};
    lowered[CAP_TO_INDEX(CAP_SYS_NICE)].effective &= ~CAP_TO_MASK(CAP_SYS_NICE);
    syscall(SYS_capset, &header_, lowered);
  }
  ~ScopedNoRealtimePrivilege() {
    syscall(SYS_capset, &header_, saved_caps_);
    setrlimit(RLIMIT_RTPRIO, &saved_limit_);
  }
  ScopedNoRealtimePrivilege(const ScopedNoRealtimePrivilege&) = delete;
  ScopedNoRealtimePrivilege& operator=(const ScopedNoRealtimePrivilege&) = delete;

 private:
  rlimit saved_limit_{};
  __user_cap_header_struct header_{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct saved_caps_[2]{};
};

// Root (CAP_SYS_NICE), or a real-time limit of at least 1: SCHED_RR at the lowest priority.
inline bool realtime_priority_permitted() {
  rlimit limit{};
  return geteuid() == 0 || (getrlimit(RLIMIT_RTPRIO, &limit) == 0 && limit.rlim_cur >= 1);
}

}  // namespace switchyard::testing
