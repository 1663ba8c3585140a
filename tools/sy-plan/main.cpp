// sy-plan: plan expert placements (`plan`), score any plan (`score`), and compare against EPLB's
// reference figures on the public scenarios (`bench`).
#include <cmath>
#include <exception>
#include <string>

#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include "base/error.h"
#include "commands.h"
#include "planner/topology.h"

namespace {

// A finite number >= 0 (CLI::Range lets NaN through: it fails no comparison).
const CLI::Validator kFiniteNonNegative(
    [](std::string& text) -> std::string {
      try {
        std::size_t used = 0;
        const double v = std::stod(text, &used);
        if (used == text.size() && std::isfinite(v) && v >= 0) return {};
      } catch (const std::exception&) {
      }
      return "must be a finite number >= 0, got '" + text + "'";
    },
    "FLOAT>=0");

// One line however the message came: control characters (newlines from a library's message, raw
// bytes quoted from a malformed file) become spaces, and a quoted 100 kB number is cut short.
std::string one_line(std::string text) {
  for (char& c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  constexpr std::size_t kMax = 600;
  if (text.size() > kMax) text = text.substr(0, kMax) + " ...";
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace switchyard;
  CLI::App app{"sy-plan: expert-placement planner for switchyard"};
  app.require_subcommand(1);
  std::string mode = "balance";

  tools::PlanArgs plan;
  CLI::App* plan_cmd = app.add_subcommand("plan", "plan a workload, write a moe-placement/v1 file");
  plan_cmd->add_option("--workload", plan.workload, "moe-placement-workload/v1 file")->required();
  // Bounds: planner/topology.h (nodes, gpus per node, devices, slots); run_plan bounds
  // --redundant further by the workload's expert count.
  plan_cmd->add_option("--nodes", plan.nodes, "number of nodes")
      ->required()
      ->check(CLI::Range(1, planner::kMaxNodes));
  plan_cmd->add_option("--gpus-per-node", plan.gpus_per_node, "devices per node")
      ->required()
      ->check(CLI::Range(1, planner::kMaxGpusPerNode));
  plan_cmd->add_option("--redundant", plan.redundant, "redundant expert slots")
      ->required()
      ->check(CLI::Range(0, planner::kMaxSlots));
  plan_cmd->add_option("--mode", mode, "balance | node-aware")->capture_default_str();
  plan_cmd
      ->add_option("--epsilon", plan.options.epsilon,
                   "node-aware: imbalance allowance over balance mode")
      ->check(kFiniteNonNegative)
      ->capture_default_str();
  plan_cmd->add_option("--current", plan.current, "running plan: prefer few expert moves");
  plan_cmd
      ->add_option("--min-gain", plan.options.min_gain,
                   "with --current: re-plan a layer only if imbalance drops this much")
      ->check(kFiniteNonNegative)
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
      ->check(kFiniteNonNegative)
      ->capture_default_str();
  bench_cmd->add_option("--filter", bench.filter,
                        "only scenarios whose label (e.g. 'dsv3_zipf0.5 8x8 +64') contains this");

  // Usage errors on one line (CLI11_PARSE would add a second, "Run with --help ..."), exit 2.
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& help) {
    return app.exit(help);
  } catch (const CLI::ParseError& err) {
    if (app.get_subcommands().empty() && argc > 1 && argv[1][0] != '-') {
      fmt::print(stderr, "sy-plan: unknown command '{}'; commands: plan, score, bench\n",
                 one_line(argv[1]));
    } else {
      fmt::print(stderr, "sy-plan: {} (sy-plan --help for usage)\n", one_line(err.what()));
    }
    return 2;
  }
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
  } catch (const switchyard::Error& err) {  // the planner's: malformed input names the file
    fmt::print(stderr, "sy-plan: {}\n", one_line(err.what()));
    return err.code() == switchyard::ErrorCode::invalid_argument ? 2 : 1;
  } catch (const std::invalid_argument& err) {  // malformed input: the message names the file
    fmt::print(stderr, "sy-plan: {}\n", one_line(err.what()));
    return 2;
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "sy-plan: out of memory; the inputs ask for more than this machine has\n");
    return 1;
  } catch (const std::exception& err) {  // I/O errors name their file; anything else, one line
    fmt::print(stderr, "sy-plan: {}\n", one_line(err.what()));
    return 1;
  }
  return 0;
}
