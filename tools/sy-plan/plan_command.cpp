// `sy-plan plan` and `sy-plan score`: one plan, scored with the workloads README's definitions.
#include <chrono>

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

}  // namespace

void run_plan(const PlanArgs& args) {
  const planner::Workload workload = planner::read_workload(args.workload);
  const planner::Topology topo = planner::Topology::for_slots(
      args.nodes, args.gpus_per_node, workload.num_experts, args.redundant);
  planner::Plan current;
  if (!args.current.empty()) current = planner::read_plan(args.current, workload.num_experts);
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
  print_score(workload, plan, planner::score_plan(workload, plan));
}

}  // namespace switchyard::tools
