// Helpers shared by the comm tests.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "comm/communicator.h"
#include "comm/error.h"

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

// With each malformed value of the environment variable set, construct() must throw
// CommError(invalid_argument) naming the variable. Leaves the variable unset.
template <typename Construct>
void expect_malformed_env_refused(const char* variable, Construct construct) {
  for (const char* bad : {"abc", "-5", "12kb"}) {
    setenv(variable, bad, 1);
    try {
      construct();
      ADD_FAILURE() << variable << "=" << bad << " accepted";
    } catch (const CommError& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_TRUE(contains(e.what(), variable)) << e.what();
    }
  }
  unsetenv(variable);
}

}  // namespace switchyard::comm::test
