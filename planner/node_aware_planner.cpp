#include "planner/node_aware_planner.h"

#include <algorithm>
#include <limits>
#include <numeric>

#include "planner/group_alignment.h"
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
// Swaps the repair of a start whose nodes do not fit may make, per node.
constexpr int kRepairSwapsPerNode = 16;
// Times a start whose packing overshoots the device limit is repaired under a lower estimate
// limit, and the extra margin each time (fraction of the mean device load).
constexpr int kTightenings = 3;
constexpr double kTighteningStep = 1e-3;
// Repair steps between two pricings of every replica's moves.
constexpr int kRepairRepriceEvery = 8;
// Replicas of each other node a repair step considers swapping with.
constexpr std::size_t kRepairPartners = 8;

// What a node may carry: its replicas must pack onto its devices with no device above `limit`.
// Judged by an estimate of the packing's peak that costs one pass over the node's replicas: the
// heaviest replica's device, filled with the lightest others (where one hot expert sets the
// layer's imbalance, its device is the peak, and the node's other devices have room far above
// their share), or the node's load spread evenly (where load is balanced, this is the node's
// share test). The planner checks the real packing afterwards and tightens `limit`
// when it overshoots.
struct NodeLimits {
  std::span<const std::int64_t> load;
  const std::vector<int>& count;
  int gpus_per_node;
  int slots_per_gpu;
  double limit;      // estimated peak allowed
  double tolerance;  // absolute, for comparisons of summed loads

  double weight(int e) const { return static_cast<double>(load[e]) / count[e]; }

  double peak_estimate(const std::vector<int>& replicas, double node_load) const {
    std::vector<double> w(replicas.size());
    for (std::size_t i = 0; i < replicas.size(); ++i) w[i] = weight(replicas[i]);
    const auto heaviest = std::max_element(w.begin(), w.end());
    const double top = *heaviest;
    std::iter_swap(heaviest, w.end() - 1);
    const std::size_t fill =
        std::min<std::size_t>(static_cast<std::size_t>(slots_per_gpu - 1), w.size() - 1);
    std::nth_element(w.begin(), w.begin() + fill, w.end() - 1);
    const double hot = top + std::accumulate(w.begin(), w.begin() + fill, 0.0);
    return std::max(hot, node_load / gpus_per_node);
  }

  // How far the heaviest replica's device alone (see peak_estimate) is above the limit; 0 when not.
  double hot_excess(const std::vector<int>& replicas) const {
    return std::max(0.0, peak_estimate(replicas, 0.0) - limit - tolerance);
  }

  // How far the node is from fitting; 0 when it fits.
  double excess(const std::vector<int>& replicas, double node_load) const {
    const double over = peak_estimate(replicas, node_load) - limit;
    return over <= tolerance ? 0.0 : over;
  }
};

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
  NodeSwapSearch(const NodeLimits& limits, std::vector<std::vector<int>> node_replicas,
                 NodeTraffic& traffic)
      : limits_(limits),
        node_replicas_(std::move(node_replicas)),
        node_load_(node_replicas_.size(), 0.0),
        traffic_(traffic) {
    for (std::size_t n = 0; n < node_replicas_.size(); ++n) {
      for (int e : node_replicas_[n]) node_load_[n] += weight(e);
      fits_.push_back(limits_.excess(node_replicas_[n], node_load_[n]) == 0.0);
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

  // Swaps replicas out of nodes that do not fit (heaviest such node first) into nodes that stay
  // fitting: the swap that makes the node fit at the least estimated traffic, else the one with
  // the least estimated traffic per unit of excess removed (excess: how far the node is from
  // fitting, the smaller of its load over the budget and its greedy peak over the device limit).
  // Returns whether every node fits.
  bool repair() {
    const int nodes = static_cast<int>(node_replicas_.size());
    for (int step = 0; step < kRepairSwapsPerNode * nodes; ++step) {
      int a = -1;
      for (int n = 0; n < nodes; ++n) {
        if (fits_[n]) continue;
        if (a < 0 || node_load_[n] > node_load_[a]) a = n;
      }
      if (a < 0) return true;
      // Prices are estimates here: refreshed every few steps, swapped slots left out in between.
      if (step % kRepairRepriceEvery == 0) price_moves();
      const double before = limits_.excess(node_replicas_[a], node_load_[a]);
      bool found = false;
      double best_key = 0.0;
      int best_b = -1, best_i = -1, best_j = -1;
      // Partners: the lightest replicas of every other node (swapping with them moves the most
      // load, and swaps of light replicas fill a hot device's other slots).
      std::vector<std::vector<int>> partners(nodes);
      for (int b = 0; b < nodes; ++b) {
        if (b == a) continue;
        std::vector<int>& list = partners[b];
        list.resize(node_replicas_[b].size());
        std::iota(list.begin(), list.end(), 0);
        const std::size_t keep = std::min<std::size_t>(list.size(), kRepairPartners);
        std::partial_sort(list.begin(), list.begin() + keep, list.end(), [&](int x, int y) {
          const double wx = weight(node_replicas_[b][x]), wy = weight(node_replicas_[b][y]);
          return wx != wy ? wx < wy : x < y;
        });
        list.resize(keep);
      }
      std::vector<int> trial = node_replicas_[a];
      for (std::size_t i = 0; i < node_replicas_[a].size(); ++i) {
        const int e = node_replicas_[a][i];
        for (int b = 0; b < nodes; ++b) {
          if (b == a || price_[a][i][b] == NodeTraffic::kNoMove) continue;
          for (const int j : partners[b]) {
            const int f = node_replicas_[b][j];
            const double shift = weight(e) - weight(f);
            if (shift <= limits_.tolerance || price_[b][j][a] == NodeTraffic::kNoMove) continue;
            if (!fits_after(b, static_cast<int>(j), e)) continue;
            trial[i] = f;
            const double after = limits_.excess(trial, node_load_[a] - shift);
            trial[i] = e;
            const double progress = before - after;
            if (progress <= limits_.tolerance) continue;
            const double estimate = static_cast<double>(price_[a][i][b] + price_[b][j][a]);
            // Crossings per unit of excess removed; a gain (negative estimate) is better the more
            // it removes. One costly swap that fits the node at once can lose to cheap steps.
            const double key = estimate >= 0 ? estimate / progress : estimate * progress;
            if (!found || key < best_key) {
              found = true;
              best_key = key;
              best_b = b;
              best_i = static_cast<int>(i);
              best_j = static_cast<int>(j);
            }
          }
        }
      }
      if (!found) return false;
      swap(a, best_i, best_b, best_j);
      price_[a][best_i].assign(price_[a][best_i].size(), NodeTraffic::kNoMove);
      price_[best_b][best_j].assign(price_[best_b][best_j].size(), NodeTraffic::kNoMove);
    }
    return false;
  }

  // Lowers the estimated peak allowed (when a real packing overshot it); repair() then fixes the
  // nodes that no longer fit.
  void lower_limit(double limit) {
    limits_.limit = limit;
    for (std::size_t n = 0; n < node_replicas_.size(); ++n) {
      fits_[n] = limits_.excess(node_replicas_[n], node_load_[n]) == 0.0;
    }
  }
  double limit() const { return limits_.limit; }

  const std::vector<std::vector<int>>& node_replicas() const { return node_replicas_; }
  double node_load(int node) const { return node_load_[node]; }

 private:
  double weight(int e) const { return limits_.weight(e); }

  // Whether node n fits with its replica at `index` replaced by expert f, or, not fitting now,
  // gets lighter.
  bool fits_after(int n, int index, int f) const {
    const double shift = weight(f) - weight(node_replicas_[n][index]);
    if (shift <= 0.0 && !fits_[n]) return true;
    std::vector<int> replicas = node_replicas_[n];
    replicas[index] = f;
    return limits_.excess(replicas, node_load_[n] + shift) == 0.0;
  }

  // Exchanges replica `i` of node a with replica `j` of node b; returns the traffic change.
  std::int64_t swap(int a, int i, int b, int j) {
    const int e = node_replicas_[a][i], f = node_replicas_[b][j];
    const std::int64_t gain =
        traffic_.apply(e, with_one(without_one(traffic_.replica_nodes(e), a), b)) +
        traffic_.apply(f, with_one(without_one(traffic_.replica_nodes(f), b), a));
    const double shift = weight(e) - weight(f);
    node_load_[a] -= shift;
    node_load_[b] += shift;
    node_replicas_[a][i] = f;
    node_replicas_[b][j] = e;
    fits_[a] = limits_.excess(node_replicas_[a], node_load_[a]) == 0.0;
    fits_[b] = limits_.excess(node_replicas_[b], node_load_[b]) == 0.0;
    return gain;
  }

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
        if (!fits_after(a, x.index, f) || !fits_after(b, y.index, e)) continue;
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
        fits_[a] = limits_.excess(node_replicas_[a], node_load_[a]) == 0.0;
        fits_[b] = limits_.excess(node_replicas_[b], node_load_[b]) == 0.0;
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

  NodeLimits limits_;
  std::vector<std::vector<int>> node_replicas_;
  std::vector<double> node_load_;
  std::vector<char> fits_;  // [node] -> limits_.fits
  NodeTraffic& traffic_;
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

  // A node fits when the estimate of its packing's peak (NodeLimits) stays within the device
  // limit less the part of the allowance held back: nothing at first, then half of it and all of
  // it when every start fails to pack. Starts per try, each repaired until its nodes fit, then
  // searched, then packed (tightened a little where the packing overshoots), the first that packs
  // kept: with group-limited routing whose groups divide over the nodes, the group alignment with
  // the hottest experts spread over every node (when there are redundant slots), else the group
  // alignment with balance mode's replica counts; then the co-activation clustering (steered by a
  // node budget of (1 + slack) times the node's share); then the balance placement (whose nodes
  // that do not fit the search may only make lighter).
  const bool group_start = groups_align_with_nodes(workload, topo);
  for (const double slack : {epsilon, epsilon / 2, 0.0}) {
    const NodeLimits limits{load,
                            count,
                            topo.gpus_per_node,
                            topo.slots_per_gpu,
                            device_limit - (epsilon - slack) * mean,
                            kTolerance * mean};
    const double node_budget = topo.gpus_per_node * (1.0 + slack) * mean;
    bool found = false;
    auto attempt = [&](std::vector<std::vector<int>> node_replicas,
                       const std::vector<int>& start_count) {
      const NodeLimits start_limits{
          load,         start_count,     topo.gpus_per_node, topo.slots_per_gpu,
          limits.limit, limits.tolerance};
      NodeTraffic traffic(workload, layer, topo, nodes_of_replicas(node_replicas, num_experts));
      NodeSwapSearch search(start_limits, std::move(node_replicas), traffic);
      search.repair();
      search.run();
      // The estimate misses the real packing by a little where nodes are filled to the limit: a
      // node that overshoots has the estimate's limit lowered by the overshoot, is repaired, and
      // every node is packed again.
      for (int tightening = 0; tightening <= kTightenings; ++tightening) {
        if (traffic.total_remote() >= best_remote) return;
        std::vector<int> row;
        row.reserve(topo.num_slots());
        double peak = 0.0;
        for (int n = 0; n < topo.num_nodes; ++n) {
          SlotPacking packing(load, start_count, search.node_replicas()[n], topo.gpus_per_node,
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
        if (duplicate_replicas(row, topo, num_experts) != 0) return;
        if (peak <= device_limit + kTolerance * mean) {
          best = std::move(row);
          best_remote = traffic.total_remote();
          found = true;
          return;
        }
        search.lower_limit(search.limit() - (peak - device_limit) - kTighteningStep * mean);
        if (!search.repair()) return;
      }
    };
    if (group_start) {
      auto aligned = [&](std::span<const int> node_of_group) {
        return group_aligned_replicas(workload, layer, topo, count, node_of_group, node_budget);
      };
      const std::vector<int> node_of_group =
          align_groups_to_nodes(workload, layer, topo, [&](std::span<const int> split) {
            const auto node_replicas = aligned(split);
            for (const auto& replicas : node_replicas) {
              double node_load = 0.0;
              for (int e : replicas) node_load += limits.weight(e);
              if (limits.excess(replicas, node_load) > 0.0) return false;
            }
            return true;
          });
      // With redundant slots, first the hottest experts spread over every node: as many as leave
      // every node's heaviest replica a device that fits (node loads are the repair's business).
      const int redundant = topo.num_slots() - num_experts;
      for (int spread = topo.num_nodes > 1 ? redundant / (topo.num_nodes - 1) : 0; spread > 0;
           --spread) {
        std::vector<int> spread_count;
        auto spread_nodes = group_aligned_spread_replicas(workload, layer, topo, node_of_group,
                                                          spread, spread_count);
        const NodeLimits spread_limits{
            load,         spread_count,    topo.gpus_per_node, topo.slots_per_gpu,
            limits.limit, limits.tolerance};
        if (std::all_of(spread_nodes.begin(), spread_nodes.end(), [&](const auto& replicas) {
              return spread_limits.hot_excess(replicas) == 0.0;
            })) {
          attempt(std::move(spread_nodes), spread_count);
          break;
        }
      }
      if (!found) attempt(aligned(node_of_group), count);
    }
    if (!found) attempt(cluster_replicas_by_node(workload, layer, topo, count, node_budget), count);
    if (!found) attempt(balance_nodes, count);
    if (found) break;
  }
  return best;
}

}  // namespace switchyard::planner
