// Private: the nodes of a topology as lists of world ranks, and the rail-aligned relay choice the
// hierarchical all-to-all makes from them. A pure function of Topology::node_of_rank, so every rank
// computes the same map without talking.
#pragma once

#include <vector>

#include "comm/bootstrap/topology.h"

namespace switchyard::comm {

class NodeMap {
 public:
  explicit NodeMap(const Topology& topology);

  int num_nodes() const { return static_cast<int>(ranks_.size()); }
  int node_of(int rank) const { return node_of_[static_cast<size_t>(rank)]; }
  // World ranks of a node, ascending; a rank's local index is its position here.
  const std::vector<int>& ranks(int node) const { return ranks_[static_cast<size_t>(node)]; }
  int local_index(int rank) const { return local_[static_cast<size_t>(rank)]; }
  // Largest number of ranks on one node (the same on every rank, unlike Topology::local_size).
  int max_node_size() const;

  // The rank of `node` that relays `source`'s traffic for that node: the source itself on its own
  // node, else the rank with the source's local index (its rail peer). A ragged node smaller than
  // the source's node has no such rank: local index mod the node's size substitutes, which spreads
  // the orphaned rails over the node's ranks evenly and is the same on every rank.
  int relay(int source, int node) const;
  // The sources `relay_rank` relays for its own node, ascending; itself always included.
  std::vector<int> relayed_by(int relay_rank) const;

 private:
  std::vector<int> node_of_;
  std::vector<int> local_;
  std::vector<std::vector<int>> ranks_;
};

}  // namespace switchyard::comm
