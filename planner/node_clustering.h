// First guess of which node holds each replica in node-aware mode: experts that tokens use
// together are gathered on one node. Local search from the balance placement only ever swaps a
// few replicas at a time and stalls far from such a grouping (dsv3 8x8: 4.46 remote nodes per
// token against 3.48 for EPLB's group-per-node policy), so the search starts from a clustering
// instead.
#pragma once

#include <span>
#include <vector>

#include "planner/topology.h"
#include "planner/workload.h"

namespace switchyard::planner {

// node_replicas[n]: the experts whose replicas node n holds (one entry per replica), exactly
// gpus_per_node · slots_per_gpu per node, an expert's replicas spread over nodes as evenly as
// free slots allow (so each node can give them distinct devices). Replicas are placed heaviest first (weight load / count), each on the node whose
// experts it is co-activated with most (tokens that route to both), among nodes with a free slot
// whose load stays within `node_budget`; when none stays within it, on the least loaded node.
std::vector<std::vector<int>> cluster_replicas_by_node(const Workload& workload, int layer,
                                                       const Topology& topo,
                                                       std::span<const int> count,
                                                       double node_budget);

}  // namespace switchyard::planner
