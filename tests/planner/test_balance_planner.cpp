// Balance mode: invariants on random and public workloads, determinism, beating the contiguous
// placement, and re-planning against a current plan.
#include <gtest/gtest.h>

#include "planner/migration.h"
#include "planner/planner.h"
#include "planner/replica_counts.h"
#include "planner_invariants.h"
#include "tests/expect_error.h"
#include "workload_fixtures.h"

namespace switchyard::planner {
namespace {

using testing::expect_valid_plan;

struct Shape {
  int nodes, gpus, redundant;
};

TEST(BalancePlanner, RandomWorkloadsGiveValidDeterministicPlans) {
  for (std::uint32_t seed = 1; seed <= 4; ++seed) {
    const Workload w = testing::random_workload(3, 32, 4, 512, 0.4 + 0.3 * seed, seed);
    for (const Shape s : {Shape{1, 4, 0}, Shape{2, 4, 8}, Shape{2, 8, 16}, Shape{4, 8, 32}}) {
      SCOPED_TRACE(::testing::Message() << "seed " << seed << " topo " << s.nodes << "x"
                                        << s.gpus << "+" << s.redundant);
      const Topology topo = Topology::for_slots(s.nodes, s.gpus, w.num_experts, s.redundant);
      const Plan plan = make_plan(w, topo, PlanOptions{});
      expect_valid_plan(w, plan);
      EXPECT_EQ(make_plan(w, topo, PlanOptions{}).phy2log, plan.phy2log);
    }
  }
}

TEST(BalancePlanner, NeverWorseThanContiguousWithoutRedundancy) {
  const Workload w = testing::random_workload(4, 64, 6, 1024, 1.0, 7);
  const Topology topo = Topology::for_slots(2, 8, 64, 0);
  const Plan plan = make_plan(w, topo, PlanOptions{});
  std::vector<int> contiguous(64);
  for (int e = 0; e < 64; ++e) contiguous[e] = e;
  for (int l = 0; l < w.num_layers; ++l) {
    EXPECT_LE(layer_imbalance(w.load[l], plan.phy2log[l], topo),
              layer_imbalance(w.load[l], contiguous, topo) + 1e-12);
  }
}

TEST(BalancePlanner, PublicWorkloadsGiveValidPlansNearTheLowerBound) {
  for (const char* name : {"dsmoe16b_zipf1.0", "dsv3_zipf0.5"}) {
    const auto w = testing::public_workload(name, 3);
    if (!w) GTEST_SKIP() << "public workloads not found at " << SWITCHYARD_WORKLOADS_DIR;
    for (const Shape s : {Shape{2, 8, 0}, Shape{2, 8, 16}, Shape{4, 8, 32}, Shape{8, 8, 64}}) {
      SCOPED_TRACE(::testing::Message() << name << " " << s.nodes << "x" << s.gpus << "+"
                                        << s.redundant);
      const Topology topo = Topology::for_slots(s.nodes, s.gpus, w->num_experts, s.redundant);
      const Plan plan = make_plan(*w, topo, PlanOptions{});
      expect_valid_plan(*w, plan);
      if (s.redundant >= 32) {
        // Plenty of redundancy: within a few percent of perfect balance.
        EXPECT_LT(score_plan(*w, plan).imb_mean, 1.06);
      }
    }
  }
}

TEST(BalancePlanner, ReplicaCountsRespectBoundsAndRejectImpossibleSlotCounts) {
  const std::vector<std::int64_t> load{100, 1, 1};
  EXPECT_EQ(greedy_replica_counts(load, 6, 2), (std::vector<int>{2, 2, 2}));
  EXPECT_SY_ERROR(greedy_replica_counts(load, 2, 2), switchyard::ErrorCode::invalid_argument);
  EXPECT_SY_ERROR(greedy_replica_counts(load, 7, 2), switchyard::ErrorCode::invalid_argument);
  EXPECT_SY_ERROR(Topology::for_slots(2, 8, 64, 3), switchyard::ErrorCode::invalid_argument);
}

TEST(BalancePlanner, KeepsTheCurrentPlanWhenTheGainIsBelowTheThreshold) {
  const Workload w = testing::random_workload(3, 32, 4, 512, 1.0, 11);
  const Topology topo = Topology::for_slots(2, 4, 32, 8);
  const Plan fresh = make_plan(w, topo, PlanOptions{});
  // Re-planning a plan against itself moves nothing.
  const Plan again = make_plan(w, topo, PlanOptions{}, &fresh);
  for (int l = 0; l < w.num_layers; ++l) {
    EXPECT_EQ(moved_replicas(fresh.phy2log[l], again.phy2log[l], topo), 0);
  }
  // A shuffled current plan: with a huge threshold nothing moves, with none the new plan is as
  // balanced as the fresh one and overlaps the current one at least as much as the fresh one does.
  Plan current = fresh;
  for (auto& row : current.phy2log) std::reverse(row.begin(), row.end());
  std::swap(current.phy2log[0][0], current.phy2log[0][topo.num_slots() / 2]);
  PlanOptions lazy;
  lazy.min_gain = 10.0;
  EXPECT_EQ(make_plan(w, topo, lazy, &current).phy2log, current.phy2log);
  PlanOptions eager;
  eager.min_gain = 0.0;
  const Plan moved = make_plan(w, topo, eager, &current);
  expect_valid_plan(w, moved);
  for (int l = 0; l < w.num_layers; ++l) {
    EXPECT_NEAR(layer_imbalance(w.load[l], moved.phy2log[l], topo),
                layer_imbalance(w.load[l], fresh.phy2log[l], topo), 1e-12);
    EXPECT_LE(moved_replicas(current.phy2log[l], moved.phy2log[l], topo),
              moved_replicas(current.phy2log[l], fresh.phy2log[l], topo));
  }
}

TEST(BalancePlanner, RejectsACurrentPlanForAnotherTopology) {
  const Workload w = testing::random_workload(1, 16, 2, 64, 1.0, 3);
  const Plan plan = make_plan(w, Topology::for_slots(2, 2, 16, 0), PlanOptions{});
  EXPECT_SY_ERROR(make_plan(w, Topology::for_slots(2, 4, 16, 0), PlanOptions{}, &plan),
                  switchyard::ErrorCode::invalid_argument);
  EXPECT_SY_ERROR(parse_plan_mode("fast"), switchyard::ErrorCode::invalid_argument);
}

}  // namespace
}  // namespace switchyard::planner
