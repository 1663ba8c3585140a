// `sy-plan plan` and `sy-plan score`: one plan, scored with the workloads README's definitions.
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <fmt/core.h>

#include "commands.h"
#include "planner/migration.h"
#include "planner/plan.h"
#include "planner/score.h"
#include "planner/workload.h"

namespace switchyard::tools {

namespace {

void print_score(const planner::Workload& workload, const planner::Plan& plan,
                 const planner::PlanScore& score) {
  fmt::print("{:<18} {:>6} {:>9} {:>9} {:>9} {:>9} {:>6}\n", "model", "layout", "imb_mean",
             "imb_max", "lower_bd", "remote/tk", "dups");
  const auto& topo = plan.topology;
  fmt::print("{:<18} {:>6} {:>9.4f} {:>9.4f} {:>9.4f} {:>9} {:>6}\n", workload.name,
             fmt::format("{}x{}x{}", topo.num_nodes, topo.gpus_per_node, topo.slots_per_gpu),
             score.imb_mean, score.imb_max, score.lower_bound_imb,
             score.has_traffic ? fmt::format("{:.3f}", score.remote_nodes_per_token) : "n/a",
             score.duplicate_replicas);
}

// A plan read from `path` must be for the workload's layers (and, with `topo`, that topology).
void check_plan_fits(const planner::Plan& plan, const std::string& path,
                     const planner::Workload& workload, const std::string& workload_path,
                     const planner::Topology* topo) {
  if (plan.num_layers() != workload.num_layers) {
    throw std::invalid_argument(fmt::format("{}: the plan has {} layers, the workload {} has {}",
                                            path, plan.num_layers(), workload_path,
                                            workload.num_layers));
  }
  const planner::Topology& t = plan.topology;
  if (topo && (t.num_nodes != topo->num_nodes || t.gpus_per_node != topo->gpus_per_node ||
               t.slots_per_gpu != topo->slots_per_gpu)) {
    throw std::invalid_argument(fmt::format(
        "{}: the plan is for {}x{}x{} (nodes x gpus x slots), this run for {}x{}x{}; re-plan "
        "without --current",
        path, t.num_nodes, t.gpus_per_node, t.slots_per_gpu, topo->num_nodes, topo->gpus_per_node,
        topo->slots_per_gpu));
  }
}

}  // namespace

void run_plan(const PlanArgs& args) {
  const std::int64_t devices = static_cast<std::int64_t>(args.nodes) * args.gpus_per_node;
  if (devices > planner::kMaxDevices) {
    throw std::invalid_argument(fmt::format(
        "--nodes {} × --gpus-per-node {} = {} devices, at most {}", args.nodes,
        args.gpus_per_node, devices, planner::kMaxDevices));
  }
  const planner::Workload workload = planner::read_workload(args.workload);
  // A device with more slots than the workload has experts must hold some expert twice, which
  // serves no token: slots per device <= experts, i.e. redundant <= experts × (devices - 1).
  // This also bounds the plan (layers × slots) by the workload's own size.
  const std::int64_t max_redundant = static_cast<std::int64_t>(workload.num_experts) * (devices - 1);
  if (args.redundant > max_redundant) {
    throw std::invalid_argument(fmt::format(
        "--redundant {}: at most experts × (devices - 1) = {} × {} = {} for {}: more would put "
        "some expert twice on one device",
        args.redundant, workload.num_experts, devices - 1, max_redundant, args.workload));
  }
  const planner::Topology topo = planner::Topology::for_slots(
      args.nodes, args.gpus_per_node, workload.num_experts, args.redundant);
  planner::Plan current;
  if (!args.current.empty()) {
    current = planner::read_plan(args.current, workload.num_experts);
    check_plan_fits(current, args.current, workload, args.workload, &topo);
  }
  const auto start = std::chrono::steady_clock::now();
  const planner::Plan plan = planner::make_plan(workload, topo, args.options,
                                                args.current.empty() ? nullptr : &current);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  planner::write_plan(args.out, plan);
  print_score(workload, plan, planner::score_plan(workload, plan));
  fmt::print("mode {}, planned {} layers in {:.1f} ms, written to {}\n",
             planner::plan_mode_name(args.options.mode), workload.num_layers, seconds * 1e3,
             args.out);
  if (!args.current.empty()) {
    int moved = 0, replanned = 0;
    for (int l = 0; l < plan.num_layers(); ++l) {
      const int m = planner::moved_replicas(current.phy2log[l], plan.phy2log[l], topo);
      moved += m;
      replanned += m > 0 ? 1 : 0;
    }
    fmt::print("against {}: {} layers re-planned, {} replicas moved\n", args.current, replanned,
               moved);
  }
}

void run_score(const std::string& workload_path, const std::string& plan_path) {
  const planner::Workload workload = planner::read_workload(workload_path);
  const planner::Plan plan = planner::read_plan(plan_path, workload.num_experts);
  check_plan_fits(plan, plan_path, workload, workload_path, nullptr);
  print_score(workload, plan, planner::score_plan(workload, plan));
}

}  // namespace switchyard::tools
