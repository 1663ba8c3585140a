#include "planner/score.h"

#include <algorithm>
#include <numeric>

#include "base/error.h"
#include "planner/replica_counts.h"

namespace switchyard::planner {

std::vector<double> device_loads(std::span<const std::int64_t> load, std::span<const int> phy2log,
                                 const Topology& topo) {
  std::vector<int> count(load.size(), 0);
  for (int e : phy2log) ++count[e];
  std::vector<double> device(topo.num_devices(), 0.0);
  for (std::size_t j = 0; j < phy2log.size(); ++j) {
    const int e = phy2log[j];
    device[topo.device_of_slot(static_cast<int>(j))] += static_cast<double>(load[e]) / count[e];
  }
  return device;
}

double layer_imbalance(std::span<const std::int64_t> load, std::span<const int> phy2log,
                       const Topology& topo) {
  const std::vector<double> device = device_loads(load, phy2log, topo);
  const double total = std::accumulate(device.begin(), device.end(), 0.0);
  if (total <= 0.0) return 1.0;
  return *std::max_element(device.begin(), device.end()) / (total / topo.num_devices());
}

int duplicate_replicas(std::span<const int> phy2log, const Topology& topo, int num_experts) {
  int duplicates = 0;
  std::vector<int> seen_on(num_experts, -1);
  for (std::size_t j = 0; j < phy2log.size(); ++j) {
    const int device = topo.device_of_slot(static_cast<int>(j));
    if (seen_on[phy2log[j]] == device) ++duplicates;
    seen_on[phy2log[j]] = device;  // slots of one device are consecutive
  }
  return duplicates;
}

double remote_nodes_per_token(const Workload& workload, int layer, std::span<const int> phy2log,
                              const Topology& topo) {
  const int num_experts = workload.num_experts;
  const int nodes = topo.num_nodes;
  // Replica nodes of each expert in ascending slot order, and whether a node holds one.
  std::vector<std::vector<int>> replica_node(num_experts);
  std::vector<char> on_node(static_cast<std::size_t>(num_experts) * nodes, 0);
  for (std::size_t j = 0; j < phy2log.size(); ++j) {
    const int node = topo.node_of_slot(static_cast<int>(j));
    replica_node[phy2log[j]].push_back(node);
    on_node[static_cast<std::size_t>(phy2log[j]) * nodes + node] = 1;
  }
  std::vector<int> stamp(nodes, -1);
  std::int64_t remote = 0;
  for (int t = 0; t < workload.tokens_per_layer; ++t) {
    const int home = topo.node_of_device(t % topo.num_devices());
    const std::uint16_t* ids = workload.token_experts(layer, t);
    for (int k = 0; k < workload.top_k; ++k) {
      const int e = ids[k];
      if (on_node[static_cast<std::size_t>(e) * nodes + home]) continue;
      const auto& replicas = replica_node[e];
      const int node = replicas[t % replicas.size()];
      if (stamp[node] != t) {
        stamp[node] = t;
        ++remote;
      }
    }
  }
  return static_cast<double>(remote) / workload.tokens_per_layer;
}

PlanScore score_plan(const Workload& workload, const Plan& plan) {
  if (plan.num_layers() != workload.num_layers) {
    throw Error(ErrorCode::invalid_argument,
                "score: plan has " + std::to_string(plan.num_layers()) + " layers, workload '" +
                    workload.name + "' has " + std::to_string(workload.num_layers));
  }
  plan.validate(workload.num_experts);
  const Topology& topo = plan.topology;
  PlanScore score;
  score.has_traffic = workload.has_routes();
  for (int l = 0; l < workload.num_layers; ++l) {
    const double imb = layer_imbalance(workload.load[l], plan.phy2log[l], topo);
    score.layer_imb.push_back(imb);
    score.imb_mean += imb;
    score.imb_max = std::max(score.imb_max, imb);
    score.lower_bound_imb +=
        lower_bound_imbalance(workload.load[l], topo.num_slots(), topo.num_devices());
    score.duplicate_replicas += duplicate_replicas(plan.phy2log[l], topo, workload.num_experts);
    if (score.has_traffic) {
      score.remote_nodes_per_token += remote_nodes_per_token(workload, l, plan.phy2log[l], topo);
    }
  }
  score.imb_mean /= workload.num_layers;
  score.lower_bound_imb /= workload.num_layers;
  score.remote_nodes_per_token /= workload.num_layers;
  return score;
}

}  // namespace switchyard::planner
