// A placement plan in the `moe-placement/v1` format: phy2log[l][j] is the logical expert in
// physical slot j of layer l (EPLB's convention, so plans are interchangeable with EPLB's).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "planner/topology.h"

namespace switchyard::planner {

struct Plan {
  std::string planner = "switchyard";
  std::string workload;
  Topology topology;
  std::vector<std::vector<int>> phy2log;

  int num_layers() const { return static_cast<int>(phy2log.size()); }
  // Throws Error(invalid_argument) when a row has the wrong length, names an expert outside
  // [0, num_experts) or misses one.
  void validate(int num_experts) const;
};

nlohmann::json plan_to_json(const Plan& plan);
// Throws Error(invalid_argument) on a wrong format string or missing fields.
Plan plan_from_json(const nlohmann::json& doc);
// Reads and validates against `num_experts` (skipped when 0).
Plan read_plan(const std::string& path, int num_experts = 0);
void write_plan(const std::string& path, const Plan& plan);

}  // namespace switchyard::planner
