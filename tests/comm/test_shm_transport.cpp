// The shm transport on its own: exact delivery with messages streamed through small rings, receives
// matched by tag whatever the arrival order, cancellation, the segment unlinked after set-up, and
// the communicator routing intra-node peers to it.
#include <dirent.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/error.h"
#include "comm/transport/shm/shm_transport.h"
#include "tests/comm/comm_test_util.h"
#include "tests/comm/pattern_exchange.h"

namespace switchyard::comm {
namespace {

// Messages from empty to many slots long, sent before their receives are posted.
void exchange_with_every_peer(Transport& transport, int rank, int size,
                              std::chrono::milliseconds timeout) {
  test::exchange_patterns(transport, rank, size, timeout, {0, 1, 999, 1000, 1001, 4096, 200000},
                          3, test::PostOrder::sends_first);
}

TEST(ShmTransport, StreamsMessagesLongerThanTheRing) {
  Communicator comm(MPI_COMM_WORLD, test::test_options());
  // 4 slots of 1000 bytes: a 200000-byte message wraps the ring 50 times.
  ShmTransport transport(MPI_COMM_WORLD, ShmOptions{1000, 4});
  EXPECT_EQ(transport.name(), "shm");
  EXPECT_TRUE(test::contains(transport.describe(), "4 slots of 1000 bytes"))
      << transport.describe();
  exchange_with_every_peer(transport, comm.rank(), comm.size(), comm.timeout());
  exchange_with_every_peer(transport, comm.rank(), comm.size(), comm.timeout());
}

// The next rank sends tags 1, 2, 3 in that order; this rank receives them as 3, 1, 2: messages
// that arrive before their receive wait in private memory, and each tag still gets its message.
TEST(ShmTransport, MatchesByTagWhateverTheOrder) {
  Communicator comm(MPI_COMM_WORLD, test::test_options());
  ShmTransport transport(MPI_COMM_WORLD, ShmOptions{64, 2});
  const int to = (comm.rank() + 1) % comm.size();
  const int from = (comm.rank() + comm.size() - 1) % comm.size();
  std::vector<std::vector<int32_t>> out(3), in(3);
  std::vector<Request> sends;
  for (int tag = 1; tag <= 3; ++tag) {
    out[static_cast<size_t>(tag - 1)].assign(static_cast<size_t>(tag) * 50, comm.rank() * 10 + tag);
    sends.push_back(transport.isend(to, out[static_cast<size_t>(tag - 1)].data(),
                                    out[static_cast<size_t>(tag - 1)].size() * sizeof(int32_t),
                                    tag));
  }
  comm.barrier();  // every message is now in a ring or waiting for ring space
  std::vector<Request> recvs;
  for (int tag : {3, 1, 2}) {
    auto& buffer = in[static_cast<size_t>(tag - 1)];
    buffer.assign(static_cast<size_t>(tag) * 50, -1);
    recvs.push_back(transport.irecv(from, buffer.data(), buffer.size() * sizeof(int32_t), tag));
  }
  recvs.insert(recvs.end(), sends.begin(), sends.end());
  wait_all(transport, recvs, comm.timeout(), "tag order test");
  for (int tag = 1; tag <= 3; ++tag) {
    EXPECT_EQ(in[static_cast<size_t>(tag - 1)],
              std::vector<int32_t>(static_cast<size_t>(tag) * 50, from * 10 + tag))
        << "tag " << tag;
  }
}

TEST(ShmTransport, CancelledReceiveNeverWritesItsBuffer) {
  Communicator comm(MPI_COMM_WORLD, test::test_options());
  ShmTransport transport(MPI_COMM_WORLD);
  int64_t value = -1;
  Request req = transport.irecv(comm.rank(), &value, sizeof value, 9);
  transport.cancel(req);
  const int64_t sent = 77;
  std::vector<Request> requests{transport.isend(comm.rank(), &sent, sizeof sent, 9)};
  int64_t later = -1;
  requests.push_back(transport.irecv(comm.rank(), &later, sizeof later, 9));
  wait_all(transport, requests, comm.timeout(), "after cancel");
  EXPECT_EQ(value, -1);
  EXPECT_EQ(later, sent);
}

TEST(ShmTransport, RejectsSizeMismatchesAndBadArguments) {
  Communicator comm(MPI_COMM_WORLD, test::test_options());
  ShmTransport transport(MPI_COMM_WORLD);
  const int64_t sent = 5;
  int32_t small = 0;
  std::vector<Request> requests{transport.isend(comm.rank(), &sent, sizeof sent, 4),
                                transport.irecv(comm.rank(), &small, sizeof small, 4)};
  try {
    wait_all(transport, requests, comm.timeout(), "size mismatch");
    ADD_FAILURE() << "an 8-byte message completed a 4-byte receive";
  } catch (const CommError& e) {
    EXPECT_EQ(e.code(), ErrorCode::internal);
    EXPECT_TRUE(test::contains(e.what(), "8-byte message")) << e.what();
  }
  for (Request& req : requests) transport.cancel(req);
  char byte = 0;
  EXPECT_THROW(transport.isend(comm.size(), &byte, 1, 0), CommError);
  EXPECT_THROW(transport.irecv(0, &byte, 1, -1), CommError);
  EXPECT_THROW(ShmTransport(MPI_COMM_WORLD, ShmOptions{0, 4}), CommError);
}

bool switchyard_segments_in_dev_shm() {
  DIR* dir = opendir("/dev/shm");
  if (dir == nullptr) return false;
  bool found = false;
  while (const dirent* entry = readdir(dir)) {
    found |= std::string(entry->d_name).rfind("switchyard-", 0) == 0;
  }
  closedir(dir);
  return found;
}

TEST(ShmTransport, LeavesNothingInDevShm) {
  Communicator comm(MPI_COMM_WORLD, test::test_options());
  {
    ShmTransport transport(MPI_COMM_WORLD);
    comm.barrier();
    EXPECT_FALSE(switchyard_segments_in_dev_shm()) << "the name outlived the set-up";
  }
  EXPECT_FALSE(switchyard_segments_in_dev_shm());
}

// Intra-node shm, inter-node mpi: with two simulated nodes per pair of ranks, the routed transport
// carries the pattern exchange over both.
TEST(ShmTransport, CommunicatorRoutesByLinkClass) {
  CommOptions options = test::test_options();
  options.intra_transport = "shm";
  Communicator comm(MPI_COMM_WORLD, options);
  comm.override_topology(Topology::blocked(comm.rank(), comm.size(), 2));
  EXPECT_EQ(comm.transport().name(), "intra=shm inter=mpi");
  EXPECT_TRUE(test::contains(comm.describe(), "intra-node: shm (")) << comm.describe();
  exchange_with_every_peer(comm.transport(), comm.rank(), comm.size(), comm.timeout());

  options.intra_transport.clear();
  options.transport = "shm";  // inter-node links cannot be shm: they fall back to mpi
  Communicator shm_everywhere(MPI_COMM_WORLD, options);
  EXPECT_EQ(shm_everywhere.transport().name(), "intra=shm inter=mpi");
}

}  // namespace
}  // namespace switchyard::comm
