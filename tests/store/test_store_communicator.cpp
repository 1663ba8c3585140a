// The Communicator made without MPI: ranks (threads here) meet at the TCP store, derive the
// topology from hostnames, and all-reduce, barrier and exchange messages over UCX.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/error.h"

namespace {

using namespace switchyard::comm;
using namespace std::chrono_literals;

// A port nobody listens on right now (the kernel's pick for port 0).
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(addr);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length);
  close(fd);
  return ntohs(addr.sin_port);
}

StoreOptions options_for(int rank, int size, int port) {
  StoreOptions o;
  o.master_addr = "127.0.0.1";
  o.master_port = port;
  o.rank = rank;
  o.world_size = size;
  o.secret = "communicator-test-secret";
  o.timeout = 20s;
  return o.resolved();
}

// Runs body(comm) on `size` ranks, one thread each, and rethrows the first failure.
template <typename Body>
void on_ranks(int size, Body body) {
  const int port = free_port();
  std::vector<std::exception_ptr> errors(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      try {
        CommOptions options;
        options.timeout = 20s;
        Communicator comm(options_for(r, size, port), options);
        body(comm);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

constexpr int kSize = 3;

TEST(StoreCommunicator, TopologyAllreduceBarrierAndMessages) {
  on_ranks(kSize, [](Communicator& comm) {
    const int r = comm.rank();
    EXPECT_EQ(comm.size(), kSize);
    EXPECT_EQ(comm.topology().num_nodes, 1);  // one host
    EXPECT_EQ(comm.topology().local_rank, r);
    EXPECT_EQ(comm.topology().local_size, kSize);
    EXPECT_EQ(comm.transport().name(), "ucx");

    std::vector<double> d{1.0 * r, 0.1 * (r + 1)};
    comm.allreduce_sum(d.data(), d.size());
    EXPECT_EQ(d[0], 3.0);
    EXPECT_EQ(d[1], (0.1 * 1 + 0.1 * 2) + 0.1 * 3);  // rank order: the same bits everywhere
    std::vector<float> f{static_cast<float>(r + 1)};
    comm.allreduce_sum(f.data(), f.size());
    EXPECT_EQ(f[0], 6.0f);
    std::vector<int64_t> i(1000, r);
    comm.allreduce_sum(i.data(), i.size());
    EXPECT_EQ(i[999], 3);
    comm.barrier();

    // A ring over the transport.
    int got = -1;
    const int next = (r + 1) % kSize;
    const int prev = (r + kSize - 1) % kSize;
    std::vector<Request> requests{comm.transport().isend(next, &r, sizeof(r), 7),
                                  comm.transport().irecv(prev, &got, sizeof(got), 7)};
    wait_all(comm.transport(), requests, comm.timeout(), "ring");
    EXPECT_EQ(got, prev);
  });
}

TEST(StoreCommunicator, NonUcxTransportIsRefused) {
  CommOptions options;
  options.intra_transport = "shm";
  try {
    Communicator comm(options_for(0, 1, 0), options);
    FAIL() << "shm accepted without MPI";
  } catch (const CommError& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("needs MPI"), std::string::npos) << e.what();
  }
}

TEST(StoreCommunicator, MissingSecretSaysWhatToSet) {
  StoreOptions o;
  o.master_addr = "127.0.0.1";
  o.master_port = 1234;
  o.rank = 0;
  o.world_size = 2;
  unsetenv("SWITCHYARD_JOB_SECRET");
  try {
    (void)o.resolved();
    FAIL() << "no secret accepted";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("SWITCHYARD_JOB_SECRET"), std::string::npos);
  }
}

}  // namespace
