#include "planner/node_traffic.h"

#include <algorithm>

namespace switchyard::planner {

NodeTraffic::NodeTraffic(const Workload& workload, int layer, const Topology& topo,
                         std::vector<std::vector<int>> replica_nodes)
    : num_nodes_(topo.num_nodes),
      num_tokens_(workload.tokens_per_layer),
      home_(workload.tokens_per_layer),
      token_offset_(workload.num_experts + 1, 0),
      tokens_(static_cast<std::size_t>(workload.tokens_per_layer) * workload.top_k),
      replica_nodes_(std::move(replica_nodes)),
      replica_on_(static_cast<std::size_t>(workload.num_experts) * topo.num_nodes, 0),
      served_(static_cast<std::size_t>(workload.tokens_per_layer) * topo.num_nodes, 0) {
  for (int e = 0; e < workload.num_experts; ++e) {
    for (int n : replica_nodes_[e]) replica_on_[static_cast<std::size_t>(e) * num_nodes_ + n] = 1;
  }
  for (int t = 0; t < num_tokens_; ++t) {
    home_[t] = topo.node_of_device(t % topo.num_devices());
    const std::uint16_t* ids = workload.token_experts(layer, t);
    for (int k = 0; k < workload.top_k; ++k) ++token_offset_[ids[k] + 1];
  }
  for (int e = 0; e < workload.num_experts; ++e) token_offset_[e + 1] += token_offset_[e];
  std::vector<int> fill(token_offset_.begin(), token_offset_.end() - 1);
  for (int t = 0; t < num_tokens_; ++t) {
    const std::uint16_t* ids = workload.token_experts(layer, t);
    for (int k = 0; k < workload.top_k; ++k) tokens_[fill[ids[k]]++] = t;
  }
  for (int e = 0; e < workload.num_experts; ++e) {
    for (int i = token_offset_[e]; i < token_offset_[e + 1]; ++i) {
      const int t = tokens_[i];
      const int node = serving_node(replica_nodes_[e], on_nodes(e), t);
      if (served(t, node)++ == 0 && node != home_[t]) ++total_remote_;
    }
  }
}

std::vector<char> NodeTraffic::membership(const std::vector<int>& nodes) const {
  std::vector<char> on(num_nodes_, 0);
  for (int n : nodes) on[n] = 1;
  return on;
}

std::int64_t NodeTraffic::delta_if(int expert, const std::vector<int>& nodes) const {
  const std::vector<int>& current = replica_nodes_[expert];
  const std::vector<char> to_on = membership(nodes);
  std::int64_t delta = 0;
  for (int i = token_offset_[expert]; i < token_offset_[expert + 1]; ++i) {
    const int t = tokens_[i];
    const int from = serving_node(current, on_nodes(expert), t);
    const int to = serving_node(nodes, to_on.data(), t);
    if (from == to) continue;
    if (from != home_[t] && served(t, from) == 1) --delta;
    if (to != home_[t] && served(t, to) == 0) ++delta;
  }
  return delta;
}

void NodeTraffic::move_deltas(int expert, int from, std::vector<std::int64_t>& out) const {
  const std::vector<int>& current = replica_nodes_[expert];
  out.assign(num_nodes_, kNoMove);
  if (current.size() == 1) {
    // One replica serves every token: a single sweep prices all targets.
    std::fill(out.begin(), out.end(), 0);
    for (int i = token_offset_[expert]; i < token_offset_[expert + 1]; ++i) {
      const int t = tokens_[i];
      const int saved = (from != home_[t] && served(t, from) == 1) ? 1 : 0;
      for (int q = 0; q < num_nodes_; ++q) {
        out[q] += (q != home_[t] && served(t, q) == 0 ? 1 : 0) - saved;
      }
    }
    out[from] = kNoMove;
    return;
  }
  // Several replicas: moving the one on `from` to q leaves `base` (the others, ascending) with q
  // inserted at position pos[q], so the serving node of every target comes from one sweep.
  std::vector<int> base = current;
  base.erase(std::find(base.begin(), base.end(), from));
  std::vector<char> base_on = membership(base);
  std::vector<int> pos(num_nodes_);
  for (int q = 0; q < num_nodes_; ++q) {
    pos[q] = static_cast<int>(std::upper_bound(base.begin(), base.end(), q) - base.begin());
  }
  const int k = static_cast<int>(current.size());
  std::fill(out.begin(), out.end(), 0);
  for (int i = token_offset_[expert]; i < token_offset_[expert + 1]; ++i) {
    const int t = tokens_[i];
    const int home = home_[t];
    if (base_on[home]) continue;  // served at home before and after any move
    const int was = serving_node(current, on_nodes(expert), t);
    const int saved = (was != home && served(t, was) == 1) ? 1 : 0;
    const int r = t % k;
    for (int q = 0; q < num_nodes_; ++q) {
      const int now = q == home ? home : (r < pos[q] ? base[r] : (r == pos[q] ? q : base[r - 1]));
      if (now == was) continue;
      out[q] += (now != home && served(t, now) == 0 ? 1 : 0) - saved;
    }
  }
  for (int q = 0; q < num_nodes_; ++q) {
    if (on_nodes(expert)[q]) out[q] = kNoMove;
  }
}

std::int64_t NodeTraffic::apply(int expert, const std::vector<int>& nodes) {
  const std::vector<char> to_on = membership(nodes);
  std::int64_t delta = 0;
  for (int i = token_offset_[expert]; i < token_offset_[expert + 1]; ++i) {
    const int t = tokens_[i];
    const int from = serving_node(replica_nodes_[expert], on_nodes(expert), t);
    const int to = serving_node(nodes, to_on.data(), t);
    if (from == to) continue;
    if (--served(t, from) == 0 && from != home_[t]) --delta;
    if (served(t, to)++ == 0 && to != home_[t]) ++delta;
  }
  replica_nodes_[expert] = nodes;
  std::copy(to_on.begin(), to_on.end(),
            replica_on_.begin() + static_cast<std::ptrdiff_t>(expert) * num_nodes_);
  total_remote_ += delta;
  return delta;
}

}  // namespace switchyard::planner
