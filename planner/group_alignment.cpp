#include "planner/group_alignment.h"

#include <algorithm>
#include <cstdint>
#include <numeric>

namespace switchyard::planner {

namespace {

// Group masks are histogrammed per start node, so the group count is bounded.
constexpr int kMaxGroups = 16;
// More splits than this are not enumerated (16 groups on 4 nodes would be 2.6 million).
constexpr double kMaxSplits = 20000;
// Permutations of parts over nodes are enumerated up to this many nodes (8! = 40320).
constexpr int kMaxPermutedNodes = 8;

double count_splits(int groups, int per_node, int nodes) {
  // groups! / (per_node!^nodes · nodes!)
  double splits = 1.0;
  for (int i = 2; i <= groups; ++i) splits *= i;
  for (int n = 0; n < nodes; ++n) {
    for (int i = 2; i <= per_node; ++i) splits /= i;
  }
  for (int i = 2; i <= nodes; ++i) splits /= i;
  return splits;
}

// Every split of `groups` groups into parts of `per_node`, each once: a group joins an open part
// or opens the next one.
void enumerate_splits(int group, int groups, int per_node, std::vector<int>& part,
                      std::vector<int>& size, int opened,
                      const std::function<void(const std::vector<int>&)>& visit) {
  if (group == groups) {
    visit(part);
    return;
  }
  const int parts = static_cast<int>(size.size());
  for (int p = 0; p < std::min(opened + 1, parts); ++p) {
    if (size[p] == per_node) continue;
    part[group] = p;
    ++size[p];
    enumerate_splits(group + 1, groups, per_node, part, size, std::max(opened, p + 1), visit);
    --size[p];
  }
}

}  // namespace

bool groups_align_with_nodes(const Workload& workload, const Topology& topo) {
  const int groups = workload.num_groups;
  return groups > 1 && groups <= kMaxGroups && workload.topk_groups < groups &&
         workload.num_experts % groups == 0 && groups % topo.num_nodes == 0;
}

std::vector<int> align_groups_to_nodes(const Workload& workload, int layer, const Topology& topo,
                                       const std::function<bool(std::span<const int>)>& fits) {
  const int groups = workload.num_groups;
  const int nodes = topo.num_nodes;
  const int per_node = groups / nodes;
  const int group_size = workload.num_experts / groups;
  const auto& load = workload.load[layer];
  std::vector<double> group_load(groups, 0.0);
  for (int e = 0; e < workload.num_experts; ++e) group_load[e / group_size] += load[e];

  // Tokens by (groups used, start node).
  std::vector<std::int64_t> hist((std::size_t{1} << groups) * nodes, 0);
  for (int t = 0; t < workload.tokens_per_layer; ++t) {
    const std::uint16_t* ids = workload.token_experts(layer, t);
    unsigned mask = 0;
    for (int k = 0; k < workload.top_k; ++k) mask |= 1u << (ids[k] / group_size);
    ++hist[static_cast<std::size_t>(mask) * nodes + topo.node_of_device(t % topo.num_devices())];
  }
  struct MaskCount {
    unsigned mask;
    std::vector<std::int64_t> by_node;
    std::int64_t total;
  };
  std::vector<MaskCount> masks;
  for (unsigned mask = 0; mask < (1u << groups); ++mask) {
    const auto first = hist.begin() + static_cast<std::ptrdiff_t>(mask) * nodes;
    const std::int64_t total = std::accumulate(first, first + nodes, std::int64_t{0});
    if (total > 0) masks.push_back({mask, std::vector<std::int64_t>(first, first + nodes), total});
  }

  // Crossings of a split with its parts on the best nodes: every (token, part) it uses, less the
  // tokens whose start node holds a part they use, maximised over part-to-node assignments.
  std::vector<int> perm(nodes);
  auto crossings = [&](const std::vector<int>& part_of_group, std::vector<int>& node_of_part) {
    std::vector<unsigned> part_mask(nodes, 0);
    for (int g = 0; g < groups; ++g) part_mask[part_of_group[g]] |= 1u << g;
    std::int64_t used = 0;
    std::vector<std::int64_t> home(static_cast<std::size_t>(nodes) * nodes, 0);  // [part][node]
    for (const MaskCount& m : masks) {
      for (int p = 0; p < nodes; ++p) {
        if ((m.mask & part_mask[p]) == 0) continue;
        used += m.total;
        for (int n = 0; n < nodes; ++n)
          home[static_cast<std::size_t>(p) * nodes + n] += m.by_node[n];
      }
    }
    std::iota(perm.begin(), perm.end(), 0);
    std::int64_t best_home = -1;
    auto home_of = [&](const std::vector<int>& node_of) {
      std::int64_t sum = 0;
      for (int p = 0; p < nodes; ++p) sum += home[static_cast<std::size_t>(p) * nodes + node_of[p]];
      return sum;
    };
    if (nodes <= kMaxPermutedNodes) {
      do {
        const std::int64_t sum = home_of(perm);
        if (sum > best_home) {
          best_home = sum;
          node_of_part = perm;
        }
      } while (std::next_permutation(perm.begin(), perm.end()));
    } else {
      // Greedy: parts in order take the free node their tokens start on most.
      std::vector<char> taken(nodes, 0);
      node_of_part.assign(nodes, -1);
      for (int p = 0; p < nodes; ++p) {
        int best = -1;
        for (int n = 0; n < nodes; ++n) {
          if (taken[n]) continue;
          if (best < 0 || home[static_cast<std::size_t>(p) * nodes + n] >
                              home[static_cast<std::size_t>(p) * nodes + best]) {
            best = n;
          }
        }
        taken[best] = 1;
        node_of_part[p] = best;
      }
      best_home = home_of(node_of_part);
    }
    return used - best_home;
  };

  auto to_nodes = [&](const std::vector<int>& part_of_group, const std::vector<int>& node_of_part) {
    std::vector<int> node_of_group(groups);
    for (int g = 0; g < groups; ++g) node_of_group[g] = node_of_part[part_of_group[g]];
    return node_of_group;
  };

  std::vector<int> best;
  bool best_fits = false;
  std::int64_t best_crossings = 0;
  auto consider = [&](const std::vector<int>& part_of_group) {
    std::vector<int> node_of_part;
    const std::int64_t c = crossings(part_of_group, node_of_part);
    const bool fit_before = best_fits;
    // The fit test costs more than counting: only run it when the split could win.
    if (!best.empty() && fit_before && c >= best_crossings) return;
    std::vector<int> node_of_group = to_nodes(part_of_group, node_of_part);
    const bool fit = fits(node_of_group);
    if (best.empty() || (fit && !best_fits) || (fit == best_fits && c < best_crossings)) {
      best = std::move(node_of_group);
      best_fits = fit;
      best_crossings = c;
    }
  };

  if (count_splits(groups, per_node, nodes) <= kMaxSplits) {
    std::vector<int> part(groups, -1), size(nodes, 0);
    enumerate_splits(0, groups, per_node, part, size, 0, consider);
  } else {
    // Heaviest group first onto the lightest part with room.
    std::vector<int> order(groups);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return group_load[a] > group_load[b]; });
    std::vector<int> part(groups), size(nodes, 0);
    std::vector<double> part_load(nodes, 0.0);
    for (int g : order) {
      int p = -1;
      for (int q = 0; q < nodes; ++q) {
        if (size[q] < per_node && (p < 0 || part_load[q] < part_load[p])) p = q;
      }
      part[g] = p;
      ++size[p];
      part_load[p] += group_load[g];
    }
    consider(part);
  }
  return best;
}

std::vector<std::vector<int>> group_aligned_replicas(const Workload& workload, int layer,
                                                     const Topology& topo,
                                                     std::span<const int> count,
                                                     std::span<const int> node_of_group,
                                                     double node_budget) {
  const int num_experts = workload.num_experts;
  const int nodes = topo.num_nodes;
  const int capacity = topo.gpus_per_node * topo.slots_per_gpu;
  const int group_size = num_experts / workload.num_groups;
  const auto& load = workload.load[layer];
  auto weight = [&](int e) { return static_cast<double>(load[e]) / count[e]; };

  std::vector<std::vector<int>> node_replicas(nodes);
  std::vector<double> node_load(nodes, 0.0);
  std::vector<int> holds(static_cast<std::size_t>(num_experts) * nodes, 0);
  auto place = [&](int e, int n) {
    node_replicas[n].push_back(e);
    node_load[n] += weight(e);
    ++holds[static_cast<std::size_t>(e) * nodes + n];
  };
  for (int e = 0; e < num_experts; ++e) place(e, node_of_group[e / group_size]);

  std::vector<int> extra;
  for (int e = 0; e < num_experts; ++e) extra.insert(extra.end(), count[e] - 1, e);
  std::stable_sort(extra.begin(), extra.end(), [&](int a, int b) {
    const double wa = weight(a), wb = weight(b);
    return wa != wb ? wa > wb : a < b;
  });
  auto room = [&](int e, int n) {
    return static_cast<int>(node_replicas[n].size()) < capacity &&
           holds[static_cast<std::size_t>(e) * nodes + n] < topo.gpus_per_node;
  };
  for (int e : extra) {
    const int own = node_of_group[e / group_size];
    int target = -1;
    if (room(e, own) && node_load[own] + weight(e) <= node_budget) {
      target = own;
    } else {
      for (int n = 0; n < nodes; ++n) {
        if (!room(e, n)) continue;
        if (target < 0 || node_load[n] < node_load[target]) target = n;
      }
    }
    if (target < 0) {
      // Every node with room holds gpus_per_node replicas of e already (more replicas than
      // devices): any node with room.
      for (int n = 0; n < nodes && target < 0; ++n) {
        if (static_cast<int>(node_replicas[n].size()) < capacity) target = n;
      }
    }
    place(e, target);
  }
  return node_replicas;
}

std::vector<std::vector<int>> group_aligned_spread_replicas(const Workload& workload, int layer,
                                                            const Topology& topo,
                                                            std::span<const int> node_of_group,
                                                            int max_spread,
                                                            std::vector<int>& count) {
  const int num_experts = workload.num_experts;
  const int nodes = topo.num_nodes;
  const int capacity = topo.gpus_per_node * topo.slots_per_gpu;
  const int group_size = num_experts / workload.num_groups;
  const auto& load = workload.load[layer];
  count.assign(num_experts, 1);
  std::vector<std::vector<int>> node_replicas(nodes);
  std::vector<int> holds(static_cast<std::size_t>(num_experts) * nodes, 0);
  auto place = [&](int e, int n) {
    node_replicas[n].push_back(e);
    ++holds[static_cast<std::size_t>(e) * nodes + n];
  };
  auto own = [&](int e) { return node_of_group[e / group_size]; };
  for (int e = 0; e < num_experts; ++e) place(e, own(e));
  auto free_slots = [&](int n) { return capacity - static_cast<int>(node_replicas[n].size()); };

  std::vector<int> order(num_experts);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return load[a] > load[b]; });
  if (nodes > 1) {
    for (int i = 0; i < std::min(max_spread, num_experts); ++i) {
      const int e = order[i];
      bool room = true;
      for (int n = 0; n < nodes && room; ++n) room = n == own(e) || free_slots(n) > 0;
      if (!room) break;
      for (int n = 0; n < nodes; ++n) {
        if (n != own(e)) place(e, n);
      }
      count[e] = nodes;
    }
  }
  // Left-over slots: the own-group expert with the most load per replica, one slot at a time.
  for (int n = 0; n < nodes; ++n) {
    while (free_slots(n) > 0) {
      int best = -1;
      for (int e = 0; e < num_experts; ++e) {
        if (holds[static_cast<std::size_t>(e) * nodes + n] == 0 ||
            holds[static_cast<std::size_t>(e) * nodes + n] >= topo.gpus_per_node) {
          continue;
        }
        if (best < 0 || static_cast<double>(load[e]) / count[e] >
                            static_cast<double>(load[best]) / count[best]) {
          best = e;
        }
      }
      if (best < 0) {
        // Every expert on n holds gpus_per_node replicas there already: any expert not on n.
        for (int e = 0; e < num_experts && best < 0; ++e) {
          if (holds[static_cast<std::size_t>(e) * nodes + n] == 0) best = e;
        }
      }
      place(best, n);
      ++count[best];
    }
  }
  return node_replicas;
}

}  // namespace switchyard::planner
