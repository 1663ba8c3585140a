// SWITCHYARD_COMM_THREAD_PRIORITY: parsed strictly, realtime applied to the thread where the
// system allows it, and refused with an error that says what is missing where it does not.
#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>

#include <future>
#include <string>
#include <thread>

#include "base/error.h"
#include "runtime/thread_priority.h"
#include "tests/runtime/thread_priority_test_util.h"

namespace sy = switchyard;

namespace {

using ScopedEnv = sy::testing::ScopedCommThreadPriority;
constexpr const char* kEnv = ScopedEnv::kEnv;

// Starts a thread that blocks until released (a spinning one would starve the test at real-time
// priority on a shared core) and then records its own scheduling policy.
struct ProbeThread {
  std::promise<void> go;
  int policy = -1;
  std::thread thread{[this, released = go.get_future()] {
    released.wait();
    sched_param param{};
    pthread_getschedparam(pthread_self(), &policy, &param);
  }};
  int finish() {
    go.set_value();
    thread.join();
    return policy;
  }
};

}  // namespace

TEST(ThreadPriority, ParsesTheEnvironment) {
  {
    ScopedEnv env(nullptr);
    EXPECT_EQ(sy::comm_thread_priority_from_env(), sy::ThreadPriority::normal);
  }
  {
    ScopedEnv env("normal");
    EXPECT_EQ(sy::comm_thread_priority_from_env(), sy::ThreadPriority::normal);
  }
  {
    ScopedEnv env("realtime");
    EXPECT_EQ(sy::comm_thread_priority_from_env(), sy::ThreadPriority::realtime);
  }
  ScopedEnv env("high");
  try {
    sy::comm_thread_priority_from_env();
    FAIL() << "an unknown priority was accepted";
  } catch (const sy::Error& e) {
    EXPECT_EQ(e.code(), sy::ErrorCode::invalid_argument);
    const std::string message = e.what();
    EXPECT_NE(message.find(kEnv), std::string::npos) << message;
    EXPECT_NE(message.find("'high'"), std::string::npos) << message;
    EXPECT_NE(message.find("realtime"), std::string::npos) << message;
  }
}

TEST(ThreadPriority, RealtimeRunsTheThreadUnderRoundRobin) {
  if (!sy::testing::realtime_priority_permitted())
    GTEST_SKIP() << "needs root or an RLIMIT_RTPRIO of at least 1";
  ProbeThread probe;
  sy::set_thread_priority(probe.thread, sy::ThreadPriority::realtime);
  EXPECT_EQ(probe.finish(), SCHED_RR);
}

// The same check on a short-lived thread, as a layer makes it when constructed; without the
// privilege (dropped for this thread only) it fails the same way.
TEST(ThreadPriority, RequireTriesItOnAThreadOfItsOwn) {
  EXPECT_NO_THROW(sy::require_thread_priority(sy::ThreadPriority::normal));
  {
    sy::testing::ScopedNoRealtimePrivilege no_privilege;
    EXPECT_NO_THROW(sy::require_thread_priority(sy::ThreadPriority::normal));
    try {
      sy::require_thread_priority(sy::ThreadPriority::realtime);
      ADD_FAILURE() << "real-time priority granted without the privilege";
    } catch (const sy::Error& e) {
      EXPECT_EQ(e.code(), sy::ErrorCode::unsupported);
      EXPECT_NE(std::string(e.what()).find("CAP_SYS_NICE"), std::string::npos) << e.what();
    }
  }
  if (sy::testing::realtime_priority_permitted()) {
    EXPECT_NO_THROW(sy::require_thread_priority(sy::ThreadPriority::realtime));
  }
}

TEST(ThreadPriority, NormalLeavesTheThreadAlone) {
  ProbeThread probe;
  sy::set_thread_priority(probe.thread, sy::ThreadPriority::normal);
  EXPECT_EQ(probe.finish(), SCHED_OTHER);
}

// Without the privilege (dropped for this thread only, whoever runs the test) the refusal says
// what is missing, and the thread runs on at normal priority.
TEST(ThreadPriority, ARefusalSaysWhatIsMissingAndTheThreadRunsOn) {
  sy::testing::ScopedNoRealtimePrivilege no_privilege;
  ProbeThread probe;
  try {
    sy::set_thread_priority(probe.thread, sy::ThreadPriority::realtime);
    ADD_FAILURE() << "real-time priority granted without the privilege";
  } catch (const sy::Error& e) {
    EXPECT_EQ(e.code(), sy::ErrorCode::unsupported);
    const std::string message = e.what();
    EXPECT_NE(message.find("CAP_SYS_NICE"), std::string::npos) << message;
    EXPECT_NE(message.find("RLIMIT_RTPRIO"), std::string::npos) << message;
    EXPECT_NE(message.find(kEnv), std::string::npos) << message;
  }
  EXPECT_EQ(probe.finish(), SCHED_OTHER);
}
