#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "comm/alltoall/node_map.h"
#include "comm/bootstrap/topology.h"
#include "comm/communicator.h"
#include "comm/error.h"
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

std::optional<int> env_int(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0') return std::nullopt;
  return static_cast<int>(x);
}

// The launcher's own word on where each rank sits, when it gives one, against from_mpi's (ranks
// that share memory): srun's SLURM_NODEID and SLURM_LOCALID when srun started exactly this
// communicator's ranks (SLURM_PROCID is the rank, SLURM_STEP_NUM_TASKS the size; a mpirun inside
// a Slurm job inherits its own task's values, which say nothing about the ranks), else mpirun's
// OMPI_COMM_WORLD_LOCAL_RANK and _LOCAL_SIZE. Rank 0 prints every rank's view.
TEST(Topology, FromMpiAgreesWithTheLauncher) {
  int rank = 0;
  int size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const Topology t = Topology::from_mpi(MPI_COMM_WORLD);
  const auto procid = env_int("SLURM_PROCID");
  const auto ntasks = env_int("SLURM_STEP_NUM_TASKS");
  const auto nnodes = env_int("SLURM_STEP_NUM_NODES");
  const auto nodeid = env_int("SLURM_NODEID");
  const auto localid = env_int("SLURM_LOCALID");
  const auto ompi_rank = env_int("OMPI_COMM_WORLD_RANK");
  const auto ompi_local = env_int("OMPI_COMM_WORLD_LOCAL_RANK");
  const auto ompi_local_size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE");
  const bool srun = procid && ntasks && nnodes && nodeid && localid && *procid == rank &&
                    *ntasks == size;
  const bool mpirun = !srun && ompi_rank && ompi_local && ompi_local_size && *ompi_rank == rank;
  // Every rank takes the same branch, or the collectives below would not match.
  int mine[2] = {srun ? 1 : 0, mpirun ? 1 : 0};
  int all[2] = {0, 0};
  MPI_Allreduce(mine, all, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  ASSERT_TRUE(all[0] == 0 || all[0] == size) << all[0] << " of " << size << " ranks see srun";
  ASSERT_TRUE(all[1] == 0 || all[1] == size) << all[1] << " of " << size << " ranks see mpirun";
  if (!srun && !mpirun) GTEST_SKIP() << "started by neither srun nor mpirun";

  // Per rank: launcher's node id (-1: mpirun gives none), launcher's local rank, from_mpi's.
  const int view[4] = {srun ? *nodeid : -1, srun ? *localid : *ompi_local, t.node, t.local_rank};
  std::vector<int> views(static_cast<size_t>(4 * size));
  MPI_Allgather(view, 4, MPI_INT, views.data(), 4, MPI_INT, MPI_COMM_WORLD);
  if (rank == 0) {
    for (int r = 0; r < size; ++r) {
      const int* v = &views[static_cast<size_t>(4 * r)];
      std::printf("rank %d: %s node %d local %d; from_mpi node %d local %d\n", r,
                  srun ? "srun" : "mpirun", v[0], v[1], v[2], v[3]);
    }
  }
  EXPECT_EQ(t.local_rank, view[1]);
  if (srun) {
    // Same node for the launcher if and only if the same node for from_mpi.
    EXPECT_EQ(t.num_nodes, *nnodes);
    int on_my_node = 0;
    for (int r = 0; r < size; ++r) {
      const int* v = &views[static_cast<size_t>(4 * r)];
      EXPECT_EQ(v[0] == *nodeid, t.node_of_rank[static_cast<size_t>(r)] == t.node)
          << "rank " << r << ": srun node " << v[0] << ", from_mpi node "
          << t.node_of_rank[static_cast<size_t>(r)] << " (this rank: " << *nodeid << ", "
          << t.node << ")";
      on_my_node += v[0] == *nodeid ? 1 : 0;
    }
    EXPECT_EQ(t.local_size, on_my_node);
  } else {
    EXPECT_EQ(t.local_size, *ompi_local_size);
  }
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
