// The node-aware mode's group-aligned start: when it applies, which split of groups over nodes
// it picks on hand-made routes, that it honours the caller's fit test, and that the replicas it
// lays out fill every node exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "planner/balance_planner.h"
#include "planner/group_alignment.h"
#include "planner/planner.h"
#include "planner/score.h"
#include "workload_fixtures.h"

namespace switchyard::planner {
namespace {

// 8 experts in 4 groups of 2, tokens use 2 groups. Tokens starting on node 0 (devices 0, 1 of a
// 2x2 grid) use groups 1 and 3; tokens starting on node 1 use groups 0 and 2. Every expert gets
// the same load.
Workload two_cliques() {
  Workload w;
  w.name = "two-cliques";
  w.num_layers = 1;
  w.num_experts = 8;
  w.top_k = 2;
  w.num_groups = 4;
  w.topk_groups = 2;
  w.tokens_per_layer = 16;
  w.load.assign(1, std::vector<std::int64_t>(8, 0));
  for (int t = 0; t < w.tokens_per_layer; ++t) {
    const bool node0 = (t % 4) / 2 == 0;
    const int pick = (t / 4) % 2;  // alternate the two experts of each group
    const int a = node0 ? 2 + pick : 0 + pick;
    const int b = node0 ? 6 + pick : 4 + pick;
    for (int e : {a, b}) {
      w.routes.push_back(static_cast<std::uint16_t>(e));
      ++w.load[0][e];
    }
  }
  w.validate();
  return w;
}

const auto always_fits = [](std::span<const int>) { return true; };

TEST(GroupAlignment, AppliesOnlyToGroupLimitedRoutingThatDividesOverTheNodes) {
  Workload w;
  w.num_experts = 256;
  w.num_groups = 8;
  w.topk_groups = 4;
  EXPECT_TRUE(groups_align_with_nodes(w, Topology{4, 8, 8}));
  EXPECT_TRUE(groups_align_with_nodes(w, Topology{8, 8, 4}));
  EXPECT_TRUE(groups_align_with_nodes(w, Topology{2, 8, 16}));
  EXPECT_FALSE(groups_align_with_nodes(w, Topology{3, 8, 11}));
  EXPECT_FALSE(groups_align_with_nodes(w, Topology{16, 4, 4}));  // more nodes than groups
  w.topk_groups = 8;  // every group allowed: routing is not group-limited
  EXPECT_FALSE(groups_align_with_nodes(w, Topology{4, 8, 8}));
  w.num_groups = 1;
  w.topk_groups = 1;
  EXPECT_FALSE(groups_align_with_nodes(w, Topology{4, 8, 8}));
}

TEST(GroupAlignment, PutsCoActivatedGroupsOnTheNodeTheirTokensStartOn) {
  const Workload w = two_cliques();
  const Topology topo = Topology::for_slots(2, 2, 8, 0);
  ASSERT_TRUE(groups_align_with_nodes(w, topo));
  EXPECT_EQ(align_groups_to_nodes(w, 0, topo, always_fits), (std::vector<int>{1, 0, 1, 0}));
}

TEST(GroupAlignment, PrefersSplitsThatFit) {
  const Workload w = two_cliques();
  const Topology topo = Topology::for_slots(2, 2, 8, 0);
  // Refuse every split keeping groups 0 and 2 together: the best remaining one pairs 0 with 1
  // or 3, and is still returned.
  const auto apart = [](std::span<const int> node_of_group) {
    return node_of_group[0] != node_of_group[2];
  };
  const std::vector<int> split = align_groups_to_nodes(w, 0, topo, apart);
  ASSERT_EQ(split.size(), 4u);
  EXPECT_NE(split[0], split[2]);
  // When nothing fits, the split with the fewest crossings is returned all the same.
  const auto never = [](std::span<const int>) { return false; };
  EXPECT_EQ(align_groups_to_nodes(w, 0, topo, never), (std::vector<int>{1, 0, 1, 0}));
}

TEST(GroupAlignment, NodeAwarePlanNeedsNoCrossingOnTwoCliques) {
  const Workload w = two_cliques();
  const Topology topo = Topology::for_slots(2, 2, 8, 0);
  PlanOptions options;
  options.mode = PlanMode::node_aware;
  const Plan plan = make_plan(w, topo, options);
  const PlanScore score = score_plan(w, plan);
  EXPECT_EQ(score.remote_nodes_per_token, 0.0);
  EXPECT_EQ(score.duplicate_replicas, 0);
  EXPECT_DOUBLE_EQ(score.imb_mean, 1.0);
}

TEST(GroupAlignment, ReplicasFillEveryNodeWithEachExpertOnItsGroupsNode) {
  const Workload w = testing::random_grouped_workload(2, 32, 4, 2, 4, 512, 1.0, 7);
  for (const Topology& topo : {Topology::for_slots(2, 2, 32, 8), Topology::for_slots(4, 2, 32, 8),
                               Topology::for_slots(4, 2, 32, 0)}) {
    ASSERT_TRUE(groups_align_with_nodes(w, topo));
    for (int l = 0; l < w.num_layers; ++l) {
      const std::vector<int> row = plan_layer_for_balance(w.load[l], topo, 5000);
      std::vector<int> count(w.num_experts, 0);
      for (int e : row) ++count[e];
      const std::vector<int> node_of_group = align_groups_to_nodes(w, l, topo, always_fits);
      const double total = std::accumulate(w.load[l].begin(), w.load[l].end(), 0.0);
      const auto nodes =
          group_aligned_replicas(w, l, topo, count, node_of_group, 1.05 * total / topo.num_nodes);
      ASSERT_EQ(static_cast<int>(nodes.size()), topo.num_nodes);
      std::vector<int> placed(w.num_experts, 0);
      for (int n = 0; n < topo.num_nodes; ++n) {
        EXPECT_EQ(static_cast<int>(nodes[n].size()), topo.gpus_per_node * topo.slots_per_gpu);
        for (int e : nodes[n]) {
          ++placed[e];
          EXPECT_LE(std::count(nodes[n].begin(), nodes[n].end(), e), topo.gpus_per_node);
        }
      }
      EXPECT_EQ(placed, count);
      const int group_size = w.num_experts / w.num_groups;
      for (int e = 0; e < w.num_experts; ++e) {
        const auto& home = nodes[node_of_group[e / group_size]];
        EXPECT_NE(std::find(home.begin(), home.end(), e), home.end()) << "expert " << e;
      }
    }
  }
}

}  // namespace
}  // namespace switchyard::planner
