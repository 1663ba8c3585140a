// Entry point of the placement planner: a plan for every layer of a workload on a topology.
#pragma once

#include <string>

#include "planner/plan.h"
#include "planner/topology.h"
#include "planner/workload.h"

namespace switchyard::planner {

enum class PlanMode {
  balance,     // minimise max/mean device load
  node_aware,  // fewer remote nodes per token, imbalance within epsilon of balance mode
};

// Parses "balance" or "node-aware"; throws Error(invalid_argument) otherwise.
PlanMode parse_plan_mode(const std::string& name);
std::string plan_mode_name(PlanMode mode);

struct PlanOptions {
  PlanMode mode = PlanMode::balance;
  // Node-aware mode: each layer's imbalance may exceed balance mode's by at most this much.
  double epsilon = 0.05;
  // Re-planning against a current plan: a layer keeps its current placement unless the new one
  // lowers its imbalance by at least this much (or, node-aware, its remote nodes per token by
  // min_traffic_gain).
  double min_gain = 0.01;
  double min_traffic_gain = 0.05;
  // Upper bound on local-search steps per layer; convergence normally stops it far earlier.
  int max_refine_steps = 5000;
};

// Throws Error(invalid_argument) when the workload does not fit the topology, when node-aware mode
// has no routes, or when `current` does not match the workload and topology.
Plan make_plan(const Workload& workload, const Topology& topo, const PlanOptions& options,
               const Plan* current = nullptr);

}  // namespace switchyard::planner
