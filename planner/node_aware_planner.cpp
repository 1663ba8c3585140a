#include "planner/node_aware_planner.h"

#include <algorithm>
#include <numeric>

#include "planner/node_traffic.h"
#include "planner/score.h"
#include "planner/slot_packing.h"

namespace switchyard::planner {

namespace {

constexpr double kTolerance = 1e-9;
// Candidates per direction examined for each node pair, and passes over all pairs: enough for the
// search to converge on the public workloads while bounding the cost on adversarial ones.
constexpr int kCandidatesPerSide = 6;
constexpr int kMaxPasses = 40;

struct Candidate {
  int index;  // position in the node's replica list
  std::int64_t delta;
};

std::vector<int> without_one(std::vector<int> nodes, int node) {
  nodes.erase(std::find(nodes.begin(), nodes.end(), node));
  return nodes;
}

std::vector<int> with_one(std::vector<int> nodes, int node) {
  nodes.insert(std::upper_bound(nodes.begin(), nodes.end(), node), node);
  return nodes;
}

class NodeSwapSearch {
 public:
  NodeSwapSearch(std::span<const std::int64_t> load, const std::vector<int>& count,
                 std::vector<std::vector<int>> node_replicas, NodeTraffic& traffic,
                 double node_budget)
      : load_(load),
        count_(count),
        node_replicas_(std::move(node_replicas)),
        node_load_(node_replicas_.size(), 0.0),
        traffic_(traffic),
        node_budget_(node_budget) {
    for (std::size_t n = 0; n < node_replicas_.size(); ++n) {
      for (int e : node_replicas_[n]) node_load_[n] += weight(e);
    }
  }

  void run() {
    const int nodes = static_cast<int>(node_replicas_.size());
    for (int pass = 0; pass < kMaxPasses; ++pass) {
      bool improved = false;
      for (int a = 0; a < nodes; ++a) {
        for (int b = a + 1; b < nodes; ++b) improved |= swap_between(a, b);
      }
      if (!improved) break;
    }
  }

  const std::vector<std::vector<int>>& node_replicas() const { return node_replicas_; }

 private:
  double weight(int e) const { return static_cast<double>(load_[e]) / count_[e]; }

  // Most promising replicas of node `from` to send to node `to`, best (most negative) first.
  std::vector<Candidate> candidates(int from, int to) const {
    std::vector<Candidate> list;
    const auto& replicas = node_replicas_[from];
    for (int i = 0; i < static_cast<int>(replicas.size()); ++i) {
      const int e = replicas[i];
      const auto& nodes = traffic_.replica_nodes(e);
      if (std::binary_search(nodes.begin(), nodes.end(), to)) continue;  // keep one per node
      list.push_back({i, traffic_.delta_if(e, with_one(without_one(nodes, from), to))});
    }
    const std::size_t keep = std::min<std::size_t>(list.size(), kCandidatesPerSide);
    std::partial_sort(list.begin(), list.begin() + keep, list.end(),
                      [](const Candidate& x, const Candidate& y) {
                        return x.delta != y.delta ? x.delta < y.delta : x.index < y.index;
                      });
    list.resize(keep);
    return list;
  }

  // Applies the best exactly-improving swap of one replica of node a with one of node b.
  bool swap_between(int a, int b) {
    const std::vector<Candidate> from_a = candidates(a, b);
    const std::vector<Candidate> from_b = candidates(b, a);
    std::vector<std::pair<std::int64_t, std::pair<int, int>>> combos;
    for (const Candidate& x : from_a) {
      for (const Candidate& y : from_b) {
        if (x.delta + y.delta >= 0) continue;
        const int e = node_replicas_[a][x.index], f = node_replicas_[b][y.index];
        if (e == f) continue;
        const double shift = weight(e) - weight(f);
        if (node_load_[a] - shift > node_budget_ + kTolerance ||
            node_load_[b] + shift > node_budget_ + kTolerance) {
          continue;
        }
        combos.push_back({x.delta + y.delta, {x.index, y.index}});
      }
    }
    std::sort(combos.begin(), combos.end());
    for (const auto& [estimate, where] : combos) {
      const int e = node_replicas_[a][where.first], f = node_replicas_[b][where.second];
      const std::vector<int> e_nodes = traffic_.replica_nodes(e);
      const std::vector<int> f_nodes = traffic_.replica_nodes(f);
      // e and f may share tokens, so the exact gain needs both moves applied in turn.
      const std::int64_t gain = traffic_.apply(e, with_one(without_one(e_nodes, a), b)) +
                                traffic_.apply(f, with_one(without_one(f_nodes, b), a));
      if (gain < 0) {
        const double shift = weight(e) - weight(f);
        node_load_[a] -= shift;
        node_load_[b] += shift;
        node_replicas_[a][where.first] = f;
        node_replicas_[b][where.second] = e;
        return true;
      }
      traffic_.apply(f, f_nodes);
      traffic_.apply(e, e_nodes);
    }
    return false;
  }

  std::span<const std::int64_t> load_;
  const std::vector<int>& count_;
  std::vector<std::vector<int>> node_replicas_;
  std::vector<double> node_load_;
  NodeTraffic& traffic_;
  double node_budget_;
};

}  // namespace

std::vector<int> plan_layer_node_aware(const Workload& workload, int layer, const Topology& topo,
                                       std::span<const int> balance_row, double epsilon,
                                       int max_refine_steps) {
  const std::span<const std::int64_t> load = workload.load[layer];
  const int num_experts = workload.num_experts;
  const double total = std::accumulate(load.begin(), load.end(), 0.0);
  const double mean = total / topo.num_devices();
  const double balance_imb = layer_imbalance(load, balance_row, topo);
  const double device_limit = (balance_imb + epsilon) * mean;

  std::vector<int> count(num_experts, 0);
  std::vector<std::vector<int>> node_replicas(topo.num_nodes);
  std::vector<std::vector<int>> replica_nodes(num_experts);
  for (int j = 0; j < topo.num_slots(); ++j) {
    const int e = balance_row[j], node = topo.node_of_slot(j);
    ++count[e];
    node_replicas[node].push_back(e);
    replica_nodes[e].push_back(node);  // ascending: slots are in node order
  }
  const NodeTraffic balance_traffic(workload, layer, topo, std::move(replica_nodes));

  std::vector<int> best(balance_row.begin(), balance_row.end());
  const std::int64_t best_remote = balance_traffic.total_remote();
  // The node budget starts at the whole allowance and tightens when packing a node's replicas
  // onto its devices overshoots the device limit. The search starts from the balance placement,
  // which is always within budget.
  for (const double slack : {epsilon, epsilon / 2, 0.0}) {
    const double node_budget = topo.gpus_per_node * (balance_imb + slack) * mean;
    std::vector<std::vector<int>> start_nodes(num_experts);
    for (int n = 0; n < topo.num_nodes; ++n) {
      for (int e : node_replicas[n]) start_nodes[e].push_back(n);  // ascending: nodes in order
    }
    NodeTraffic traffic(workload, layer, topo, std::move(start_nodes));
    NodeSwapSearch search(load, count, node_replicas, traffic, node_budget);
    search.run();
    if (traffic.total_remote() >= best_remote) continue;
    std::vector<int> row;
    row.reserve(topo.num_slots());
    double peak = 0.0;
    for (int n = 0; n < topo.num_nodes; ++n) {
      SlotPacking packing(load, count, search.node_replicas()[n], topo.gpus_per_node,
                          topo.slots_per_gpu);
      packing.refine(/*move_redundant_slots=*/false, max_refine_steps);
      peak = std::max(peak, packing.max_load());
      for (int d = 0; d < topo.gpus_per_node; ++d) {
        const auto experts = packing.device_experts(d);
        row.insert(row.end(), experts.begin(), experts.end());
      }
    }
    if (peak <= device_limit + kTolerance * mean) {
      best = std::move(row);
      break;
    }
  }
  return best;
}

}  // namespace switchyard::planner
