// Helpers shared by the comm tests.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "comm/communicator.h"

namespace switchyard::comm::test {

// Generous, but bounded: a rank that fails an expectation and skips a call makes its peers time
// out with a CommError instead of hanging the test.
inline CommOptions test_options() {
  CommOptions options;
  options.timeout = std::chrono::seconds(10);
  return options;
}

// A communicator with this intra-node transport ("" = the default) whose ranks are split into
// simulated nodes of ranks_per_node consecutive ranks (0: all ranks on one node).
inline std::unique_ptr<Communicator> simulated_communicator(const std::string& intra,
                                                            int ranks_per_node) {
  CommOptions options = test_options();
  options.intra_transport = intra;
  auto comm = std::make_unique<Communicator>(MPI_COMM_WORLD, options);
  const int per_node = ranks_per_node == 0 ? comm->size() : ranks_per_node;
  comm->override_topology(Topology::blocked(comm->rank(), comm->size(), per_node));
  return comm;
}

inline bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

}  // namespace switchyard::comm::test
