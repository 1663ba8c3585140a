// Scores a plan exactly as the workloads README's "Scoring" section defines the reference figures:
// equal split of an expert's load over its replicas, max/mean device load per layer, and the
// token traffic model (token t starts on device t mod G; an expert is served on the token's node
// when it has a replica there, else by replica t mod count in ascending slot order; a token crosses
// to each other node once).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "planner/plan.h"
#include "planner/workload.h"

namespace switchyard::planner {

struct PlanScore {
  std::vector<double> layer_imb;
  double imb_mean = 0.0;
  double imb_max = 0.0;
  double lower_bound_imb = 0.0;  // mean over layers
  bool has_traffic = false;      // remote_nodes_per_token is only known with routes
  double remote_nodes_per_token = 0.0;
  // Replicas that share a device with another replica of the same expert, over all layers.
  int duplicate_replicas = 0;
};

// Per-device load of one layer (expert load split equally over its replicas).
std::vector<double> device_loads(std::span<const std::int64_t> load, std::span<const int> phy2log,
                                 const Topology& topo);
double layer_imbalance(std::span<const std::int64_t> load, std::span<const int> phy2log,
                       const Topology& topo);
int duplicate_replicas(std::span<const int> phy2log, const Topology& topo, int num_experts);
// Mean over the layer's tokens of the distinct other nodes each must be sent to.
double remote_nodes_per_token(const Workload& workload, int layer, std::span<const int> phy2log,
                              const Topology& topo);

// Throws Error(invalid_argument) when the plan does not fit the workload (layers, experts).
PlanScore score_plan(const Workload& workload, const Plan& plan);

}  // namespace switchyard::planner
