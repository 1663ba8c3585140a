// The device grid a plan is made for: nodes × devices per node, each device holding the same
// number of expert slots. Slot j lives on device j / slots_per_gpu, device g on node
// g / gpus_per_node (the `moe-placement/v1` convention, shared with EPLB's phy2log).
#pragma once

namespace switchyard::planner {

struct Topology {
  int num_nodes = 1;
  int gpus_per_node = 1;
  int slots_per_gpu = 1;

  int num_devices() const { return num_nodes * gpus_per_node; }
  int num_slots() const { return num_devices() * slots_per_gpu; }
  int device_of_slot(int slot) const { return slot / slots_per_gpu; }
  int node_of_device(int device) const { return device / gpus_per_node; }
  int node_of_slot(int slot) const { return node_of_device(device_of_slot(slot)); }

  // Topology for `num_experts + redundant` slots; throws std::invalid_argument when the slots do
  // not divide evenly over the devices.
  static Topology for_slots(int num_nodes, int gpus_per_node, int num_experts, int redundant);
  // Throws std::invalid_argument when a dimension is not positive.
  void validate() const;
};

}  // namespace switchyard::planner
