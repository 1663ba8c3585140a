// Remote nodes per token of one layer as a function of which nodes hold each expert's replicas,
// kept incrementally so that the node-aware search can price moving a replica exactly. Uses the
// scoring traffic model: token t starts on node (t mod G) / gpus_per_node; an expert is served on
// the token's node when it has a replica there, else by its replica t mod count in ascending slot
// order, which for node sets is ascending node order.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "planner/topology.h"
#include "planner/workload.h"

namespace switchyard::planner {

class NodeTraffic {
 public:
  // replica_nodes[e]: nodes of e's replicas, ascending, at least one each.
  NodeTraffic(const Workload& workload, int layer, const Topology& topo,
              std::vector<std::vector<int>> replica_nodes);

  // Change in the layer's total remote (token, node) crossings if expert e's replicas moved to
  // `nodes` (ascending), everything else unchanged.
  std::int64_t delta_if(int expert, const std::vector<int>& nodes) const;
  // out[q]: delta_if for moving e's replica on node `from` to node q, for every node q at once;
  // kNoMove where q holds e already (`from` included).
  void move_deltas(int expert, int from, std::vector<std::int64_t>& out) const;
  static constexpr std::int64_t kNoMove = std::numeric_limits<std::int64_t>::max();
  // Moves e's replicas to `nodes` and returns the change in total crossings.
  std::int64_t apply(int expert, const std::vector<int>& nodes);

  const std::vector<int>& replica_nodes(int expert) const { return replica_nodes_[expert]; }
  std::int64_t total_remote() const { return total_remote_; }
  int num_tokens() const { return num_tokens_; }

 private:
  // `on_node[n]`: whether `nodes` holds n (a lookup instead of a search: this runs per token).
  int serving_node(const std::vector<int>& nodes, const char* on_node, int token) const {
    const int home = home_[token];
    if (on_node[home]) return home;
    return nodes.size() == 1 ? nodes.front() : nodes[token % nodes.size()];
  }
  const char* on_nodes(int expert) const {
    return replica_on_.data() + static_cast<std::size_t>(expert) * num_nodes_;
  }
  std::vector<char> membership(const std::vector<int>& nodes) const;
  int& served(int token, int node) { return served_[static_cast<std::size_t>(token) * num_nodes_ + node]; }
  int served(int token, int node) const { return served_[static_cast<std::size_t>(token) * num_nodes_ + node]; }

  int num_nodes_;
  int num_tokens_;
  std::vector<int> home_;                          // [token] -> node the token starts on
  std::vector<int> token_offset_;                  // tokens of expert e: tokens_[offset[e], offset[e+1])
  std::vector<int> tokens_;
  std::vector<std::vector<int>> replica_nodes_;
  std::vector<char> replica_on_;                   // [expert][node] -> holds a replica there
  std::vector<int> served_;                        // [token][node] -> experts served there
  std::int64_t total_remote_ = 0;
};

}  // namespace switchyard::planner
