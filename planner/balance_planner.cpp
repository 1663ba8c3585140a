#include "planner/balance_planner.h"

#include <algorithm>
#include <numeric>

#include "planner/replica_count_search.h"
#include "planner/replica_counts.h"
#include "planner/slot_packing.h"

namespace switchyard::planner {

namespace {

// Loads are sums of integer ratios: a packing counts as better only beyond rounding.
constexpr double kTolerance = 1e-9;
// A layer whose refined packing is within this fraction of the lower bound is not searched
// further: what is left to gain is below the noise of the load statistics, and the count search
// repacks every replica per trial (for dsv3 8x8 +64 it would cost seconds for the whole model).
constexpr double kGoodEnough = 2e-3;

SlotPacking pack_and_refine(std::span<const std::int64_t> load, std::vector<int> count,
                            const Topology& topo, int max_refine_steps) {
  std::vector<int> replicas;
  replicas.reserve(topo.num_slots());
  for (std::size_t e = 0; e < count.size(); ++e) {
    replicas.insert(replicas.end(), count[e], static_cast<int>(e));
  }
  SlotPacking packing(load, std::move(count), replicas, topo.num_devices(), topo.slots_per_gpu);
  packing.refine(/*move_redundant_slots=*/true, max_refine_steps);
  return packing;
}

}  // namespace

std::vector<int> initial_replica_counts(std::span<const std::int64_t> load, const Topology& topo) {
  const int num_experts = static_cast<int>(load.size());
  // More replicas than devices force duplicates on a device; only allow that when slots demand it.
  const int cap = std::max(topo.num_devices(), (topo.num_slots() + num_experts - 1) / num_experts);
  return greedy_replica_counts(load, topo.num_slots(), cap);
}

std::vector<int> plan_layer_for_balance(std::span<const std::int64_t> load, const Topology& topo,
                                        int max_refine_steps) {
  const std::vector<int> greedy = initial_replica_counts(load, topo);
  SlotPacking packing = pack_and_refine(load, greedy, topo, max_refine_steps);
  // A second start from counts chosen for how their replicas pack; kept only when it ends lower.
  const double bound = lower_bound_imbalance(load, topo.num_slots(), topo.num_devices()) *
                       std::accumulate(load.begin(), load.end(), 0.0) / topo.num_devices();
  if (topo.num_slots() > static_cast<int>(load.size()) &&
      *std::max_element(greedy.begin(), greedy.end()) <= topo.num_devices() &&
      packing.max_load() > bound * (1.0 + kGoodEnough)) {
    std::vector<int> searched = search_replica_counts(load, greedy, topo.num_devices(),
                                                      topo.slots_per_gpu, max_refine_steps);
    if (searched != greedy) {
      SlotPacking other = pack_and_refine(load, std::move(searched), topo, max_refine_steps);
      if (other.max_load() < packing.max_load() - kTolerance) packing = std::move(other);
    }
  }
  std::vector<int> row;
  row.reserve(topo.num_slots());
  for (int d = 0; d < topo.num_devices(); ++d) {
    const auto experts = packing.device_experts(d);
    row.insert(row.end(), experts.begin(), experts.end());
  }
  return row;
}

}  // namespace switchyard::planner
