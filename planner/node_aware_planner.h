// Node-aware mode for one layer. Starts from the balance-mode placement and swaps replicas between
// nodes to cut remote nodes per token, priced exactly on the layer's routes (so experts that
// tokens use together drift onto one node), under a per-node load budget derived from the
// imbalance allowance. Each node's replicas are then packed onto its devices; a layer whose result
// misses the allowance is retried with a tighter node budget, and keeps the balance placement if
// every try misses.
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
