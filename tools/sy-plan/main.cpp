// sy-plan: plan expert placements (`plan`), score any plan (`score`), and compare against EPLB's
// reference figures on the public scenarios (`bench`).
#include <exception>

#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include "commands.h"

int main(int argc, char** argv) {
  using namespace switchyard;
  CLI::App app{"sy-plan: expert-placement planner for switchyard"};
  app.require_subcommand(1);
  std::string mode = "balance";

  tools::PlanArgs plan;
  CLI::App* plan_cmd = app.add_subcommand("plan", "plan a workload, write a moe-placement/v1 file");
  plan_cmd->add_option("--workload", plan.workload, "moe-placement-workload/v1 file")->required();
  plan_cmd->add_option("--nodes", plan.nodes, "number of nodes")->required();
  plan_cmd->add_option("--gpus-per-node", plan.gpus_per_node, "devices per node")->required();
  plan_cmd->add_option("--redundant", plan.redundant, "redundant expert slots")->required();
  plan_cmd->add_option("--mode", mode, "balance | node-aware")->capture_default_str();
  plan_cmd
      ->add_option("--epsilon", plan.options.epsilon,
                   "node-aware: imbalance allowance over balance mode")
      ->capture_default_str();
  plan_cmd->add_option("--current", plan.current, "running plan: prefer few expert moves");
  plan_cmd
      ->add_option("--min-gain", plan.options.min_gain,
                   "with --current: re-plan a layer only if imbalance drops this much")
      ->capture_default_str();
  plan_cmd->add_option("--out", plan.out, "output plan file")->required();

  std::string score_workload, score_plan;
  CLI::App* score_cmd = app.add_subcommand("score", "score a plan (ours or EPLB's) on a workload");
  score_cmd->add_option("workload", score_workload, "workload file")->required();
  score_cmd->add_option("plan", score_plan, "moe-placement/v1 file")->required();

  tools::BenchArgs bench;
  CLI::App* bench_cmd = app.add_subcommand("bench", "plan every scenario, compare with EPLB");
  bench_cmd->add_option("--scenarios", bench.scenarios, "scenarios.json")->required();
  bench_cmd->add_option("--reference", bench.reference, "reference_eplb.csv")->required();
  bench_cmd->add_option("--mode", mode, "balance | node-aware")->capture_default_str();
  bench_cmd->add_option("--epsilon", bench.options.epsilon, "node-aware imbalance allowance")
      ->capture_default_str();
  bench_cmd->add_option("--filter", bench.filter,
                        "only scenarios whose label (e.g. 'dsv3_zipf0.5 8x8 +64') contains this");

  CLI11_PARSE(app, argc, argv);
  try {
    if (plan_cmd->parsed()) {
      plan.options.mode = planner::parse_plan_mode(mode);
      tools::run_plan(plan);
    } else if (score_cmd->parsed()) {
      tools::run_score(score_workload, score_plan);
    } else {
      bench.options.mode = planner::parse_plan_mode(mode);
      tools::run_bench(bench);
    }
  } catch (const std::exception& err) {
    fmt::print(stderr, "sy-plan: error: {}\n", err.what());
    return 1;
  }
  return 0;
}
