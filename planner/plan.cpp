#include "planner/plan.h"

#include <fstream>
#include <stdexcept>

namespace switchyard::planner {

namespace {
constexpr const char* kFormat = "moe-placement/v1";
}

void Plan::validate(int num_experts) const {
  topology.validate();
  const int slots = topology.num_slots();
  for (int l = 0; l < num_layers(); ++l) {
    const auto& row = phy2log[l];
    if (static_cast<int>(row.size()) != slots) {
      throw std::invalid_argument("plan: layer " + std::to_string(l) + " has " +
                                  std::to_string(row.size()) + " slots, expected nodes × gpus "
                                  "per node × slots per gpu = " + std::to_string(slots));
    }
    std::vector<bool> seen(num_experts, false);
    for (int e : row) {
      if (e < 0 || e >= num_experts) {
        throw std::invalid_argument("plan: layer " + std::to_string(l) + " names expert " +
                                    std::to_string(e) + ", outside [0, " +
                                    std::to_string(num_experts) + ")");
      }
      seen[e] = true;
    }
    for (int e = 0; e < num_experts; ++e) {
      if (!seen[e]) {
        throw std::invalid_argument("plan: layer " + std::to_string(l) + " is missing expert " +
                                    std::to_string(e) +
                                    "; every expert needs at least one slot per layer");
      }
    }
  }
}

nlohmann::json plan_to_json(const Plan& plan) {
  return {{"format", kFormat},
          {"planner", plan.planner},
          {"workload", plan.workload},
          {"num_nodes", plan.topology.num_nodes},
          {"gpus_per_node", plan.topology.gpus_per_node},
          {"slots_per_gpu", plan.topology.slots_per_gpu},
          {"phy2log", plan.phy2log}};
}

Plan plan_from_json(const nlohmann::json& doc) {
  const std::string format = doc.is_object() ? doc.value("format", std::string()) : std::string();
  if (format != kFormat) {
    throw std::invalid_argument("plan: format is '" + format + "', expected '" + kFormat + "'");
  }
  Plan plan;
  try {
    plan.planner = doc.value("planner", std::string("unknown"));
    plan.workload = doc.value("workload", std::string());
    plan.topology.num_nodes = doc.at("num_nodes").get<int>();
    plan.topology.gpus_per_node = doc.at("gpus_per_node").get<int>();
    plan.topology.slots_per_gpu = doc.at("slots_per_gpu").get<int>();
    plan.phy2log = doc.at("phy2log").get<std::vector<std::vector<int>>>();
  } catch (const nlohmann::json::exception& err) {
    throw std::invalid_argument(std::string("plan: needs integer fields num_nodes, "
                                            "gpus_per_node, slots_per_gpu and int[L][S] phy2log: ") +
                                err.what());
  }
  plan.topology.validate();
  return plan;
}

Plan read_plan(const std::string& path, int num_experts) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("plan: cannot open " + path);
  try {
    Plan plan = plan_from_json(nlohmann::json::parse(in));
    if (num_experts > 0) plan.validate(num_experts);
    return plan;
  } catch (const nlohmann::json::parse_error& err) {
    throw std::invalid_argument("plan: " + path + " is not valid JSON: " + err.what());
  } catch (const std::invalid_argument& err) {
    throw std::invalid_argument(std::string(err.what()) + " (file " + path + ")");
  }
}

void write_plan(const std::string& path, const Plan& plan) {
  std::ofstream out(path);
  if (!out) throw std::runtime_error("plan: cannot write " + path);
  out << plan_to_json(plan).dump() << '\n';
  if (!out) throw std::runtime_error("plan: write to " + path + " failed");
}

}  // namespace switchyard::planner
