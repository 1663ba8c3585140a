// Node-aware mode for one layer. Starts from a placement of replicas on nodes that keeps experts
// used together on one node: whole expert groups per node when routing is group-limited (the
// hottest experts replicated on every node when there are redundant slots, so every token finds
// them at home), else a co-activation clustering. Nodes that cannot pack under the device limit
// are repaired by the cheapest swaps, then replicas are swapped between nodes while that lowers
// the remote crossings, priced exactly on the layer's routes. Each node's replicas are then packed
// onto its devices; a layer whose result misses the allowance is retried with a tighter limit,
// and keeps the balance placement if every try misses.
#pragma once

#include <span>
#include <vector>

#include "planner/topology.h"
#include "planner/workload.h"

namespace switchyard::planner {

// `balance_row`: the layer's balance-mode phy2log row. The result's imbalance is at most the
// balance row's plus `epsilon`, and its remote nodes per token never higher.
std::vector<int> plan_layer_node_aware(const Workload& workload, int layer, const Topology& topo,
                                       std::span<const int> balance_row, double epsilon,
                                       int max_refine_steps);

}  // namespace switchyard::planner
