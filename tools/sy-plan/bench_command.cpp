// `sy-plan bench`: plans every public scenario and prints our figures beside EPLB's reference
// figures (both policies), with ratios, runtimes and a summary against the planner's targets.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <stdexcept>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "commands.h"
#include "planner/json_input.h"
#include "planner/score.h"
#include "planner/topology.h"
#include "planner/workload.h"
#include "reference_figures.h"

namespace switchyard::tools {

namespace {

struct Scenario {
  std::string workload;
  int nodes, gpus_per_node, redundant;
};

std::vector<Scenario> read_scenarios(const std::string& path) {
  const nlohmann::json doc = planner::read_json_file(path);
  const auto wrong = [&](const std::string& what) {
    return std::invalid_argument(path + ": not a moe-placement-scenarios/v1 file: " + what);
  };
  if (!doc.is_object() || !doc.contains("scenarios") || !doc.at("scenarios").is_array()) {
    throw wrong("needs a list 'scenarios'");
  }
  std::vector<Scenario> scenarios;
  for (const auto& s : doc.at("scenarios")) {
    const std::string where = "scenario " + std::to_string(scenarios.size());
    if (!s.is_object()) throw wrong(where + " is not an object");
    for (const char* key : {"workload", "num_nodes", "gpus_per_node", "redundant_slots"}) {
      if (!s.contains(key)) throw wrong(where + " lacks " + key);
    }
    if (!s.at("workload").is_string()) throw wrong(where + ": workload must be a name");
    try {
      scenarios.push_back(
          {s.at("workload").get<std::string>(),
           static_cast<int>(planner::integer_in(s.at("num_nodes"), where + ": num_nodes", 1,
                                                planner::kMaxNodes)),
           static_cast<int>(planner::integer_in(s.at("gpus_per_node"),
                                                where + ": gpus_per_node", 1,
                                                planner::kMaxGpusPerNode)),
           static_cast<int>(planner::integer_in(s.at("redundant_slots"),
                                                where + ": redundant_slots", 0,
                                                planner::kMaxSlots))});
    } catch (const Error& err) {
      throw Error(err.code(), path + ": " + err.what());
    }
  }
  return scenarios;
}

struct Timed {
  planner::Plan plan;
  planner::PlanScore score;
  double ms;
};

Timed plan_and_score(const planner::Workload& workload, const planner::Topology& topo,
                     const planner::PlanOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  planner::Plan plan = planner::make_plan(workload, topo, options);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  planner::PlanScore score = planner::score_plan(workload, plan);
  return {std::move(plan), std::move(score), ms};
}

// EPLB's figure for a policy; NaN when the reference lacks it (dsmoe16b has one group, so only
// eplb_global is listed).
double figure(const EplbPolicies& policies, const std::string& policy, double EplbFigures::*field) {
  const auto it = policies.find(policy);
  return it == policies.end() ? std::numeric_limits<double>::quiet_NaN() : it->second.*field;
}

std::string cell(double value, int precision) {
  return std::isnan(value) ? "-" : fmt::format("{:.{}f}", value, precision);
}

}  // namespace

void run_bench(const BenchArgs& args) {
  const std::vector<Scenario> scenarios = read_scenarios(args.scenarios);
  const auto reference = read_reference_figures(args.reference);
  const std::filesystem::path folder = std::filesystem::path(args.scenarios).parent_path();
  const bool node_aware = args.options.mode == planner::PlanMode::node_aware;
  planner::PlanOptions balance_options = args.options;
  balance_options.mode = planner::PlanMode::balance;

  fmt::print(
      "mode {}{}; imb = imb_mean (max/mean device load, mean over layers); gap closed = "
      "(best EPLB - ours) / (best EPLB - lower bound)\n",
      planner::plan_mode_name(args.options.mode),
      node_aware ? fmt::format(", epsilon {}", args.options.epsilon) : "");
  fmt::print(
      "{:<28} {:>6} {:>7} {:>7} {:>7} {:>7} {:>6} {:>7} {:>6} {:>6} {:>6} {:>4} {:>8} "
      "{:>7} {:>7}\n",
      "scenario", "lb", "eplb_g", "eplb_h", "ours", "ratio", "gap%", "o_max", "rem_g", "rem_h",
      "rem_o", "dup", "ours_ms", "eplb_gs", "eplb_hs");
  if (node_aware) fmt::print("{:>28} (ours = node-aware; bal = balance mode's imb)\n", "");

  std::map<std::string, planner::Workload> workloads;
  double gap_sum = 0.0, worst_ms = 0.0;
  int gap_count = 0, beat_or_tie = 0, traffic_wins = 0, traffic_cases = 0, within_eps = 0;
  int benched = 0;
  for (const Scenario& s : scenarios) {
    const std::string label =
        fmt::format("{} {}x{} +{}", s.workload, s.nodes, s.gpus_per_node, s.redundant);
    if (label.find(args.filter) == std::string::npos) continue;
    ++benched;
    auto it = workloads.find(s.workload);
    if (it == workloads.end()) {
      const auto path = folder / (s.workload + ".json");
      it = workloads.emplace(s.workload, planner::read_workload(path.string())).first;
    }
    const planner::Workload& workload = it->second;
    planner::Topology topo;
    try {
      topo = planner::Topology::for_slots(s.nodes, s.gpus_per_node, workload.num_experts,
                                          s.redundant);
    } catch (const Error& err) {
      throw Error(err.code(), args.scenarios + ": scenario " + label + ": " + err.what());
    }
    const auto ref = reference.find({s.workload, s.nodes, s.gpus_per_node, s.redundant});
    if (ref == reference.end()) {
      throw std::invalid_argument("bench: no reference figures for scenario " + s.workload);
    }
    const EplbPolicies& eplb = ref->second;
    const Timed balance = plan_and_score(workload, topo, balance_options);
    const Timed ours = node_aware ? plan_and_score(workload, topo, args.options) : balance;

    const double lb = ours.score.lower_bound_imb;
    const double g = figure(eplb, "eplb_global", &EplbFigures::imb_mean);
    const double h = figure(eplb, "eplb_hier", &EplbFigures::imb_mean);
    const double best = std::isnan(h) ? g : std::min(g, h);
    const double imb = ours.score.imb_mean;
    if (imb <= best + 5e-5) ++beat_or_tie;  // reference figures carry 4 decimals
    double gap = std::numeric_limits<double>::quiet_NaN();
    if (best - lb > 1e-4) {
      gap = 100.0 * (best - imb) / (best - lb);
      gap_sum += gap;
      ++gap_count;
    }
    const double rem_h = figure(eplb, "eplb_hier", &EplbFigures::remote_nodes_per_token);
    if (node_aware && !std::isnan(rem_h)) {
      ++traffic_cases;
      if (ours.score.remote_nodes_per_token < rem_h) ++traffic_wins;
      if (imb <= balance.score.imb_mean + args.options.epsilon + 1e-12) ++within_eps;
    }
    worst_ms = std::max(worst_ms, ours.ms);
    fmt::print(
        "{:<28} {:>6.4f} {:>7} {:>7} {:>7.4f} {:>7.4f} {:>6} {:>7.4f} {:>6} {:>6} {:>6.3f} "
        "{:>4} {:>8.1f} {:>7} {:>7}\n",
        label, lb, cell(g, 4), cell(h, 4), imb, imb / best, cell(gap, 1), ours.score.imb_max,
        cell(figure(eplb, "eplb_global", &EplbFigures::remote_nodes_per_token), 3), cell(rem_h, 3),
        ours.score.remote_nodes_per_token, ours.score.duplicate_replicas, ours.ms,
        cell(figure(eplb, "eplb_global", &EplbFigures::runtime_s), 3),
        cell(figure(eplb, "eplb_hier", &EplbFigures::runtime_s), 3));
    if (node_aware) {
      fmt::print("{:>28} bal {:.4f} (+{:.4f}), bal remote {:.3f}, bal {:.1f} ms\n", "",
                 balance.score.imb_mean, imb - balance.score.imb_mean,
                 balance.score.remote_nodes_per_token, balance.ms);
    }
  }
  fmt::print(
      "\nimb_mean <= best EPLB policy: {}/{} scenarios; mean gap to lower bound closed: "
      "{:.1f}% over {} scenarios with a gap; slowest plan {:.1f} ms\n",
      beat_or_tie, benched, gap_count ? gap_sum / gap_count : 0.0, gap_count, worst_ms);
  if (node_aware) {
    fmt::print(
        "remote nodes/token below eplb_hier: {}/{}; imb_mean within epsilon of balance "
        "mode: {}/{}\n",
        traffic_wins, traffic_cases, within_eps, traffic_cases);
  }
}

}  // namespace switchyard::tools
