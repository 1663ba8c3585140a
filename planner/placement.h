// Which devices hold each routed expert. A table, not arithmetic: every consumer looks replicas up
// here, so that the planner can place (and replicate) experts anywhere.
#pragma once

#include <span>
#include <vector>

namespace switchyard::planner {

class ExpertPlacement {
 public:
  // One replica per expert: owner[e] = device of expert e. Throws Error(invalid_argument) if an
  // owner is outside [0, num_devices) or the table is empty.
  ExpertPlacement(std::vector<int> owner, int num_devices);

  // replicas[e] = the devices holding expert e (any order; at least one, no device twice).
  ExpertPlacement(std::vector<std::vector<int>> replicas, int num_devices);

  // From a moe-placement/v1 row: phy2log[j] is the expert in slot j, slot j on device
  // j / (phy2log.size() / num_devices). Every expert must appear, no expert twice on a device.
  static ExpertPlacement from_slots(std::span<const int> phy2log, int num_experts,
                                    int num_devices);

  // Experts split into contiguous blocks, the first (E mod D) devices holding one more; with fewer
  // experts than devices the last devices hold none.
  static ExpertPlacement contiguous(int num_experts, int num_devices);

  int num_experts() const { return static_cast<int>(replicas_.size()); }
  int num_devices() const { return num_devices_; }
  // The devices holding expert e, ascending; the first is its primary owner.
  const std::vector<int>& replicas(int expert) const { return replicas_[expert]; }
  int owner(int expert) const { return replicas_[expert].front(); }
  // Primary owner of every expert (the device an expert counts towards in device-level losses).
  std::vector<int> owners() const;
  bool holds(int device, int expert) const;
  // Experts held by device, ascending.
  std::vector<int> experts_of(int device) const;
  // The most experts any device holds.
  int max_experts_per_device() const;

  bool operator==(const ExpertPlacement& other) const = default;

 private:
  std::vector<std::vector<int>> replicas_;
  int num_devices_;
};

}  // namespace switchyard::planner
