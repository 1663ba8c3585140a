// Live re-planning: the layer's globally reduced expert loads are accumulated over a window of
// steps; at the end of a window the balance planner proposes a placement with `redundant_slots`
// extra replicas of hot experts, aligned to the current one so that few experts move, and it is
// adopted only when it lowers the predicted device imbalance by at least `min_gain`.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "planner/placement.h"
#include "planner/topology.h"

namespace switchyard {

struct ReplanOptions {
  int interval = 0;         // steps per window; 0 = never re-plan
  int redundant_slots = 0;  // extra expert slots over all devices; (E + R) must divide by devices
  double min_gain = 0.01;   // adopt a plan only if max/mean device load drops this much
};

struct ReplanDecision {
  bool adopted = false;
  double current_imbalance = 1;  // predicted max/mean device load over the window, current plan
  double planned_imbalance = 1;  // the same for the proposed plan
  int moved_experts = 0;         // replicas a device newly holds
};

// What a Replanner carries from one step to the next: the current window's loads and the slot
// row of the last adopted plan (empty: none yet), for checkpoints.
struct ReplannerState {
  std::vector<int64_t> window_load;
  std::vector<int> current_row;
};

class Replanner {
 public:
  // num_nodes: nodes of the communicator (devices assumed numbered node by node). With
  // re-planning on, throws Error(invalid_argument) when the slots do not divide evenly over the
  // devices.
  Replanner(ReplanOptions options, int num_experts, int num_devices, int num_nodes);

  const ReplanOptions& options() const { return options_; }
  // Adds one step's per-expert loads (the same on every rank).
  void record(const std::vector<double>& expert_load);
  // True when a window has just been completed by `step` (1-based).
  bool due(int step) const;
  // Plans from the window's loads, clears the window, and returns the new placement if it is
  // adopted. Deterministic: every rank computes the same decision from the same loads.
  std::optional<planner::ExpertPlacement> replan(const planner::ExpertPlacement& current,
                                                 ReplanDecision* decision);

  ReplannerState state() const;
  // Continues from a state() of a replanner with the same options, experts and devices; throws
  // Error(invalid_argument) when the sizes do not fit.
  void restore(const ReplannerState& state);

 private:
  ReplanOptions options_;
  planner::Topology topology_;
  std::vector<int64_t> window_load_;
  std::optional<std::vector<int>> current_row_;  // phy2log of the last adopted plan
};

// max/mean device load when each expert's load is split equally over its replicas.
double predicted_imbalance(const planner::ExpertPlacement& placement,
                           const std::vector<int64_t>& expert_load);

}  // namespace switchyard
