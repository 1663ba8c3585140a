// A group of ranks: its topology, its transport, the default timeout for every wait on a peer, and
// the small bounded collectives (all-reduce, barrier) the runtime needs besides the all-to-all.
#pragma once

#include <mpi.h>

#include <chrono>
#include <memory>
#include <string>

#include "comm/topology.h"
#include "comm/transport.h"

namespace switchyard::comm {

struct CommOptions {
  std::string transport = "mpi";
  std::chrono::milliseconds timeout{std::chrono::seconds(120)};
};

class Communicator {
 public:
  // Duplicates comm, so switchyard's traffic never matches the caller's messages.
  explicit Communicator(MPI_Comm comm, CommOptions options = {});
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return topology_.rank; }
  int size() const { return topology_.size; }
  const Topology& topology() const { return topology_; }
  Transport& transport() { return *transport_; }
  std::chrono::milliseconds timeout() const { return options_.timeout; }
  // Replaces the discovered topology (tests simulate several nodes on one machine).
  void override_topology(const Topology& topology);

  // In-place sum over all ranks (MPI_Iallreduce polled against the timeout).
  void allreduce_sum(double* data, size_t count);
  void allreduce_sum(float* data, size_t count);
  void allreduce_sum(int64_t* data, size_t count);
  void barrier();

 private:
  void wait(MPI_Request& request, const char* what);

  MPI_Comm comm_ = MPI_COMM_NULL;
  CommOptions options_;
  Topology topology_;
  std::unique_ptr<Transport> transport_;
};

}  // namespace switchyard::comm
