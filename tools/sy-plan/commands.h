// The sy-plan subcommands, each parsed by main.cpp and run here; all throw on bad input.
#pragma once

#include <string>

#include "planner/planner.h"

namespace switchyard::tools {

struct PlanArgs {
  std::string workload;
  int nodes = 0;
  int gpus_per_node = 0;
  int redundant = 0;
  std::string current;  // empty: plan from scratch
  std::string out;
  planner::PlanOptions options;
};
void run_plan(const PlanArgs& args);

void run_score(const std::string& workload, const std::string& plan);

struct BenchArgs {
  std::string scenarios;
  std::string reference;
  // Only scenarios whose label ("dsv3_zipf0.5 8x8 +64") contains this text; empty: all.
  std::string filter;
  planner::PlanOptions options;
};
void run_bench(const BenchArgs& args);

}  // namespace switchyard::tools
