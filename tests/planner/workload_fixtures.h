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

// The public workload `name` cut to its first `layers` layers, or nullopt when the shared folder
// is absent.
std::optional<Workload> public_workload(const std::string& name, int layers);

}  // namespace switchyard::planner::testing
