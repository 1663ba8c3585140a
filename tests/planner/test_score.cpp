// The score function against hand-computed cases (workloads README "Scoring").
#include <gtest/gtest.h>

#include "planner/replica_counts.h"
#include "planner/score.h"
#include "tests/expect_error.h"

namespace switchyard::planner {
namespace {

Workload tiny_workload(int tokens, int top_k, int experts, std::vector<std::uint16_t> routes) {
  Workload w;
  w.name = "tiny";
  w.num_layers = 1;
  w.num_experts = experts;
  w.top_k = top_k;
  w.tokens_per_layer = tokens;
  w.load.assign(1, std::vector<std::int64_t>(experts, 0));
  for (std::uint16_t e : routes) ++w.load[0][e];
  w.routes = std::move(routes);
  w.validate();
  return w;
}

TEST(Score, ImbalanceIsMaxOverMeanWithLoadSplitOverReplicas) {
  const std::vector<std::int64_t> load{6, 2, 1, 1};
  const Topology two_by_two{2, 1, 2};
  EXPECT_DOUBLE_EQ(layer_imbalance(load, std::vector<int>{0, 1, 2, 3}, two_by_two), 8.0 / 5.0);
  EXPECT_DOUBLE_EQ(layer_imbalance(load, std::vector<int>{0, 3, 1, 2}, two_by_two), 7.0 / 5.0);
  const Topology two_by_three{2, 1, 3};
  const std::vector<int> replicated{0, 1, 2, 0, 3, 1};  // e0: 3 per replica, e1: 1 per replica
  const std::vector<double> devices = device_loads(load, replicated, two_by_three);
  EXPECT_DOUBLE_EQ(devices[0], 3.0 + 1.0 + 1.0);
  EXPECT_DOUBLE_EQ(devices[1], 3.0 + 1.0 + 1.0);
  EXPECT_DOUBLE_EQ(layer_imbalance(load, replicated, two_by_three), 1.0);
}

TEST(Score, LowerBoundUsesBestReplicaCountsAndNeverDropsBelowOne) {
  const std::vector<std::int64_t> load{6, 2, 1, 1};
  EXPECT_DOUBLE_EQ(lower_bound_imbalance(load, 4, 2), 6.0 / 5.0);  // no redundancy
  EXPECT_DOUBLE_EQ(lower_bound_imbalance(load, 6, 2), 1.0);         // 6/3 = 2 < mean 5
  EXPECT_DOUBLE_EQ(lower_bound_imbalance(load, 5, 5), 3.0 / 2.0);   // e0 twice: 3 over mean 2
  EXPECT_EQ(greedy_replica_counts(load, 6, 6), (std::vector<int>{3, 1, 1, 1}));
}

TEST(Score, RemoteNodesPerTokenCountsEachNodeOnce) {
  // 2 nodes × 1 device × 2 slots; token t starts on node t mod 2.
  const Workload w = tiny_workload(4, 2, 4, {0, 1, 2, 3, 0, 3, 1, 2});
  const Topology topo{2, 1, 2};
  // node 0 holds {0,1}, node 1 {2,3}: t0, t1 local; t2 (node 0) needs 3; t3 (node 1) needs 1.
  EXPECT_DOUBLE_EQ(remote_nodes_per_token(w, 0, std::vector<int>{0, 1, 2, 3}, topo), 0.5);
  // Two experts of one token on the same remote node cost one crossing: t0 home 0 needs {2,3}.
  const Workload same_node = tiny_workload(2, 2, 4, {2, 3, 0, 1});
  EXPECT_DOUBLE_EQ(remote_nodes_per_token(same_node, 0, std::vector<int>{0, 1, 2, 3}, topo), 1.0);
}

TEST(Score, RemoteReplicaIsChosenByTokenIndexInSlotOrder) {
  // 3 nodes × 1 device × 2 slots: node0 {0,1}, node1 {2,3}, node2 {2,1}.
  const Workload w = tiny_workload(3, 2, 4, {2, 3, 0, 1, 0, 2});
  const Topology topo{3, 1, 2};
  const std::vector<int> plan{0, 1, 2, 3, 2, 1};
  // t0 (node 0): expert 2 -> replica 0 mod 2 = node 1, expert 3 on node 1: one node.
  // t1 (node 1): expert 0 -> node 0; expert 1 -> replica 1 mod 2 = node 2: two nodes.
  // t2 (node 2): expert 0 -> node 0; expert 2 local: one node.
  EXPECT_DOUBLE_EQ(remote_nodes_per_token(w, 0, plan, topo), 4.0 / 3.0);
}

TEST(Score, DuplicatesCountReplicasSharingADevice) {
  EXPECT_EQ(duplicate_replicas(std::vector<int>{0, 0, 1, 2}, Topology{2, 1, 2}, 3), 1);
  EXPECT_EQ(duplicate_replicas(std::vector<int>{0, 1, 0, 2}, Topology{2, 1, 2}, 3), 0);
}

TEST(Score, ScorePlanAveragesLayersAndRejectsAMismatchedPlan) {
  const Workload w = tiny_workload(4, 2, 4, {0, 1, 2, 3, 0, 3, 1, 2});
  Plan plan;
  plan.topology = Topology{2, 1, 2};
  plan.phy2log = {{0, 1, 2, 3}};
  const PlanScore score = score_plan(w, plan);
  EXPECT_TRUE(score.has_traffic);
  EXPECT_DOUBLE_EQ(score.remote_nodes_per_token, 0.5);
  EXPECT_DOUBLE_EQ(score.imb_mean, 1.0);  // every expert has load 2
  plan.phy2log.push_back({0, 1, 2, 3});
  EXPECT_SY_ERROR(score_plan(w, plan), switchyard::ErrorCode::invalid_argument);
}

}  // namespace
}  // namespace switchyard::planner
