// Where each rank sits: world rank and size, node id, local rank, ranks per node.
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

namespace switchyard::comm {

struct Topology {
  int rank = 0;
  int size = 1;
  int node = 0;        // 0..num_nodes-1, numbered in order of each node's lowest world rank
  int num_nodes = 1;
  int local_rank = 0;  // rank inside the node
  int local_size = 1;  // ranks on this node
  std::vector<int> node_of_rank;  // node id of every world rank

  // From the launcher: ranks that share memory (MPI_Comm_split_type SHARED) form a node.
  static Topology from_mpi(MPI_Comm comm);
  // Without MPI: ranks with the same hostname form a node (hostnames[r] is rank r's), numbered
  // in order of each node's lowest rank, as from_mpi does.
  static Topology from_hostnames(int rank, const std::vector<std::string>& hostnames);
  // For tests: ranks_per_node consecutive ranks per node (the last node may hold fewer).
  static Topology blocked(int rank, int size, int ranks_per_node);

  // One line for start-up logs, e.g. "rank 3/8 node 1/2 local 1/4".
  std::string describe() const;
};

}  // namespace switchyard::comm
