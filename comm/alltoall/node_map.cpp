#include "comm/alltoall/node_map.h"

#include <fmt/format.h>

#include <algorithm>

#include "comm/error.h"

namespace switchyard::comm {

NodeMap::NodeMap(const Topology& topology)
    : node_of_(topology.node_of_rank), local_(topology.node_of_rank.size()) {
  const int nodes = node_of_.empty() ? 0 : *std::max_element(node_of_.begin(), node_of_.end()) + 1;
  ranks_.resize(static_cast<size_t>(nodes));
  for (size_t r = 0; r < node_of_.size(); ++r) {
    SY_ENFORCE_ARG(node_of_[r] >= 0, "topology: rank {} has node id {}", r, node_of_[r]);
    auto& members = ranks_[static_cast<size_t>(node_of_[r])];
    local_[r] = static_cast<int>(members.size());
    members.push_back(static_cast<int>(r));
  }
  for (int n = 0; n < nodes; ++n) {
    SY_ENFORCE_ARG(!(ranks_[static_cast<size_t>(n)].empty()),
                   "topology: node {} of {} has no ranks; node ids must be dense", n, nodes);
  }
}

int NodeMap::max_node_size() const {
  size_t largest = 0;
  for (const auto& members : ranks_) largest = std::max(largest, members.size());
  return static_cast<int>(largest);
}

int NodeMap::relay(int source, int node) const {
  if (node_of(source) == node) return source;
  const auto& members = ranks(node);
  return members[static_cast<size_t>(local_index(source)) % members.size()];
}

std::vector<int> NodeMap::relayed_by(int relay_rank) const {
  const int node = node_of(relay_rank);
  std::vector<int> sources;
  for (int s = 0; s < static_cast<int>(node_of_.size()); ++s) {
    if (relay(s, node) == relay_rank) sources.push_back(s);
  }
  return sources;
}

}  // namespace switchyard::comm
