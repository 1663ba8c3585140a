// The shm transport's large-message path: messages of single_copy_bytes or more are read straight
// from the sender's memory (process_vm_readv) where the node permits it, and stream through the
// ring otherwise (the fallback, forced here with single_copy_bytes = 0 or
// SWITCHYARD_SHM_SINGLE_COPY=0). Both move exact bytes, in order, matched by tag, parked when the
// receive comes late, and through the all-to-all algorithms.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "comm/alltoall/alltoall.h"
#include "comm/communicator.h"
#include "comm/error.h"
#include "comm/transport/shm/shm_transport.h"
#include "tests/comm/alltoall_cases.h"
#include "tests/comm/comm_test_util.h"

namespace switchyard::comm {
namespace {

uint8_t pattern(int src, int dst, size_t size, size_t j, int round) {
  return static_cast<uint8_t>(src * 29 + dst * 13 + size * 3 + j * 11 + round * 5 + 7);
}

// Every rank sends every rank (itself included) messages below, at and above the threshold, twice
// per size, under two tags posted in opposite orders; half the receives are posted after a
// barrier (the messages wait parked), half before.
void exchange(Communicator& comm, ShmTransport& transport, bool late_receives) {
  const int me = comm.rank();
  const int size = comm.size();
  const std::vector<size_t> sizes = {0, 1, 4095, 4096, 4097, 100000, 3 << 20};
  std::vector<std::vector<uint8_t>> sent;
  std::vector<std::vector<uint8_t>> received;
  std::vector<Request> requests;
  auto post_receives = [&] {
    for (int peer = 0; peer < size; ++peer) {
      for (int round = 1; round >= 0; --round) {
        for (size_t bytes : sizes) {
          auto& in = received.emplace_back(bytes, 0);
          requests.push_back(transport.irecv(peer, in.data(), bytes, 20 + round));
        }
      }
    }
  };
  if (!late_receives) post_receives();
  for (int peer = 0; peer < size; ++peer) {
    for (int round = 0; round < 2; ++round) {
      for (size_t bytes : sizes) {
        auto& out = sent.emplace_back(bytes);
        for (size_t j = 0; j < bytes; ++j) out[j] = pattern(me, peer, bytes, j, round);
        requests.push_back(transport.isend(peer, out.data(), bytes, 20 + round));
      }
    }
  }
  if (late_receives) {
    // What fits in the rings is there now; the peers drain it before their receives are posted.
    comm.barrier();
    post_receives();
  }
  wait_all(transport, requests, comm.timeout(), "single-copy exchange");
  size_t k = 0;
  for (int peer = 0; peer < size; ++peer) {
    for (int round = 1; round >= 0; --round) {
      for (size_t bytes : sizes) {
        const auto& in = received[k++];
        size_t wrong = 0;
        for (size_t j = 0; j < bytes; ++j) wrong += in[j] != pattern(peer, me, bytes, j, round);
        EXPECT_EQ(wrong, 0u) << bytes << "-byte message from rank " << peer << ", round "
                             << round;
      }
    }
  }
}

TEST(ShmSingleCopy, MovesExactBytesAboveTheThreshold) {
  Communicator comm(MPI_COMM_WORLD, test::test_options());
  ShmTransport transport(MPI_COMM_WORLD, ShmOptions{4096, 4, 4096});
  // Root in one pid namespace (as here and on the simulated cluster) may always use CMA.
  EXPECT_TRUE(transport.single_copy()) << transport.single_copy_status();
  EXPECT_TRUE(test::contains(transport.describe(), "single copy")) << transport.describe();
  exchange(comm, transport, false);
  exchange(comm, transport, true);
}

TEST(ShmSingleCopy, FallsBackToTheRingWhenOff) {
  Communicator comm(MPI_COMM_WORLD, test::test_options());
  {
    ShmTransport transport(MPI_COMM_WORLD, ShmOptions{4096, 4, 0});
    EXPECT_FALSE(transport.single_copy());
    EXPECT_TRUE(test::contains(transport.single_copy_status(), "off")) << transport.describe();
    exchange(comm, transport, false);
    exchange(comm, transport, true);
  }
  const char* saved = std::getenv("SWITCHYARD_SHM_SINGLE_COPY");
  const std::string old = saved ? saved : "";
  setenv("SWITCHYARD_SHM_SINGLE_COPY", "0", 1);
  {
    ShmTransport transport(MPI_COMM_WORLD, ShmOptions{4096, 4, 4096});
    EXPECT_FALSE(transport.single_copy());
    EXPECT_TRUE(test::contains(transport.single_copy_status(), "SWITCHYARD_SHM_SINGLE_COPY"))
        << transport.single_copy_status();
    exchange(comm, transport, false);
  }
  if (saved != nullptr) {
    setenv("SWITCHYARD_SHM_SINGLE_COPY", old.c_str(), 1);
  } else {
    unsetenv("SWITCHYARD_SHM_SINGLE_COPY");
  }
}

// A receive smaller than a single-copy message fails with the size mismatch, and the channel
// stays usable for the next message.
TEST(ShmSingleCopy, ReportsAMismatchedSizeAndKeepsGoing) {
  Communicator comm(MPI_COMM_WORLD, test::test_options());
  ShmTransport transport(MPI_COMM_WORLD, ShmOptions{4096, 4, 4096});
  const int to = (comm.rank() + 1) % comm.size();
  const int from = (comm.rank() + comm.size() - 1) % comm.size();
  std::vector<uint8_t> big(50000, 3), next(60000, 9);
  std::vector<uint8_t> small(40000), in(60000);
  std::vector<Request> sends = {transport.isend(to, big.data(), big.size(), 5),
                                transport.isend(to, next.data(), next.size(), 5)};
  std::vector<Request> bad = {transport.irecv(from, small.data(), small.size(), 5)};
  try {
    wait_all(transport, bad, comm.timeout(), "mismatched receive");
    ADD_FAILURE() << "a 50000-byte message filled a 40000-byte receive";
  } catch (const CommError& e) {
    EXPECT_TRUE(test::contains(e.what(), "50000-byte message")) << e.what();
  }
  std::vector<Request> good = {transport.irecv(from, in.data(), in.size(), 5)};
  wait_all(transport, good, comm.timeout(), "next receive");
  wait_all(transport, sends, comm.timeout(), "sends");
  EXPECT_EQ(in, next);
  comm.barrier();
}

// The all-to-all algorithms over shm with a low threshold, so that their messages go single copy.
TEST(ShmSingleCopy, CarriesTheAllToAll) {
  CommOptions options = test::test_options();
  options.intra_transport = "shm";
  for (const char* algorithm : {"flat", "hierarchical"}) {
    for (int per_node : {0, 2}) {
      Communicator comm(MPI_COMM_WORLD, options);
      const int n = per_node == 0 ? comm.size() : per_node;
      comm.override_topology(Topology::blocked(comm.rank(), comm.size(), n));
      auto a2a = make_alltoall(algorithm, comm);
      SCOPED_TRACE(testing::Message() << algorithm << ", " << n << " per node");
      test::run_case(comm, *a2a, {test::Scenario::random, 61, 7168 * 2, 8});
      test::run_case(comm, *a2a, {test::Scenario::all_to_all, 62, 40000, 4});
    }
  }
}

}  // namespace
}  // namespace switchyard::comm
