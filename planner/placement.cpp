#include "planner/placement.h"

#include <stdexcept>
#include <string>

namespace switchyard::planner {

ExpertPlacement::ExpertPlacement(std::vector<int> owner, int num_devices)
    : owner_(std::move(owner)), num_devices_(num_devices) {
  if (owner_.empty()) throw std::invalid_argument("placement: no experts to place");
  if (num_devices_ <= 0) {
    throw std::invalid_argument("placement: num_devices must be positive, got " +
                                std::to_string(num_devices_));
  }
  for (size_t e = 0; e < owner_.size(); ++e) {
    if (owner_[e] < 0 || owner_[e] >= num_devices_) {
      throw std::invalid_argument("placement: expert " + std::to_string(e) + " is owned by device " +
                                  std::to_string(owner_[e]) + ", outside [0, " +
                                  std::to_string(num_devices_) + ")");
    }
  }
}

ExpertPlacement ExpertPlacement::contiguous(int num_experts, int num_devices) {
  if (num_experts <= 0 || num_devices <= 0) {
    throw std::invalid_argument("placement: need at least one expert and one device, got " +
                                std::to_string(num_experts) + " experts on " +
                                std::to_string(num_devices) + " devices");
  }
  std::vector<int> owner(num_experts);
  const int base = num_experts / num_devices;
  const int extra = num_experts % num_devices;
  int e = 0;
  for (int d = 0; d < num_devices; ++d) {
    const int count = base + (d < extra ? 1 : 0);
    for (int i = 0; i < count; ++i) owner[e++] = d;
  }
  return ExpertPlacement(std::move(owner), num_devices);
}

std::vector<int> ExpertPlacement::experts_of(int device) const {
  std::vector<int> experts;
  for (int e = 0; e < num_experts(); ++e) {
    if (owner_[e] == device) experts.push_back(e);
  }
  return experts;
}

}  // namespace switchyard::planner
