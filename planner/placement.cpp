#include "planner/placement.h"

#include <algorithm>
#include <string>

#include "base/error.h"

namespace switchyard::planner {

namespace {

std::vector<std::vector<int>> single_replicas(const std::vector<int>& owner) {
  std::vector<std::vector<int>> replicas;
  replicas.reserve(owner.size());
  for (int device : owner) replicas.push_back({device});
  return replicas;
}

}  // namespace

ExpertPlacement::ExpertPlacement(std::vector<int> owner, int num_devices)
    : ExpertPlacement(single_replicas(owner), num_devices) {}

ExpertPlacement::ExpertPlacement(std::vector<std::vector<int>> replicas, int num_devices)
    : replicas_(std::move(replicas)), num_devices_(num_devices) {
  SY_ENFORCE_ARG(!replicas_.empty(), "placement: no experts to place");
  if (num_devices_ <= 0) {
    throw Error(ErrorCode::invalid_argument,
                "placement: num_devices must be positive, got " + std::to_string(num_devices_));
  }
  for (size_t e = 0; e < replicas_.size(); ++e) {
    auto& devices = replicas_[e];
    if (devices.empty()) {
      throw Error(ErrorCode::invalid_argument,
                  "placement: expert " + std::to_string(e) +
                      " has no replica; every expert needs at least one slot");
    }
    std::sort(devices.begin(), devices.end());
    for (size_t i = 0; i < devices.size(); ++i) {
      if (devices[i] < 0 || devices[i] >= num_devices_) {
        throw Error(ErrorCode::invalid_argument, "placement: expert " + std::to_string(e) +
                                                     " is placed on device " +
                                                     std::to_string(devices[i]) + ", outside [0, " +
                                                     std::to_string(num_devices_) + ")");
      }
      if (i > 0 && devices[i] == devices[i - 1]) {
        throw Error(ErrorCode::invalid_argument, "placement: expert " + std::to_string(e) +
                                                     " has two replicas on device " +
                                                     std::to_string(devices[i]));
      }
    }
  }
}

ExpertPlacement ExpertPlacement::from_slots(std::span<const int> phy2log, int num_experts,
                                            int num_devices) {
  if (num_devices <= 0 || phy2log.empty() || phy2log.size() % num_devices != 0) {
    throw Error(ErrorCode::invalid_argument, "placement: " + std::to_string(phy2log.size()) +
                                                 " slots do not divide evenly over " +
                                                 std::to_string(num_devices) + " devices");
  }
  const size_t per_device = phy2log.size() / num_devices;
  std::vector<std::vector<int>> replicas(num_experts > 0 ? num_experts : 0);
  for (size_t j = 0; j < phy2log.size(); ++j) {
    const int e = phy2log[j];
    if (e < 0 || e >= num_experts) {
      throw Error(ErrorCode::invalid_argument,
                  "placement: slot " + std::to_string(j) + " holds expert " + std::to_string(e) +
                      ", outside [0, " + std::to_string(num_experts) + ")");
    }
    replicas[e].push_back(static_cast<int>(j / per_device));
  }
  return ExpertPlacement(std::move(replicas), num_devices);
}

ExpertPlacement ExpertPlacement::contiguous(int num_experts, int num_devices) {
  if (num_experts <= 0 || num_devices <= 0) {
    throw Error(ErrorCode::invalid_argument,
                "placement: need at least one expert and one device, got " +
                    std::to_string(num_experts) + " experts on " + std::to_string(num_devices) +
                    " devices");
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

std::vector<int> ExpertPlacement::owners() const {
  std::vector<int> out;
  out.reserve(replicas_.size());
  for (const auto& devices : replicas_) out.push_back(devices.front());
  return out;
}

bool ExpertPlacement::holds(int device, int expert) const {
  const auto& devices = replicas_[expert];
  return std::binary_search(devices.begin(), devices.end(), device);
}

std::vector<int> ExpertPlacement::experts_of(int device) const {
  std::vector<int> experts;
  for (int e = 0; e < num_experts(); ++e) {
    if (holds(device, e)) experts.push_back(e);
  }
  return experts;
}

int ExpertPlacement::max_experts_per_device() const {
  std::vector<int> held(num_devices_, 0);
  for (const auto& devices : replicas_) {
    for (int d : devices) ++held[d];
  }
  return *std::max_element(held.begin(), held.end());
}

}  // namespace switchyard::planner
