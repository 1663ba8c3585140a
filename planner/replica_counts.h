// How many replicas each expert gets. Giving the next slot to the expert with the highest load per
// replica minimises max_e load_e / count_e for any number of slots, so the same greedy gives both
// the planner's starting counts and the scoring lower bound.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace switchyard::planner {

// Counts summing to num_slots, each in [1, max_per_expert]; ties go to the lower expert id.
// Throws Error(invalid_argument) when num_slots < E or num_slots > E · max_per_expert.
std::vector<int> greedy_replica_counts(std::span<const std::int64_t> load, int num_slots,
                                       int max_per_expert);

// The workloads README's lower_bound_imb of one layer: min over replica counts of
// max_e load_e / count_e, over the mean device load, and never below 1.
double lower_bound_imbalance(std::span<const std::int64_t> load, int num_slots, int num_devices);

}  // namespace switchyard::planner
