// Balance mode for one layer: replica counts and packing decided together. Greedy counts give the
// starting point, the packing's local search may then move redundant slots between experts when
// that lowers the most loaded device further than swapping replicas can.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "planner/topology.h"

namespace switchyard::planner {

// phy2log row (num_slots entries) minimising the layer's max device load.
std::vector<int> plan_layer_for_balance(std::span<const std::int64_t> load, const Topology& topo,
                                        int max_refine_steps);

// Replica counts capped so that no expert needs two replicas on one device.
std::vector<int> initial_replica_counts(std::span<const std::int64_t> load, const Topology& topo);

}  // namespace switchyard::planner
