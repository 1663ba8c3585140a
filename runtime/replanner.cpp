#include "runtime/replanner.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "base/error.h"
#include "planner/balance_planner.h"
#include "planner/migration.h"

namespace switchyard {

namespace {

// Devices numbered node by node; a ragged machine is planned as one node.
planner::Topology topology_for(int num_experts, int num_devices, int num_nodes, int redundant) {
  require(redundant >= 0, fmt::format("ReplanOptions.redundant_slots must be >= 0, got {}",
                                      redundant));
  const int slots = num_experts + redundant;
  require(slots % num_devices == 0,
          fmt::format("ReplanOptions.redundant_slots = {}: {} experts + {} redundant slots do not "
                      "divide evenly over {} devices; choose a multiple that does",
                      redundant, num_experts, redundant, num_devices));
  const bool uniform = num_nodes > 0 && num_devices % num_nodes == 0;
  planner::Topology topo;
  topo.num_nodes = uniform ? num_nodes : 1;
  topo.gpus_per_node = num_devices / topo.num_nodes;
  topo.slots_per_gpu = slots / num_devices;
  return topo;
}

}  // namespace

double predicted_imbalance(const planner::ExpertPlacement& placement,
                           const std::vector<int64_t>& expert_load) {
  std::vector<double> device(placement.num_devices(), 0.0);
  double total = 0;
  for (int e = 0; e < placement.num_experts(); ++e) {
    const auto& replicas = placement.replicas(e);
    for (int d : replicas) device[d] += double(expert_load[e]) / double(replicas.size());
    total += double(expert_load[e]);
  }
  if (total == 0) return 1.0;
  return *std::max_element(device.begin(), device.end()) / (total / placement.num_devices());
}

Replanner::Replanner(ReplanOptions options, int num_experts, int num_devices, int num_nodes)
    : options_(options),
      // Without re-planning the slot layout is never used, so it need not divide evenly.
      topology_(options.interval > 0
                    ? topology_for(num_experts, num_devices, num_nodes, options.redundant_slots)
                    : planner::Topology{}),
      window_load_(num_experts, 0) {
  require(options_.interval >= 0,
          fmt::format("ReplanOptions.interval must be >= 0, got {}", options_.interval));
  require(options_.min_gain >= 0,
          fmt::format("ReplanOptions.min_gain must be >= 0, got {}", options_.min_gain));
}

void Replanner::record(const std::vector<double>& expert_load) {
  for (size_t e = 0; e < window_load_.size(); ++e) {
    window_load_[e] += static_cast<int64_t>(std::llround(expert_load[e]));
  }
}

bool Replanner::due(int step) const {
  return options_.interval > 0 && step % options_.interval == 0;
}

std::optional<planner::ExpertPlacement> Replanner::replan(const planner::ExpertPlacement& current,
                                                          ReplanDecision* decision) {
  ReplanDecision d;
  d.current_imbalance = predicted_imbalance(current, window_load_);
  std::vector<int> row = planner::plan_layer_for_balance(window_load_, topology_, 5000);
  if (current_row_) row = planner::align_to_current(row, *current_row_, topology_, false);
  auto next = planner::ExpertPlacement::from_slots(row, current.num_experts(),
                                                   current.num_devices());
  d.planned_imbalance = predicted_imbalance(next, window_load_);
  for (int e = 0; e < next.num_experts(); ++e) {
    for (int device : next.replicas(e)) d.moved_experts += current.holds(device, e) ? 0 : 1;
  }
  d.adopted = d.current_imbalance - d.planned_imbalance >= options_.min_gain && !(next == current);
  std::fill(window_load_.begin(), window_load_.end(), 0);
  if (decision != nullptr) *decision = d;
  if (!d.adopted) return std::nullopt;
  current_row_ = std::move(row);
  return next;
}

ReplannerState Replanner::state() const {
  return {window_load_, current_row_ ? *current_row_ : std::vector<int>{}};
}

void Replanner::restore(const ReplannerState& state) {
  require(state.window_load.size() == window_load_.size(),
          fmt::format("Replanner::restore: the state has loads of {} experts, the replanner {}",
                      state.window_load.size(), window_load_.size()));
  const size_t slots = static_cast<size_t>(topology_.num_slots());
  require(state.current_row.empty() || state.current_row.size() == slots,
          fmt::format("Replanner::restore: the state's plan has {} slots, the replanner {}",
                      state.current_row.size(), slots));
  window_load_ = state.window_load;
  if (state.current_row.empty()) {
    current_row_.reset();
  } else {
    current_row_ = state.current_row;
  }
}

}  // namespace switchyard
