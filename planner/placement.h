// Which device owns each routed expert. A table, not arithmetic: every consumer looks the owner up
// here, so that the planner can later place experts anywhere.
#pragma once

#include <vector>

namespace switchyard::planner {

class ExpertPlacement {
 public:
  // owner[e] = device of expert e. Throws std::invalid_argument if an owner is outside
  // [0, num_devices) or the table is empty.
  ExpertPlacement(std::vector<int> owner, int num_devices);

  // Experts split into contiguous blocks, the first (E mod D) devices holding one more; with fewer
  // experts than devices the last devices hold none.
  static ExpertPlacement contiguous(int num_experts, int num_devices);

  int num_experts() const { return static_cast<int>(owner_.size()); }
  int num_devices() const { return num_devices_; }
  int owner(int expert) const { return owner_[expert]; }
  const std::vector<int>& owners() const { return owner_; }
  // Experts owned by device, ascending.
  std::vector<int> experts_of(int device) const;

 private:
  std::vector<int> owner_;
  int num_devices_;
};

}  // namespace switchyard::planner
