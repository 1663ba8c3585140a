// The node-aware mode's starting point: every node filled exactly, no two replicas of an expert
// on one node, within the budget when it is generous, and fewer remote nodes per token than the
// balance placement on the group-limited public workload.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "planner/balance_planner.h"
#include "planner/node_clustering.h"
#include "planner/node_traffic.h"
#include "workload_fixtures.h"

namespace switchyard::planner {
namespace {

std::vector<std::vector<int>> replica_nodes(const std::vector<std::vector<int>>& node_replicas,
                                            int num_experts) {
  std::vector<std::vector<int>> nodes(num_experts);
  for (std::size_t n = 0; n < node_replicas.size(); ++n) {
    for (int e : node_replicas[n]) nodes[e].push_back(static_cast<int>(n));
  }
  return nodes;
}

TEST(NodeClustering, FillsEveryNodeExactlyWithoutDuplicates) {
  const Workload w = testing::random_workload(2, 32, 4, 512, 1.0, 31);
  const Topology topo = Topology::for_slots(4, 2, 32, 8);
  for (int l = 0; l < w.num_layers; ++l) {
    const std::vector<int> row = plan_layer_for_balance(w.load[l], topo, 5000);
    std::vector<int> count(w.num_experts, 0);
    for (int e : row) ++count[e];
    const double total = std::accumulate(w.load[l].begin(), w.load[l].end(), 0.0);
    const auto nodes = cluster_replicas_by_node(w, l, topo, count, 2.0 * total);
    ASSERT_EQ(static_cast<int>(nodes.size()), topo.num_nodes);
    std::vector<int> placed(w.num_experts, 0);
    for (const auto& node : nodes) {
      EXPECT_EQ(static_cast<int>(node.size()), topo.gpus_per_node * topo.slots_per_gpu);
      std::vector<int> sorted = node;
      std::sort(sorted.begin(), sorted.end());
      EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end());
      for (int e : node) ++placed[e];
    }
    EXPECT_EQ(placed, count);
  }
}

TEST(NodeClustering, NeedsFewerNodesPerTokenThanTheBalancePlacement) {
  const auto w = testing::public_workload("dsv3_zipf0.5", 2);
  if (!w) GTEST_SKIP() << "public workloads not found at " << SWITCHYARD_WORKLOADS_DIR;
  const Topology topo = Topology::for_slots(8, 8, w->num_experts, 0);
  for (int l = 0; l < w->num_layers; ++l) {
    const std::vector<int> row = plan_layer_for_balance(w->load[l], topo, 5000);
    const std::vector<int> count(w->num_experts, 1);
    std::vector<std::vector<int>> balance_nodes(topo.num_nodes);
    for (int j = 0; j < topo.num_slots(); ++j)
      balance_nodes[topo.node_of_slot(j)].push_back(row[j]);
    const double total = std::accumulate(w->load[l].begin(), w->load[l].end(), 0.0);
    const auto clustered = cluster_replicas_by_node(*w, l, topo, count, 1.05 * total / 8);
    const NodeTraffic a(*w, l, topo, replica_nodes(balance_nodes, w->num_experts));
    const NodeTraffic b(*w, l, topo, replica_nodes(clustered, w->num_experts));
    EXPECT_LT(b.total_remote(), a.total_remote() * 9 / 10) << "layer " << l;
  }
}

class NodeTrafficMoves : public ::testing::TestWithParam<int> {};

// Replica node lists of three shapes: one replica, two on distinct nodes, and (parameter 1)
// three with two on one node, so the one-sweep pricing of several replicas meets duplicates.
std::vector<std::vector<int>> replica_layout(int shape) {
  std::vector<std::vector<int>> nodes(16);
  for (int e = 0; e < 16; ++e) {
    if (e < 8) {
      nodes[e] = {e % 4, (e + 1) % 4};
      if (shape == 1 && e < 4) nodes[e].push_back(e % 4);
    } else {
      nodes[e] = {e % 4};
    }
    std::sort(nodes[e].begin(), nodes[e].end());
  }
  return nodes;
}

TEST_P(NodeTrafficMoves, MoveDeltasMatchDeltaIf) {
  const Workload w = testing::random_workload(1, 16, 3, 256, 1.0, 41);
  const Topology topo = Topology::for_slots(4, 2, 16, GetParam() == 1 ? 16 : 8);
  const std::vector<std::vector<int>> nodes = replica_layout(GetParam());
  const NodeTraffic traffic(w, 0, topo, nodes);
  std::vector<std::int64_t> out;
  for (int e = 0; e < 16; ++e) {
    for (int from : nodes[e]) {
      traffic.move_deltas(e, from, out);
      for (int q = 0; q < topo.num_nodes; ++q) {
        if (std::binary_search(nodes[e].begin(), nodes[e].end(), q)) {
          EXPECT_EQ(out[q], NodeTraffic::kNoMove);
          continue;
        }
        std::vector<int> moved = nodes[e];
        *std::find(moved.begin(), moved.end(), from) = q;
        std::sort(moved.begin(), moved.end());
        EXPECT_EQ(out[q], traffic.delta_if(e, moved)) << "expert " << e << " to " << q;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(NodeTraffic, NodeTrafficMoves, ::testing::Values(0, 1));

}  // namespace
}  // namespace switchyard::planner
