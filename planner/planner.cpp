#include "planner/planner.h"

#include "base/error.h"
#include "planner/balance_planner.h"
#include "planner/migration.h"
#include "planner/node_aware_planner.h"
#include "planner/score.h"

namespace switchyard::planner {

PlanMode parse_plan_mode(const std::string& name) {
  if (name == "balance") return PlanMode::balance;
  if (name == "node-aware") return PlanMode::node_aware;
  throw Error(ErrorCode::invalid_argument,
              "plan mode '" + name + "' is unknown; use 'balance' or 'node-aware'");
}

std::string plan_mode_name(PlanMode mode) {
  return mode == PlanMode::balance ? "balance" : "node-aware";
}

namespace {

void check_inputs(const Workload& workload, const Topology& topo, const PlanOptions& options,
                  const Plan* current) {
  topo.validate();
  if (topo.num_slots() < workload.num_experts) {
    throw Error(ErrorCode::invalid_argument, "plan: " + std::to_string(topo.num_slots()) +
                                                 " slots cannot hold " +
                                                 std::to_string(workload.num_experts) +
                                                 " experts; add devices or slots per gpu");
  }
  SY_ENFORCE_ARG(!(options.mode == PlanMode::node_aware && !workload.has_routes()),
                 "plan: node-aware mode needs the workload's routes file (token co-activation); "
                 "use balance mode or provide routes");
  SY_ENFORCE_ARG(
      !(options.epsilon < 0.0 || options.min_gain < 0.0 || options.min_traffic_gain < 0.0),
      "plan: epsilon and the re-planning thresholds must be >= 0");
  if (current == nullptr) return;
  const Topology& cur = current->topology;
  SY_ENFORCE_ARG(
      !(cur.num_nodes != topo.num_nodes || cur.gpus_per_node != topo.gpus_per_node ||
        cur.slots_per_gpu != topo.slots_per_gpu || current->num_layers() != workload.num_layers),
      "plan: the current plan is for another topology or layer count; re-plan without --current");
  current->validate(workload.num_experts);
}

// Whether replacing the current row by `fresh` gains enough to pay for moving experts.
bool worth_replanning(const Workload& workload, int layer, const Topology& topo,
                      std::span<const int> current, std::span<const int> fresh,
                      const PlanOptions& options) {
  const auto& load = workload.load[layer];
  const double imb_gain = layer_imbalance(load, current, topo) - layer_imbalance(load, fresh, topo);
  if (imb_gain >= options.min_gain) return true;
  if (options.mode != PlanMode::node_aware) return false;
  const double traffic_gain = remote_nodes_per_token(workload, layer, current, topo) -
                              remote_nodes_per_token(workload, layer, fresh, topo);
  return traffic_gain >= options.min_traffic_gain && imb_gain >= -options.epsilon;
}

}  // namespace

Plan make_plan(const Workload& workload, const Topology& topo, const PlanOptions& options,
               const Plan* current) {
  check_inputs(workload, topo, options, current);
  Plan plan;
  plan.planner = "switchyard-" + plan_mode_name(options.mode);
  plan.workload = workload.name;
  plan.topology = topo;
  for (int l = 0; l < workload.num_layers; ++l) {
    std::vector<int> row = plan_layer_for_balance(workload.load[l], topo, options.max_refine_steps);
    if (options.mode == PlanMode::node_aware) {
      row = plan_layer_node_aware(workload, l, topo, row, options.epsilon,
                                  options.max_refine_steps);
    }
    if (current != nullptr) {
      const std::vector<int>& now = current->phy2log[l];
      row = worth_replanning(workload, l, topo, now, row, options)
                ? align_to_current(row, now, topo, options.mode == PlanMode::node_aware)
                : now;
    }
    plan.phy2log.push_back(std::move(row));
  }
  return plan;
}

}  // namespace switchyard::planner
