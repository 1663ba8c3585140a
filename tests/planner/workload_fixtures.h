// Workloads for the planner tests: random ones with routes, and the public ones (trimmed to a few
// layers so that the test binary stays fast).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "planner/workload.h"

namespace switchyard::planner::testing {

// Deterministic random workload with routes: each token picks top_k distinct experts with
// Zipf-like popularity (exponent `skew`).
Workload random_workload(int layers, int experts, int top_k, int tokens, double skew,
                         std::uint32_t seed);

// Like random_workload with group-limited routing: experts split into `groups` contiguous groups,
// each token picks `topk_groups` groups (by summed popularity), then its top_k experts inside
// them. num_groups and topk_groups are set on the workload.
Workload random_grouped_workload(int layers, int experts, int groups, int topk_groups, int top_k,
                                 int tokens, double skew, std::uint32_t seed);

// The public workload `name` cut to its first `layers` layers, or nullopt when the shared folder
// is absent.
std::optional<Workload> public_workload(const std::string& name, int layers);

}  // namespace switchyard::planner::testing
