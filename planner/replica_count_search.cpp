#include "planner/replica_count_search.h"

#include <algorithm>
#include <functional>
#include <numeric>
#include <queue>
#include <utility>

namespace switchyard::planner {

namespace {

// A move counts as an improvement only beyond rounding (loads are sums of integer ratios).
constexpr double kTolerance = 1e-9;
// Experts that may gain a slot: those on the most loaded devices, which a lighter replica relieves.
// Taking them from the hottest devices' 32 slots rather than only the peak device's lets the
// search shift replica weights that end up on the peak after repacking (dsmoe16b 8x8 +64, two
// slots per device: greedy packing peak 1.0341 -> 1.0181 with the peak device's experts only,
// 1.0138 with 16 devices').
constexpr int kHotSlots = 32;
// Experts that may give a slot up: those whose replicas stay lightest without it.
constexpr int kDonors = 8;

}  // namespace

GreedyPacking greedy_packing(std::span<const std::int64_t> load, std::span<const int> count,
                             int num_devices, int slots_per_device) {
  const int num_experts = static_cast<int>(load.size());
  std::vector<int> first(num_experts + 1, 0);
  for (int e = 0; e < num_experts; ++e) first[e + 1] = first[e] + count[e];
  std::vector<int> order(num_experts);
  std::iota(order.begin(), order.end(), 0);
  auto weight = [&](int e) { return static_cast<double>(load[e]) / count[e]; };
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    const double wa = weight(a), wb = weight(b);
    return wa != wb ? wa > wb : a < b;
  });

  GreedyPacking out;
  out.device_load.assign(num_devices, 0.0);
  out.replica_device.assign(first[num_experts], -1);
  using Entry = std::pair<double, int>;  // (load, device): the lightest, then the lowest id, on top
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> open;
  for (int d = 0; d < num_devices; ++d) open.push({0.0, d});
  std::vector<int> filled(num_devices, 0);
  std::vector<int> holder(num_devices, -1);  // last expert placed on the device
  std::vector<Entry> skipped;
  for (int e : order) {
    const double w = weight(e);
    for (int r = 0; r < count[e]; ++r) {
      // An expert's replicas are placed one after another, so `holder` tells whether the device
      // holds e already; such devices are skipped unless no other device has room.
      skipped.clear();
      Entry pick = open.top();
      open.pop();
      while (holder[pick.second] == e && !open.empty()) {
        skipped.push_back(pick);
        pick = open.top();
        open.pop();
      }
      for (const Entry& s : skipped) open.push(s);
      const int d = pick.second;
      holder[d] = e;
      out.device_load[d] += w;
      out.replica_device[first[e] + r] = d;
      if (++filled[d] < slots_per_device) open.push({out.device_load[d], d});
    }
  }
  out.peak = *std::max_element(out.device_load.begin(), out.device_load.end());
  return out;
}

std::vector<int> search_replica_counts(std::span<const std::int64_t> load, std::vector<int> count,
                                       int num_devices, int slots_per_device, int max_steps) {
  const int num_experts = static_cast<int>(load.size());
  GreedyPacking current = greedy_packing(load, count, num_devices, slots_per_device);
  std::vector<int> hot_devices(num_devices);
  std::vector<char> is_hot(num_devices);
  std::vector<int> gainers, donors;
  for (int step = 0; step < max_steps; ++step) {
    std::iota(hot_devices.begin(), hot_devices.end(), 0);
    std::stable_sort(hot_devices.begin(), hot_devices.end(), [&](int a, int b) {
      return current.device_load[a] > current.device_load[b];
    });
    const int hot = std::clamp(kHotSlots / slots_per_device, 1, num_devices);
    std::fill(is_hot.begin(), is_hot.end(), 0);
    for (int i = 0; i < hot; ++i) is_hot[hot_devices[i]] = 1;
    // Gainers ordered by the load of the hottest device holding them, so the peak is tried first.
    std::vector<int> rank(num_experts, num_devices);
    std::vector<int> position(num_devices);
    for (int i = 0; i < num_devices; ++i) position[hot_devices[i]] = i;
    for (int e = 0, r = 0; e < num_experts; ++e) {
      for (int k = 0; k < count[e]; ++k, ++r) {
        const int d = current.replica_device[r];
        if (is_hot[d]) rank[e] = std::min(rank[e], position[d]);
      }
    }
    gainers.clear();
    for (int e = 0; e < num_experts; ++e) {
      if (rank[e] < num_devices && count[e] < num_devices) gainers.push_back(e);
    }
    std::stable_sort(gainers.begin(), gainers.end(),
                     [&](int a, int b) { return rank[a] < rank[b]; });
    donors.clear();
    for (int e = 0; e < num_experts; ++e) {
      if (count[e] >= 2) donors.push_back(e);
    }
    auto weight_without_one = [&](int e) { return static_cast<double>(load[e]) / (count[e] - 1); };
    const std::size_t keep = std::min<std::size_t>(donors.size(), kDonors);
    std::partial_sort(donors.begin(), donors.begin() + keep, donors.end(), [&](int a, int b) {
      const double wa = weight_without_one(a), wb = weight_without_one(b);
      return wa != wb ? wa < wb : a < b;
    });
    donors.resize(keep);

    bool moved = false;
    for (int b : gainers) {
      for (int a : donors) {
        if (a == b) continue;
        --count[a];
        ++count[b];
        GreedyPacking trial = greedy_packing(load, count, num_devices, slots_per_device);
        if (trial.peak < current.peak - kTolerance) {
          current = std::move(trial);
          moved = true;
          break;
        }
        ++count[a];
        --count[b];
      }
      if (moved) break;
    }
    if (!moved) break;
  }
  return count;
}

}  // namespace switchyard::planner
