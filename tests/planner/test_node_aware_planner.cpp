// Node-aware mode: invariants, the imbalance allowance, never more traffic than balance mode.
#include <gtest/gtest.h>

#include "planner/planner.h"
#include "planner_invariants.h"
#include "tests/expect_error.h"
#include "workload_fixtures.h"

namespace switchyard::planner {
namespace {

void expect_node_aware_keeps_its_promises(const Workload& w, const Topology& topo) {
  PlanOptions balance;
  PlanOptions node_aware;
  node_aware.mode = PlanMode::node_aware;
  const Plan base = make_plan(w, topo, balance);
  const Plan plan = make_plan(w, topo, node_aware);
  testing::expect_valid_plan(w, plan);
  EXPECT_EQ(make_plan(w, topo, node_aware).phy2log, plan.phy2log);  // deterministic
  const PlanScore a = score_plan(w, base), b = score_plan(w, plan);
  for (int l = 0; l < w.num_layers; ++l) {
    EXPECT_LE(b.layer_imb[l], a.layer_imb[l] + node_aware.epsilon + 1e-9) << "layer " << l;
  }
  EXPECT_LE(b.remote_nodes_per_token, a.remote_nodes_per_token + 1e-12);
}

TEST(NodeAwarePlanner, RandomWorkloadsStayWithinTheAllowance) {
  for (std::uint32_t seed = 1; seed <= 3; ++seed) {
    const Workload w = testing::random_workload(2, 32, 4, 512, 0.8, 100 + seed);
    expect_node_aware_keeps_its_promises(w, Topology::for_slots(2, 4, 32, 8));
    expect_node_aware_keeps_its_promises(w, Topology::for_slots(4, 2, 32, 0));
  }
}

TEST(NodeAwarePlanner, GroupLimitedRandomWorkloadsStayWithinTheAllowance) {
  // Group-aligned start on 2 and 4 nodes (4 groups), with and without redundant slots, and one
  // topology where the groups do not divide over the nodes (clustering start only).
  for (std::uint32_t seed = 1; seed <= 2; ++seed) {
    const Workload w = testing::random_grouped_workload(2, 32, 4, 2, 4, 512, 1.0, 200 + seed);
    expect_node_aware_keeps_its_promises(w, Topology::for_slots(2, 4, 32, 8));
    expect_node_aware_keeps_its_promises(w, Topology::for_slots(4, 2, 32, 0));
    expect_node_aware_keeps_its_promises(w, Topology::for_slots(4, 2, 32, 16));
    expect_node_aware_keeps_its_promises(w, Topology::for_slots(3, 2, 32, 4));
  }
}

TEST(NodeAwarePlanner, CutsTrafficOnTheGroupLimitedPublicWorkload) {
  const auto w = testing::public_workload("dsv3_zipf1.0", 2);
  if (!w) GTEST_SKIP() << "public workloads not found at " << SWITCHYARD_WORKLOADS_DIR;
  const Topology topo = Topology::for_slots(2, 8, w->num_experts, 32);
  expect_node_aware_keeps_its_promises(*w, topo);
  PlanOptions options;
  options.mode = PlanMode::node_aware;
  EXPECT_LT(score_plan(*w, make_plan(*w, topo, options)).remote_nodes_per_token,
            score_plan(*w, make_plan(*w, topo, PlanOptions{})).remote_nodes_per_token);
}

TEST(NodeAwarePlanner, NeedsRoutes) {
  Workload w = testing::random_workload(1, 16, 2, 64, 1.0, 5);
  w.routes.clear();
  PlanOptions options;
  options.mode = PlanMode::node_aware;
  EXPECT_SY_ERROR(make_plan(w, Topology::for_slots(2, 2, 16, 0), options),
                  switchyard::ErrorCode::invalid_argument);
}

}  // namespace
}  // namespace switchyard::planner
