// Packs expert replicas into devices that each hold exactly `slots_per_device` of them, keeping
// the most loaded device as light as possible. A replica of expert e weighs load_e / count_e.
// Built greedily (heaviest replica first, onto the lightest device with a free slot that does not
// hold the expert yet), then refined by local search: swap two replicas between the most loaded
// device and another, and, when the packing holds every replica of the layer, move a redundant
// slot from one expert to another (which changes both experts' replica weights); when the peak
// device is stuck, even out all pairs of devices and try again.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace switchyard::planner {

class SlotPacking {
 public:
  // `replicas` lists the experts to place, one entry per replica (an expert may repeat); its size
  // must be num_devices · slots_per_device. `count[e]` is e's replica count in the whole layer.
  SlotPacking(std::span<const std::int64_t> load, std::vector<int> count,
              std::span<const int> replicas, int num_devices, int slots_per_device);

  // Local search until no move lowers the most loaded device. `move_redundant_slots` allows
  // changing replica counts; only valid when this packing holds all of the layer's replicas.
  void refine(bool move_redundant_slots, int max_steps);

  int num_devices() const { return num_devices_; }
  int slots_per_device() const { return slots_per_device_; }
  // Experts in the slots of `device`, in slot order.
  std::span<const int> device_experts(int device) const {
    return {slots_.data() + static_cast<std::size_t>(device) * slots_per_device_,
            static_cast<std::size_t>(slots_per_device_)};
  }
  double device_load(int device) const { return device_load_[device]; }
  double max_load() const;
  const std::vector<int>& count() const { return count_; }

 private:
  double weight(int expert) const { return static_cast<double>(load_[expert]) / count_[expert]; }
  int& slot(int device, int i) { return slots_[static_cast<std::size_t>(device) * slots_per_device_ + i]; }
  int holds(int device, int expert) const { return holds_[static_cast<std::size_t>(device) * num_experts_ + expert]; }
  int& holds(int device, int expert) { return holds_[static_cast<std::size_t>(device) * num_experts_ + expert]; }
  int most_loaded_device() const;
  void place_greedily(std::span<const int> replicas);
  void set_slot(int device, int i, int expert);
  // One replica of an expert held twice by a device swaps with a replica elsewhere.
  void repair_duplicates();
  bool try_swap(int device);
  // Evens out every pair of devices with the swap that lowers the pair's heavier load most. Never
  // raises the peak, and gives the peak device's swaps new partners when it is stuck.
  bool balance_pairs();
  bool try_move_redundant_slot(int device);
  void recompute_loads();

  std::span<const std::int64_t> load_;
  std::vector<int> count_;
  int num_experts_;
  int num_devices_;
  int slots_per_device_;
  std::vector<int> slots_;        // [device][slot] -> expert, -1 while empty
  std::vector<int> holds_;        // [device][expert] -> replicas of expert on device
  std::vector<double> device_load_;
};

}  // namespace switchyard::planner
