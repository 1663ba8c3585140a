#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/error.h"
#include "comm/transport/make_transport.h"
#include "comm/transport/mpi/mpi_transport.h"
#include "tests/comm/comm_test_util.h"
#include "tests/comm/pattern_exchange.h"

namespace switchyard::comm {
namespace {

using namespace std::chrono_literals;

// Sizes around nothing special: the mpi transport posts every message whole (or in pieces).
void exchange_patterns(Transport& transport, int rank, int size,
                       std::chrono::milliseconds timeout) {
  test::exchange_patterns(transport, rank, size, timeout, {0, 1, 13, 4096, 200000}, 7,
                          test::PostOrder::receives_first);
}

TEST(MpiTransport, ExchangesPatternsWithEveryPeer) {
  // Named for both link classes, so SWITCHYARD_INTRA / SWITCHYARD_INTER cannot swap it out.
  CommOptions options = test::test_options();
  options.intra_transport = options.inter_transport = "mpi";
  Communicator comm(MPI_COMM_WORLD, options);
  EXPECT_EQ(comm.transport().name(), "mpi");
  exchange_patterns(comm.transport(), comm.rank(), comm.size(), comm.timeout());
}

TEST(MpiTransport, SplitsMessagesIntoPieces) {
  Communicator comm(MPI_COMM_WORLD, test::test_options());
  // A 1000-byte piece limit stands in for INT_MAX: the 4096- and 200000-byte messages are split,
  // the first with a short last piece.
  MpiTransport transport(MPI_COMM_WORLD, 1000);
  exchange_patterns(transport, comm.rank(), comm.size(), comm.timeout());
}

// Inter-node MPI messages go in eager-sized pieces (communicator.cpp); SWITCHYARD_MPI_PIECE sets
// the size. Shown on a routed transport (shm inside, mpi across), which has an inter-node class
// even on one node.
TEST(MpiTransport, InterNodePiecesFollowTheEnvironment) {
  CommOptions options = test::test_options();
  options.intra_transport = "shm";
  options.inter_transport = "mpi";
  struct Case {
    const char* env;
    const char* described;
  };
  for (const Case& c :
       {Case{nullptr, "mpi (messages in pieces of <= 65024 bytes)"},
        Case{"4096", "mpi (messages in pieces of <= 4096 bytes)"}, Case{"0", "inter-node: mpi"}}) {
    if (c.env == nullptr) {
      unsetenv("SWITCHYARD_MPI_PIECE");
    } else {
      setenv("SWITCHYARD_MPI_PIECE", c.env, 1);
    }
    Communicator comm(MPI_COMM_WORLD, options);
    const std::string described = comm.transport().describe();
    EXPECT_NE(described.find(c.described), std::string::npos) << described;
    EXPECT_EQ(described.find("pieces") == std::string::npos, c.env != nullptr && *c.env == '0')
        << described;
    exchange_patterns(comm.transport(), comm.rank(), comm.size(), comm.timeout());
  }
  test::expect_malformed_env_refused("SWITCHYARD_MPI_PIECE",
                                     [&] { Communicator comm(MPI_COMM_WORLD, options); });
}

TEST(MpiTransport, RejectsBadPeersAndTags) {
  Communicator comm(MPI_COMM_WORLD, test::test_options());
  char byte = 0;
  for (int peer : {-1, comm.size()}) {
    try {
      comm.transport().isend(peer, &byte, 1, 0);
      ADD_FAILURE() << "isend to rank " << peer << " accepted";
    } catch (const CommError& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    }
  }
  EXPECT_THROW(comm.transport().irecv(0, &byte, 1, -3), CommError);
  EXPECT_THROW(comm.transport().irecv(0, nullptr, 1, 0), CommError);
}

TEST(MpiTransport, UnknownNameListsTheKnownOnes) {
  try {
    make_transport("carrier-pigeon", MPI_COMM_WORLD);
    ADD_FAILURE() << "unknown transport accepted";
  } catch (const CommError& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_TRUE(test::contains(e.what(), "carrier-pigeon")) << e.what();
    EXPECT_TRUE(test::contains(e.what(), "mpi")) << e.what();
  }
  CommOptions options = test::test_options();
  options.transport = "carrier-pigeon";
  EXPECT_THROW(Communicator(MPI_COMM_WORLD, options), CommError);
}

// Rank 0 waits on a receive its peer never sends: wait_all must give up after the timeout, name
// the peer, and cancel the receive so that it cannot swallow a later message with the same tag.
TEST(WaitAll, TimesOutNamingTheSilentPeerAndCancels) {
  Communicator sync(MPI_COMM_WORLD, test::test_options());
  CommOptions short_wait;
  short_wait.timeout = 300ms;
  Communicator comm(MPI_COMM_WORLD, short_wait);
  const int silent = comm.size() > 1 ? 1 : 0;
  constexpr int kTag = 42;
  int64_t value = -1;
  if (comm.rank() == 0) {
    std::vector<Request> requests{comm.transport().irecv(silent, &value, sizeof value, kTag)};
    const auto start = std::chrono::steady_clock::now();
    try {
      wait_all(comm.transport(), requests, comm.timeout(), "silent-peer test");
      ADD_FAILURE() << "wait_all returned although rank " << silent << " sent nothing";
    } catch (const CommError& e) {
      EXPECT_EQ(e.code(), ErrorCode::timeout);
      const std::string message = e.what();
      EXPECT_TRUE(test::contains(message, "silent-peer test")) << message;
      EXPECT_TRUE(test::contains(message, fmt::format("receives from rank(s) {} ", silent)))
          << message;
      EXPECT_TRUE(test::contains(message, "300 ms")) << message;
      EXPECT_TRUE(test::contains(message, "CommOptions::timeout")) << message;
    }
    EXPECT_GE(std::chrono::steady_clock::now() - start, 300ms);
    EXPECT_EQ(value, -1) << "the cancelled receive wrote its buffer";
  }
  sync.barrier();

  const int64_t sent = 1234;
  value = -1;
  std::vector<Request> requests;
  if (comm.rank() == 0) {
    requests.push_back(comm.transport().irecv(silent, &value, sizeof value, kTag));
  }
  if (comm.rank() == silent) {
    requests.push_back(comm.transport().isend(0, &sent, sizeof sent, kTag));
  }
  wait_all(comm.transport(), requests, sync.timeout(), "message after the timeout");
  if (comm.rank() == 0) {
    EXPECT_EQ(value, sent);
  }
  sync.barrier();
}

}  // namespace
}  // namespace switchyard::comm
