#include "comm/bootstrap/topology.h"

#include <fmt/format.h>

#include <algorithm>

#include "comm/error.h"
#include "comm/transport/mpi/mpi_error.h"

namespace switchyard::comm {

Topology Topology::from_mpi(MPI_Comm comm) {
  Topology t;
  check_mpi(MPI_Comm_rank(comm, &t.rank), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(comm, &t.size), "MPI_Comm_size");

  MPI_Comm node_comm = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, t.rank, MPI_INFO_NULL, &node_comm),
            "MPI_Comm_split_type(SHARED)");
  // A node is keyed by its lowest rank in comm, which every rank of the node agrees on.
  int key = t.rank;
  int rc = MPI_Comm_rank(node_comm, &t.local_rank);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_size(node_comm, &t.local_size);
  if (rc == MPI_SUCCESS) rc = MPI_Allreduce(&t.rank, &key, 1, MPI_INT, MPI_MIN, node_comm);
  MPI_Comm_free(&node_comm);
  check_mpi(rc, "node discovery on the shared-memory communicator");

  std::vector<int> keys(static_cast<size_t>(t.size));
  check_mpi(MPI_Allgather(&key, 1, MPI_INT, keys.data(), 1, MPI_INT, comm),
            "MPI_Allgather(node keys)");
  // Sorted distinct keys give node ids in order of each node's lowest rank.
  std::vector<int> firsts = keys;
  std::sort(firsts.begin(), firsts.end());
  firsts.erase(std::unique(firsts.begin(), firsts.end()), firsts.end());
  t.num_nodes = static_cast<int>(firsts.size());
  t.node_of_rank.resize(keys.size());
  for (size_t r = 0; r < keys.size(); ++r) {
    t.node_of_rank[r] =
        static_cast<int>(std::lower_bound(firsts.begin(), firsts.end(), keys[r]) - firsts.begin());
  }
  t.node = t.node_of_rank[static_cast<size_t>(t.rank)];
  return t;
}

Topology Topology::from_hostnames(int rank, const std::vector<std::string>& hostnames) {
  const int size = static_cast<int>(hostnames.size());
  SY_ENFORCE_ARG(!(rank < 0 || rank >= size), "Topology::from_hostnames: rank {} outside [0, {})",
                 rank, size);
  Topology t;
  t.rank = rank;
  t.size = size;
  t.node_of_rank.resize(hostnames.size());
  std::vector<std::string> seen;  // hosts in order of their lowest rank
  for (size_t r = 0; r < hostnames.size(); ++r) {
    const auto it = std::find(seen.begin(), seen.end(), hostnames[r]);
    t.node_of_rank[r] = static_cast<int>(it - seen.begin());
    if (it == seen.end()) seen.push_back(hostnames[r]);
  }
  t.num_nodes = static_cast<int>(seen.size());
  t.node = t.node_of_rank[static_cast<size_t>(rank)];
  t.local_rank = static_cast<int>(std::count(t.node_of_rank.begin(),
                                             t.node_of_rank.begin() + rank, t.node));
  t.local_size = static_cast<int>(std::count(t.node_of_rank.begin(), t.node_of_rank.end(),
                                             t.node));
  return t;
}

Topology Topology::blocked(int rank, int size, int ranks_per_node) {
  SY_ENFORCE_ARG(!(size < 1 || rank < 0 || rank >= size || ranks_per_node < 1),
                 "Topology::blocked(rank {}, size {}, ranks_per_node {}): need size >= 1, 0 <= "
                 "rank < size and ranks_per_node >= 1",
                 rank, size, ranks_per_node);
  Topology t;
  t.rank = rank;
  t.size = size;
  t.node = rank / ranks_per_node;
  t.num_nodes = (size + ranks_per_node - 1) / ranks_per_node;
  t.local_rank = rank % ranks_per_node;
  t.local_size = std::min(ranks_per_node, size - t.node * ranks_per_node);
  t.node_of_rank.resize(static_cast<size_t>(size));
  for (int r = 0; r < size; ++r) t.node_of_rank[static_cast<size_t>(r)] = r / ranks_per_node;
  return t;
}

std::string Topology::describe() const {
  return fmt::format("rank {}/{} node {}/{} local {}/{}", rank, size, node, num_nodes, local_rank,
                     local_size);
}

}  // namespace switchyard::comm
