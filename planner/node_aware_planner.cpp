#include "planner/node_aware_planner.h"

#include <algorithm>
#include <numeric>

#include "planner/node_clustering.h"
#include "planner/node_traffic.h"
#include "planner/score.h"
#include "planner/slot_packing.h"

namespace switchyard::planner {

namespace {

constexpr double kTolerance = 1e-9;
// Candidates per direction examined for each node pair, and passes over all pairs: enough for the
// search to converge on the public workloads while bounding the cost on adversarial ones.
constexpr int kCandidatesPerSide = 6;
constexpr int kMaxPasses = 12;

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

// Swaps replicas between nodes while that lowers the layer's remote crossings and keeps every node
// within the load budget (a node above it may only get lighter). Each pass prices every replica's
// move to every node once (`NodeTraffic::move_deltas`); within the pass those prices only rank
// candidate swaps, and a swap is kept only when applying it lowers the exact count.
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
      price_moves();
      bool improved = false;
      for (int a = 0; a < nodes; ++a) {
        for (int b = a + 1; b < nodes; ++b) {
          while (swap_between(a, b)) improved = true;
        }
      }
      if (!improved) break;
    }
  }

  const std::vector<std::vector<int>>& node_replicas() const { return node_replicas_; }
  double node_load(int node) const { return node_load_[node]; }

 private:
  double weight(int e) const { return static_cast<double>(load_[e]) / count_[e]; }

  void price_moves() {
    const int nodes = static_cast<int>(node_replicas_.size());
    price_.assign(nodes, {});
    for (int n = 0; n < nodes; ++n) {
      price_[n].resize(node_replicas_[n].size());
      for (std::size_t i = 0; i < node_replicas_[n].size(); ++i) {
        traffic_.move_deltas(node_replicas_[n][i], n, price_[n][i]);
      }
    }
  }

  // Most promising replicas of node `from` to send to node `to`, best (most negative) first;
  // replicas swapped earlier in this pass have stale prices and are left out.
  std::vector<Candidate> candidates(int from, int to) const {
    std::vector<Candidate> list;
    for (std::size_t i = 0; i < price_[from].size(); ++i) {
      const std::int64_t delta = price_[from][i][to];
      if (delta != NodeTraffic::kNoMove) list.push_back({static_cast<int>(i), delta});
    }
    const std::size_t keep = std::min<std::size_t>(list.size(), kCandidatesPerSide);
    std::partial_sort(list.begin(), list.begin() + keep, list.end(),
                      [](const Candidate& x, const Candidate& y) {
                        return x.delta != y.delta ? x.delta < y.delta : x.index < y.index;
                      });
    list.resize(keep);
    return list;
  }

  bool within_budget(int node, double shift) const {
    const double after = node_load_[node] + shift;
    return after <= node_budget_ + kTolerance || shift <= 0.0;
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
        if (!within_budget(a, -shift) || !within_budget(b, shift)) continue;
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
        // Both slots now hold other replicas than were priced: no more candidates this pass.
        price_[a][where.first].assign(price_[a][where.first].size(), NodeTraffic::kNoMove);
        price_[b][where.second].assign(price_[b][where.second].size(), NodeTraffic::kNoMove);
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
  std::vector<std::vector<std::vector<std::int64_t>>> price_;  // [node][replica][target node]
};

std::vector<std::vector<int>> nodes_of_replicas(const std::vector<std::vector<int>>& node_replicas,
                                                int num_experts) {
  std::vector<std::vector<int>> replica_nodes(num_experts);
  for (std::size_t n = 0; n < node_replicas.size(); ++n) {
    for (int e : node_replicas[n]) replica_nodes[e].push_back(static_cast<int>(n));
  }
  return replica_nodes;  // ascending: nodes visited in order
}

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
  std::vector<std::vector<int>> balance_nodes(topo.num_nodes);
  for (int j = 0; j < topo.num_slots(); ++j) {
    ++count[balance_row[j]];
    balance_nodes[topo.node_of_slot(j)].push_back(balance_row[j]);
  }
  std::int64_t best_remote =
      NodeTraffic(workload, layer, topo, nodes_of_replicas(balance_nodes, num_experts))
          .total_remote();
  std::vector<int> best(balance_row.begin(), balance_row.end());

  // A node may carry (1 + slack) times its share of the load, slack starting at the whole
  // allowance and tightening when packing a node's replicas onto its devices overshoots the
  // device limit. Not (balance imbalance + slack) times: without redundant slots that imbalance
  // comes from the hottest expert's device alone, and a node loaded that far over its share cannot
  // be packed under the limit. Two starts per budget: the co-activation clustering (far less
  // traffic), and when that cannot be packed under the limit, the balance placement (whose
  // heavier nodes the search may only make lighter).
  for (const double slack : {epsilon, epsilon / 2, 0.0}) {
    const double node_budget = topo.gpus_per_node * (1.0 + slack) * mean;
    bool found = false;
    for (int start = 0; start < 2 && !found; ++start) {
      std::vector<std::vector<int>> node_replicas =
          start == 0 ? cluster_replicas_by_node(workload, layer, topo, count, node_budget)
                     : balance_nodes;
      NodeTraffic traffic(workload, layer, topo, nodes_of_replicas(node_replicas, num_experts));
      NodeSwapSearch search(load, count, std::move(node_replicas), traffic, node_budget);
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
      // Per-node packing may fail to spread an expert's replicas over distinct devices; such a
      // row is refused like an over-limit one, since the balance row never has that duplicate.
      if (peak <= device_limit + kTolerance * mean &&
          duplicate_replicas(row, topo, num_experts) == 0) {
        best = std::move(row);
        best_remote = traffic.total_remote();
        found = true;
      }
    }
    if (found) break;
  }
  return best;
}

}  // namespace switchyard::planner
