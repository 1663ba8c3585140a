// Group-aligned start of node-aware mode. With group-limited routing (DeepSeek-V3: 8 expert
// groups, a token's experts in at most 4 of them) whole groups on one node bound the nodes a
// token needs by the groups it uses: EPLB's hierarchical policy packs groups onto nodes for that
// reason. Here the groups are split over the nodes so that the fewest (token, node) crossings
// result, counted exactly on the routes at group level (token t starts on device t mod G), among
// the splits whose nodes pass the caller's fit test, and the split's parts are assigned to the
// nodes that the tokens starting there need most.
#pragma once

#include <functional>
#include <span>
#include <vector>

#include "planner/topology.h"
#include "planner/workload.h"

namespace switchyard::planner {

// Whether the model's groups can be aligned with the topology's nodes: more than one group, the
// experts divide evenly into groups, the groups evenly over the nodes, and a token's experts are
// limited to fewer groups than there are.
bool groups_align_with_nodes(const Workload& workload, const Topology& topo);

// node_of_group[g] for the layer: groups / nodes groups per node. Splits are enumerated when
// there are few enough (8 groups on 2, 4 or 8 nodes: 35, 105, 1), else groups are dealt out
// heaviest first to the lightest node. `fits` gets a candidate node_of_group and says whether
// its nodes can be packed within the caller's limits: a fitting split is preferred, then the
// fewest crossings (ties: the first enumerated).
std::vector<int> align_groups_to_nodes(const Workload& workload, int layer, const Topology& topo,
                                       const std::function<bool(std::span<const int>)>& fits);

// Replicas per node for a group alignment: an expert's first replica on its group's node; further
// replicas, heaviest (load / count) first, on the same node while it has a free slot, holds fewer
// of them than it has devices and stays within `node_budget`, else on the lightest node with a
// free slot and fewer than gpus_per_node of them. Every node ends with exactly
// gpus_per_node · slots_per_gpu replicas.
std::vector<std::vector<int>> group_aligned_replicas(const Workload& workload, int layer,
                                                     const Topology& topo,
                                                     std::span<const int> count,
                                                     std::span<const int> node_of_group,
                                                     double node_budget);

// Replicas per node for a group alignment with replica counts of its own (written to `count`):
// the `max_spread` hottest experts, as long as every node other than their group's has a free
// slot, get a replica on every node, so that every token finds them on its own node and their load
// is spread evenly; the slots left over go, one at a time, to the expert already on the node with
// the most load per replica (a second replica on the same node changes no traffic and splits the
// load for packing), at most gpus_per_node replicas of an expert per node.
std::vector<std::vector<int>> group_aligned_spread_replicas(const Workload& workload, int layer,
                                                            const Topology& topo,
                                                            std::span<const int> node_of_group,
                                                            int max_spread,
                                                            std::vector<int>& count);

}  // namespace switchyard::planner
