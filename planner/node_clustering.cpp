#include "planner/node_clustering.h"

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <tuple>

namespace switchyard::planner {

std::vector<std::vector<int>> cluster_replicas_by_node(const Workload& workload, int layer,
                                                       const Topology& topo,
                                                       std::span<const int> count,
                                                       double node_budget) {
  const int num_experts = workload.num_experts;
  const int num_tokens = workload.tokens_per_layer;
  const int nodes = topo.num_nodes;
  const int capacity = topo.gpus_per_node * topo.slots_per_gpu;
  const auto& load = workload.load[layer];
  auto weight = [&](int e) { return static_cast<double>(load[e]) / count[e]; };
  std::vector<int> order(num_experts);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    const double wa = weight(a), wb = weight(b);
    return wa != wb ? wa > wb : a < b;
  });

  // Tokens of each expert: tokens[offset[e], offset[e+1]).
  std::vector<int> offset(num_experts + 1, 0);
  for (int t = 0; t < num_tokens; ++t) {
    const std::uint16_t* ids = workload.token_experts(layer, t);
    for (int k = 0; k < workload.top_k; ++k) ++offset[ids[k] + 1];
  }
  for (int e = 0; e < num_experts; ++e) offset[e + 1] += offset[e];
  std::vector<int> tokens(offset.back());
  {
    std::vector<int> fill(offset.begin(), offset.end() - 1);
    for (int t = 0; t < num_tokens; ++t) {
      const std::uint16_t* ids = workload.token_experts(layer, t);
      for (int k = 0; k < workload.top_k; ++k) tokens[fill[ids[k]]++] = t;
    }
  }

  // A token costs one crossing per node it needs, so what a replica should join is the node its
  // tokens already need more often than tokens at large do (pairwise co-activation instead piles
  // every hot expert onto the first node, since hot experts co-occur with everything).
  std::vector<char> touches(static_cast<std::size_t>(num_tokens) * nodes, 0);
  std::vector<std::int64_t> covered(nodes, 0);  // tokens that need node n so far
  std::vector<std::int64_t> hits(nodes);
  std::vector<std::vector<int>> node_replicas(nodes);
  std::vector<double> node_load(nodes, 0.0);
  std::vector<int> holds(static_cast<std::size_t>(num_experts) * nodes, 0);
  for (int e : order) {
    const double w = weight(e);
    const int first = offset[e], last = offset[e + 1];
    std::fill(hits.begin(), hits.end(), 0);
    for (int i = first; i < last; ++i) {
      const char* row = touches.data() + static_cast<std::size_t>(tokens[i]) * nodes;
      for (int n = 0; n < nodes; ++n) hits[n] += row[n];
    }
    const double own = std::max(1, last - first);
    for (int r = 0; r < count[e]; ++r) {
      // Preference: room and the fewest replicas of e (a node's devices can hold at most one
      // each, and a second replica on a node saves no traffic); then within budget; then the
      // largest lift of e's tokens' need for the node over all tokens' need; then least loaded;
      // then lowest id.
      auto key = [&](int n) {
        const bool within = node_load[n] + w <= node_budget;
        const double lift =
            within ? hits[n] / own - static_cast<double>(covered[n]) / num_tokens : 0.0;
        return std::tuple(-holds[static_cast<std::size_t>(e) * nodes + n], within, lift,
                          -node_load[n]);
      };
      int best = -1;
      for (int n = 0; n < nodes; ++n) {
        if (static_cast<int>(node_replicas[n].size()) == capacity) continue;
        if (best < 0 || key(n) > key(best)) best = n;
      }
      node_replicas[best].push_back(e);
      node_load[best] += w;
      ++holds[static_cast<std::size_t>(e) * nodes + best];
      for (int i = first; i < last; ++i) {
        char& touched = touches[static_cast<std::size_t>(tokens[i]) * nodes + best];
        if (!touched) {
          touched = 1;
          ++covered[best];
        }
      }
    }
  }
  return node_replicas;
}

}  // namespace switchyard::planner
