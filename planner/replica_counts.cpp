#include "planner/replica_counts.h"

#include <algorithm>
#include <numeric>
#include <queue>
#include <string>
#include <utility>

#include "base/error.h"

namespace switchyard::planner {

std::vector<int> greedy_replica_counts(std::span<const std::int64_t> load, int num_slots,
                                       int max_per_expert) {
  const int num_experts = static_cast<int>(load.size());
  if (num_slots < num_experts ||
      static_cast<std::int64_t>(num_slots) >
          static_cast<std::int64_t>(num_experts) * max_per_expert) {
    throw Error(ErrorCode::invalid_argument,
                "replica counts: " + std::to_string(num_slots) + " slots cannot hold " +
                    std::to_string(num_experts) + " experts with 1 to " +
                    std::to_string(max_per_expert) + " replicas each");
  }
  std::vector<int> count(num_experts, 1);
  // Max-heap on load per replica; among equal ratios the lower expert id wins (deterministic).
  auto less = [&](int a, int b) {
    const double ra = static_cast<double>(load[a]) / count[a];
    const double rb = static_cast<double>(load[b]) / count[b];
    return ra != rb ? ra < rb : a > b;
  };
  std::priority_queue<int, std::vector<int>, decltype(less)> heap(less);
  for (int e = 0; e < num_experts; ++e) heap.push(e);
  for (int extra = num_slots - num_experts; extra > 0;) {
    const int e = heap.top();
    heap.pop();
    if (count[e] >= max_per_expert) continue;
    ++count[e];
    --extra;
    heap.push(e);
  }
  return count;
}

double lower_bound_imbalance(std::span<const std::int64_t> load, int num_slots, int num_devices) {
  const std::int64_t total = std::accumulate(load.begin(), load.end(), std::int64_t{0});
  if (total == 0) return 1.0;
  const std::vector<int> count = greedy_replica_counts(load, num_slots, num_slots);
  double worst = 0.0;
  for (std::size_t e = 0; e < load.size(); ++e) {
    worst = std::max(worst, static_cast<double>(load[e]) / count[e]);
  }
  const double mean = static_cast<double>(total) / num_devices;
  return std::max(1.0, worst / mean);
}

}  // namespace switchyard::planner
