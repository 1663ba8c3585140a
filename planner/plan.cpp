#include "planner/plan.h"

#include <fstream>
#include <limits>

#include "base/error.h"
#include "planner/json_input.h"

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
      throw Error(ErrorCode::invalid_argument, "plan: layer " + std::to_string(l) + " has " +
                                                   std::to_string(row.size()) +
                                                   " slots, expected nodes × gpus "
                                                   "per node × slots per gpu = " +
                                                   std::to_string(slots));
    }
    std::vector<bool> seen(num_experts, false);
    for (int e : row) {
      if (e < 0 || e >= num_experts) {
        throw Error(ErrorCode::invalid_argument,
                    "plan: layer " + std::to_string(l) + " names expert " + std::to_string(e) +
                        ", outside [0, " + std::to_string(num_experts) + ")");
      }
      seen[e] = true;
    }
    for (int e = 0; e < num_experts; ++e) {
      if (!seen[e]) {
        throw Error(ErrorCode::invalid_argument,
                    "plan: layer " + std::to_string(l) + " is missing expert " + std::to_string(e) +
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
  // A "format" of another JSON type reads as absent, so that it is refused below like one.
  const std::string format = doc.is_object() && doc.contains("format") && doc["format"].is_string()
                                 ? doc["format"].get<std::string>()
                                 : std::string();
  if (format != kFormat) {
    throw Error(ErrorCode::invalid_argument,
                "plan: format is '" + format + "', expected '" + kFormat + "'");
  }
  Plan plan;
  try {
    plan.planner = doc.value("planner", std::string("unknown"));
    plan.workload = doc.value("workload", std::string());
  } catch (const nlohmann::json::exception&) {
    throw Error(ErrorCode::invalid_argument, "plan: fields planner and workload must be strings");
  }
  for (const char* key : {"num_nodes", "gpus_per_node", "slots_per_gpu", "phy2log"}) {
    if (!doc.contains(key))
      throw Error(ErrorCode::invalid_argument, std::string("plan: missing field ") + key);
  }
  plan.topology.num_nodes =
      static_cast<int>(integer_in(doc.at("num_nodes"), "plan: num_nodes", 1, kMaxNodes));
  plan.topology.gpus_per_node = static_cast<int>(
      integer_in(doc.at("gpus_per_node"), "plan: gpus_per_node", 1, kMaxGpusPerNode));
  plan.topology.slots_per_gpu =
      static_cast<int>(integer_in(doc.at("slots_per_gpu"), "plan: slots_per_gpu", 1, kMaxSlots));
  plan.topology.validate();  // the products: devices and slots
  const nlohmann::json& rows = doc.at("phy2log");
  SY_ENFORCE_ARG(!(!rows.is_array() || rows.empty()),
                 "plan: phy2log must be a list of layers, each a list of slots");
  const int slots = plan.topology.num_slots();
  for (std::size_t l = 0; l < rows.size(); ++l) {
    const nlohmann::json& row = rows[l];
    if (!row.is_array() || row.size() != static_cast<std::size_t>(slots)) {
      throw Error(
          ErrorCode::invalid_argument,
          "plan: layer " + std::to_string(l) + " has " +
              (row.is_array() ? std::to_string(row.size()) : std::string("no list of")) +
              " slots, expected nodes × gpus per node × slots per gpu = " + std::to_string(slots));
    }
    std::vector<int> experts;
    experts.reserve(row.size());
    for (std::size_t j = 0; j < row.size(); ++j) {
      experts.push_back(static_cast<int>(integer_in(
          row[j], "plan: phy2log[" + std::to_string(l) + "][" + std::to_string(j) + "]", 0,
          std::numeric_limits<int>::max())));
    }
    plan.phy2log.push_back(std::move(experts));
  }
  return plan;
}

Plan read_plan(const std::string& path, int num_experts) {
  const nlohmann::json doc = read_json_file(path);
  try {
    Plan plan = plan_from_json(doc);
    if (num_experts > 0) plan.validate(num_experts);
    return plan;
  } catch (const Error& err) {
    throw Error(err.code(), path + ": " + err.what());
  }
}

void write_plan(const std::string& path, const Plan& plan) {
  std::ofstream out(path);
  if (!out) throw Error(ErrorCode::internal, "plan: cannot write " + path);
  out << plan_to_json(plan).dump() << '\n';
  if (!out) throw Error(ErrorCode::internal, "plan: write to " + path + " failed");
}

}  // namespace switchyard::planner
