// The device grid a plan is made for: nodes × devices per node, each device holding the same
// number of expert slots. Slot j lives on device j / slots_per_gpu, device g on node
// g / gpus_per_node (the `moe-placement/v1` convention, shared with EPLB's phy2log).
#pragma once

namespace switchyard::planner {

// Upper bounds on a topology, whether from a command line or a plan file (docs/tools.md). Today's
// largest expert-parallel deployments span hundreds of nodes of 8-72 devices; the bounds sit far
// above them, while a plan (layers × slots ints) stays within 1 GiB even at the workload format's
// 1024 layers (60 MB at DeepSeek-V3's 58), so a mistyped size fails with a message instead of
// exhausting memory.
inline constexpr int kMaxNodes = 4096;
inline constexpr int kMaxGpusPerNode = 1024;
inline constexpr int kMaxDevices = 65536;
inline constexpr int kMaxSlots = 1 << 18;

struct Topology {
  int num_nodes = 1;
  int gpus_per_node = 1;
  int slots_per_gpu = 1;

  int num_devices() const { return num_nodes * gpus_per_node; }
  int num_slots() const { return num_devices() * slots_per_gpu; }
  int device_of_slot(int slot) const { return slot / slots_per_gpu; }
  int node_of_device(int device) const { return device / gpus_per_node; }
  int node_of_slot(int slot) const { return node_of_device(device_of_slot(slot)); }

  // Topology for `num_experts + redundant` slots; throws Error(invalid_argument) when the slots do
  // not divide evenly over the devices.
  static Topology for_slots(int num_nodes, int gpus_per_node, int num_experts, int redundant);
  // Throws Error(invalid_argument) when a dimension is not positive or a bound above is exceeded.
  void validate() const;
};

}  // namespace switchyard::planner
