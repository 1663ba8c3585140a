// Re-planning against a running placement: moving an expert costs a weight transfer, so a new
// layer placement is relabelled to overlap the current one as much as possible, and a layer is
// only re-planned when the gain is worth it.
#pragma once

#include <span>
#include <vector>

#include "planner/topology.h"

namespace switchyard::planner {

// Replicas in `to` that the same device did not hold in `from` (multiset difference per device).
int moved_replicas(std::span<const int> from, std::span<const int> to, const Topology& topo);

// `row` with its devices renumbered (and each device's slots reordered) to keep as many replicas
// as possible where `current` has them. Balance only depends on the multiset per device, so any
// device may be renumbered; with `keep_nodes` devices are renumbered only within their node,
// since which node holds an expert decides the traffic.
std::vector<int> align_to_current(std::span<const int> row, std::span<const int> current,
                                  const Topology& topo, bool keep_nodes);

}  // namespace switchyard::planner
