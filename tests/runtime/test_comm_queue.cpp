// The layer's communication queue: ops run in order on the thread, a failure reaches the waiter and
// skips what follows, and cancel/destruction stops an op that waits on a peer that never sends
// (the test would hang until CTest's timeout otherwise: the communicator's own timeout is an hour).
#include <gtest/gtest.h>
#include <mpi.h>
#include <pthread.h>
#include <sched.h>

#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/error.h"
#include "comm/alltoall/exchange.h"
#include "runtime/comm_queue.h"
#include "tests/runtime/thread_priority_test_util.h"

namespace sy = switchyard;

namespace {

sy::comm::CommOptions patient() {
  sy::comm::CommOptions options;
  options.timeout = std::chrono::hours(1);
  return options;
}

// Waits for a message from this rank to itself that is never sent.
void wait_for_nothing(sy::comm::Communicator& comm) {
  char byte = 0;
  sy::comm::Exchange exchange(comm, nullptr, "a receive nobody answers");
  exchange.recv(comm.rank(), &byte, 1, /*tag=*/77);
  exchange.wait();
}

TEST(CommQueue, RunsOpsInOrderOnItsThread) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  sy::CommQueue queue(comm, sy::CommQueue::Mode::background_thread);
  std::vector<int> order;
  std::thread::id ran_on;
  uint64_t last = 0;
  for (int i = 0; i < 5; ++i) {
    last = queue.submit([&, i] {
      order.push_back(i);
      ran_on = std::this_thread::get_id();
    });
  }
  queue.wait(last);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_NE(ran_on, std::this_thread::get_id());
}

TEST(CommQueue, ARealtimeQueueRunsItsOpsUnderRoundRobin) {
  if (!sy::testing::realtime_priority_permitted()) {
    GTEST_SKIP() << "needs root or an RLIMIT_RTPRIO of at least 1";
  }
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  sy::CommQueue queue(comm, sy::CommQueue::Mode::background_thread,
                      sy::ThreadPriority::realtime);
  EXPECT_EQ(queue.priority(), sy::ThreadPriority::realtime);
  int policy = -1;
  queue.wait(queue.submit([&] {
    sched_param param{};
    pthread_getschedparam(pthread_self(), &policy, &param);
  }));
  EXPECT_EQ(policy, SCHED_RR);
  // Inline ops run on the caller's thread, whose priority is the caller's business.
  sy::CommQueue inline_queue(comm, sy::CommQueue::Mode::inline_on_caller,
                             sy::ThreadPriority::realtime);
  EXPECT_EQ(inline_queue.priority(), sy::ThreadPriority::normal);
}

TEST(CommQueue, AFailureReachesTheWaiterAndSkipsLaterOps) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  sy::CommQueue queue(comm, sy::CommQueue::Mode::background_thread);
  bool later_ran = false;
  const uint64_t ok = queue.submit([] {});
  const uint64_t bad = queue.submit([] { throw std::runtime_error("op 2 failed"); });
  const uint64_t later = queue.submit([&] { later_ran = true; });
  EXPECT_NO_THROW(queue.wait(ok));
  try {
    queue.wait(later);
    ADD_FAILURE() << "the failure of op " << bad << " was not reported";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "op 2 failed");
  }
  EXPECT_FALSE(later_ran);
  // After cancel the queue works again.
  queue.cancel();
  bool ran = false;
  queue.wait(queue.submit([&] { ran = true; }));
  EXPECT_TRUE(ran);
}

TEST(CommQueue, CancelInterruptsAWaitOnASilentPeer) {
  sy::comm::Communicator comm(MPI_COMM_WORLD, patient());
  sy::CommQueue queue(comm, sy::CommQueue::Mode::background_thread);
  bool queued_ran = false;
  queue.submit([&] { wait_for_nothing(comm); });
  queue.submit([&] { queued_ran = true; });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  queue.cancel();
  EXPECT_FALSE(queued_ran);
  EXPECT_FALSE(comm.interrupted().load());
}

TEST(CommQueue, TheInterruptedOpReportsAbortedToItsWaiter) {
  sy::comm::Communicator comm(MPI_COMM_WORLD, patient());
  sy::CommQueue queue(comm, sy::CommQueue::Mode::background_thread);
  const uint64_t op = queue.submit([&] { wait_for_nothing(comm); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  comm.interrupt();
  try {
    queue.wait(op);
    ADD_FAILURE() << "an interrupted wait completed";
  } catch (const sy::comm::CommError& e) {
    EXPECT_EQ(e.code(), sy::comm::ErrorCode::aborted) << e.what();
    EXPECT_NE(std::string(e.what()).find("a receive nobody answers"), std::string::npos)
        << e.what();
  }
  comm.clear_interrupt();
}

TEST(CommQueue, DestructionStopsARunningOp) {
  sy::comm::Communicator comm(MPI_COMM_WORLD, patient());
  {
    sy::CommQueue queue(comm, sy::CommQueue::Mode::background_thread);
    queue.submit([&] { wait_for_nothing(comm); });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  SUCCEED() << "the queue was destroyed with an op waiting on a silent peer";
}

TEST(CommQueue, InlineRunsAtOnceAndThrowsFromSubmit) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  sy::CommQueue queue(comm, sy::CommQueue::Mode::inline_on_caller);
  std::thread::id ran_on;
  queue.wait(queue.submit([&] { ran_on = std::this_thread::get_id(); }));
  EXPECT_EQ(ran_on, std::this_thread::get_id());
  EXPECT_THROW(queue.submit([] { throw std::runtime_error("inline failure"); }),
               std::runtime_error);
}

}  // namespace
