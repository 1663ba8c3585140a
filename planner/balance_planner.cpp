#include "planner/balance_planner.h"

#include <algorithm>

#include "planner/replica_counts.h"
#include "planner/slot_packing.h"

namespace switchyard::planner {

std::vector<int> initial_replica_counts(std::span<const std::int64_t> load, const Topology& topo) {
  const int num_experts = static_cast<int>(load.size());
  // More replicas than devices force duplicates on a device; only allow that when slots demand it.
  const int cap = std::max(topo.num_devices(), (topo.num_slots() + num_experts - 1) / num_experts);
  return greedy_replica_counts(load, topo.num_slots(), cap);
}

std::vector<int> plan_layer_for_balance(std::span<const std::int64_t> load, const Topology& topo,
                                        int max_refine_steps) {
  std::vector<int> count = initial_replica_counts(load, topo);
  std::vector<int> replicas;
  replicas.reserve(topo.num_slots());
  for (std::size_t e = 0; e < count.size(); ++e) replicas.insert(replicas.end(), count[e], static_cast<int>(e));
  SlotPacking packing(load, std::move(count), replicas, topo.num_devices(), topo.slots_per_gpu);
  packing.refine(/*move_redundant_slots=*/true, max_refine_steps);
  std::vector<int> row;
  row.reserve(topo.num_slots());
  for (int d = 0; d < topo.num_devices(); ++d) {
    const auto experts = packing.device_experts(d);
    row.insert(row.end(), experts.begin(), experts.end());
  }
  return row;
}

}  // namespace switchyard::planner
