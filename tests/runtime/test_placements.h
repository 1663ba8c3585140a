// Placements shared by the multi-rank runtime tests.
#pragma once

#include <vector>

#include "planner/placement.h"

namespace switchyard::testing {

// Experts 0 and 1 replicated on every rank, the others placed contiguously.
inline planner::ExpertPlacement hot_experts_everywhere(int experts, int world) {
  const auto base = planner::ExpertPlacement::contiguous(experts, world);
  std::vector<std::vector<int>> replicas(experts);
  for (int e = 0; e < experts; ++e) replicas[e] = base.replicas(e);
  for (int e : {0, 1}) {
    replicas[e].clear();
    for (int d = 0; d < world; ++d) replicas[e].push_back(d);
  }
  return planner::ExpertPlacement(replicas, world);
}

}  // namespace switchyard::testing
