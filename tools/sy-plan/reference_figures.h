// reference_eplb.csv: EPLB's figures per scenario and policy, as shipped with the workloads.
#pragma once

#include <map>
#include <string>
#include <tuple>

namespace switchyard::tools {

struct EplbFigures {
  double lower_bound_imb = 0.0;
  double naive_imb = 0.0;
  double imb_mean = 0.0;
  double imb_max = 0.0;
  double remote_nodes_per_token = 0.0;
  double runtime_s = 0.0;
};

// (workload, num_nodes, gpus_per_node, redundant_slots)
using ScenarioKey = std::tuple<std::string, int, int, int>;
// policy name ("eplb_global", "eplb_hier") -> figures
using EplbPolicies = std::map<std::string, EplbFigures>;

// Throws std::runtime_error when the file cannot be read, std::invalid_argument on a bad row.
std::map<ScenarioKey, EplbPolicies> read_reference_figures(const std::string& path);

}  // namespace switchyard::tools
