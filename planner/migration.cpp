#include "planner/migration.h"

#include <algorithm>
#include <map>

namespace switchyard::planner {

namespace {

std::vector<int> device_slots(std::span<const int> row, const Topology& topo, int device) {
  const auto first = row.begin() + static_cast<std::ptrdiff_t>(device) * topo.slots_per_gpu;
  return {first, first + topo.slots_per_gpu};
}

int overlap(std::vector<int> a, std::vector<int> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  std::vector<int> common;
  std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(common));
  return static_cast<int>(common.size());
}

// The new device's experts ordered so that those the old device holds keep their old slot.
std::vector<int> order_like(std::vector<int> experts, const std::vector<int>& old_slots) {
  std::vector<int> out(old_slots.size(), -1);
  for (std::size_t i = 0; i < old_slots.size(); ++i) {
    const auto it = std::find(experts.begin(), experts.end(), old_slots[i]);
    if (it == experts.end()) continue;
    out[i] = *it;
    experts.erase(it);
  }
  auto rest = experts.begin();
  for (int& slot : out) {
    if (slot < 0) slot = *rest++;
  }
  return out;
}

}  // namespace

int moved_replicas(std::span<const int> from, std::span<const int> to, const Topology& topo) {
  int moved = 0;
  for (int d = 0; d < topo.num_devices(); ++d) {
    const std::vector<int> target = device_slots(to, topo, d);
    moved += static_cast<int>(target.size()) - overlap(target, device_slots(from, topo, d));
  }
  return moved;
}

std::vector<int> align_to_current(std::span<const int> row, std::span<const int> current,
                                  const Topology& topo, bool keep_nodes) {
  const int devices = topo.num_devices();
  // Greedy matching of new devices to old ones by overlap, largest first; ties by index so the
  // result is deterministic.
  std::vector<std::pair<int, std::pair<int, int>>> pairs;
  for (int d = 0; d < devices; ++d) {
    const std::vector<int> mine = device_slots(row, topo, d);
    for (int x = 0; x < devices; ++x) {
      if (keep_nodes && topo.node_of_device(d) != topo.node_of_device(x)) continue;
      pairs.push_back({-overlap(mine, device_slots(current, topo, x)), {d, x}});
    }
  }
  std::sort(pairs.begin(), pairs.end());
  std::vector<int> target(devices, -1);
  std::vector<bool> taken(devices, false);
  for (const auto& [negative_overlap, dx] : pairs) {
    const auto [d, x] = dx;
    if (target[d] >= 0 || taken[x]) continue;
    target[d] = x;
    taken[x] = true;
  }
  std::vector<int> aligned(row.size());
  for (int d = 0; d < devices; ++d) {
    const std::vector<int> slots =
        order_like(device_slots(row, topo, d), device_slots(current, topo, target[d]));
    std::copy(slots.begin(), slots.end(),
              aligned.begin() + static_cast<std::ptrdiff_t>(target[d]) * topo.slots_per_gpu);
  }
  return aligned;
}

}  // namespace switchyard::planner
