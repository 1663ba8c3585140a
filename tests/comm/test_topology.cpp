#include <gtest/gtest.h>

#include "comm/communicator.h"
#include "comm/error.h"
#include "comm/node_map.h"
#include "comm/topology.h"
#include "tests/comm/comm_test_util.h"

namespace switchyard::comm {
namespace {

TEST(Topology, FromMpiSeesOneMachineAsOneNode) {
  int rank = 0;
  int size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const Topology t = Topology::from_mpi(MPI_COMM_WORLD);
  EXPECT_EQ(t.rank, rank);
  EXPECT_EQ(t.size, size);
  EXPECT_EQ(t.node, 0);
  EXPECT_EQ(t.num_nodes, 1);
  EXPECT_EQ(t.local_rank, rank);
  EXPECT_EQ(t.local_size, size);
  EXPECT_EQ(t.node_of_rank, std::vector<int>(static_cast<size_t>(size), 0));

  Communicator comm(MPI_COMM_WORLD, test::test_options());
  EXPECT_EQ(comm.topology().describe(), t.describe());
}

struct BlockedCase {
  int rank, size, per_node;
  int node, num_nodes, local_rank, local_size;
};

TEST(Topology, BlockedShapes) {
  const BlockedCase cases[] = {
      {0, 1, 1, 0, 1, 0, 1}, {3, 8, 4, 0, 2, 3, 4}, {4, 8, 4, 1, 2, 0, 4}, {7, 8, 4, 1, 2, 3, 4},
      {4, 5, 2, 2, 3, 0, 1}, {3, 5, 2, 1, 3, 1, 2}, {2, 3, 8, 0, 1, 2, 3}, {5, 6, 1, 5, 6, 0, 1},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(testing::Message()
                 << "rank " << c.rank << " size " << c.size << " per node " << c.per_node);
    const Topology t = Topology::blocked(c.rank, c.size, c.per_node);
    EXPECT_EQ(t.rank, c.rank);
    EXPECT_EQ(t.size, c.size);
    EXPECT_EQ(t.node, c.node);
    EXPECT_EQ(t.num_nodes, c.num_nodes);
    EXPECT_EQ(t.local_rank, c.local_rank);
    EXPECT_EQ(t.local_size, c.local_size);
    ASSERT_EQ(t.node_of_rank.size(), static_cast<size_t>(c.size));
    for (int r = 0; r < c.size; ++r)
      EXPECT_EQ(t.node_of_rank[static_cast<size_t>(r)], r / c.per_node);
  }
}

TEST(Topology, BlockedRejectsImpossibleShapes) {
  for (auto [rank, size, per_node] : {std::tuple{0, 0, 1}, {2, 2, 1}, {-1, 2, 1}, {0, 4, 0}}) {
    try {
      Topology::blocked(rank, size, per_node);
      ADD_FAILURE() << "accepted rank " << rank << " size " << size << " per node " << per_node;
    } catch (const CommError& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    }
  }
}

TEST(Topology, Describe) {
  EXPECT_EQ(Topology::blocked(3, 8, 4).describe(), "rank 3/8 node 0/2 local 3/4");
  EXPECT_EQ(Topology::blocked(5, 8, 4).describe(), "rank 5/8 node 1/2 local 1/4");
}

TEST(Topology, OverrideMustMatchTheCommunicator) {
  Communicator comm(MPI_COMM_WORLD, test::test_options());
  const Topology simulated = Topology::blocked(comm.rank(), comm.size(), 2);
  comm.override_topology(simulated);
  EXPECT_EQ(comm.topology().num_nodes, simulated.num_nodes);
  EXPECT_EQ(comm.topology().node, comm.rank() / 2);
  EXPECT_THROW(comm.override_topology(Topology::blocked(0, comm.size() + 1, 2)), CommError);
}

// 5 ranks, 2 per node: nodes {0, 1}, {2, 3}, {4}. Rail peers share the local rank; the one-rank
// node stands in for both rails of the others (local rank mod 1), and rank 3's rail on node 0 is
// rank 1.
TEST(NodeMap, RailAlignedRelaysWithRaggedNodes) {
  const NodeMap nodes(Topology::blocked(0, 5, 2));
  EXPECT_EQ(nodes.num_nodes(), 3);
  EXPECT_EQ(nodes.max_node_size(), 2);
  EXPECT_EQ(nodes.ranks(2), std::vector<int>{4});
  EXPECT_EQ(nodes.relay(1, 0), 1);  // own node: no relay
  EXPECT_EQ(nodes.relay(1, 1), 3);
  EXPECT_EQ(nodes.relay(1, 2), 4);
  EXPECT_EQ(nodes.relay(4, 0), 0);
  EXPECT_EQ(nodes.relay(3, 0), 1);
  EXPECT_EQ(nodes.relayed_by(0), (std::vector<int>{0, 2, 4}));
  EXPECT_EQ(nodes.relayed_by(1), (std::vector<int>{1, 3}));
  EXPECT_EQ(nodes.relayed_by(4), (std::vector<int>{0, 1, 2, 3, 4}));
}

}  // namespace
}  // namespace switchyard::comm
