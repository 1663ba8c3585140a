// Searches replica counts by repacking. Greedy counts minimise the heaviest replica, but with few
// slots per device what decides the most loaded device is how replica weights combine into
// devices (with two slots per device, the heaviest sum of a heavy and a light replica), and a
// different split of the redundant slots can combine much better. So the search moves one
// redundant slot at a time from one expert to another and prices each move by packing every
// replica again with the greedy packing (heaviest first onto the lightest device that does not
// hold the expert yet; for two slots per device this is the optimal largest-with-smallest pairing).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace switchyard::planner {

struct GreedyPacking {
  std::vector<double> device_load;
  // replica_device[i]: device of the i-th replica in expert order (expert 0's replicas first).
  std::vector<int> replica_device;
  double peak = 0.0;
};

// Packs count[e] replicas of weight load[e] / count[e] into num_devices devices of
// slots_per_device slots each. Deterministic: ties go to the lower device id.
GreedyPacking greedy_packing(std::span<const std::int64_t> load, std::span<const int> count,
                             int num_devices, int slots_per_device);

// Counts (same total, each in [1, num_devices]) whose greedy packing has a lower peak than
// `start`'s, found by first-improvement local search over "one slot from expert a to expert b"
// moves; `start` itself when no move helps. At most `max_steps` moves are made.
std::vector<int> search_replica_counts(std::span<const std::int64_t> load, std::vector<int> start,
                                       int num_devices, int slots_per_device, int max_steps);

}  // namespace switchyard::planner
