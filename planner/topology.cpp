#include "planner/topology.h"

#include <cstdint>
#include <string>

#include "base/error.h"

namespace switchyard::planner {

void Topology::validate() const {
  if (num_nodes <= 0 || gpus_per_node <= 0 || slots_per_gpu <= 0) {
    throw Error(ErrorCode::invalid_argument,
                "topology: nodes (" + std::to_string(num_nodes) + "), gpus per node (" +
                    std::to_string(gpus_per_node) + ") and slots per gpu (" +
                    std::to_string(slots_per_gpu) + ") must all be positive");
  }
  const std::int64_t devices = static_cast<std::int64_t>(num_nodes) * gpus_per_node;
  if (num_nodes > kMaxNodes || gpus_per_node > kMaxGpusPerNode || devices > kMaxDevices) {
    throw Error(ErrorCode::invalid_argument,
                "topology: " + std::to_string(num_nodes) + " nodes × " +
                    std::to_string(gpus_per_node) +
                    " gpus per node is past the "
                    "bounds of " +
                    std::to_string(kMaxNodes) + " nodes, " + std::to_string(kMaxGpusPerNode) +
                    " gpus per node and " + std::to_string(kMaxDevices) + " devices");
  }
  if (devices * slots_per_gpu > kMaxSlots) {
    throw Error(ErrorCode::invalid_argument, "topology: " + std::to_string(devices) +
                                                 " devices × " + std::to_string(slots_per_gpu) +
                                                 " slots per gpu is more than " +
                                                 std::to_string(kMaxSlots) + " slots");
  }
}

Topology Topology::for_slots(int num_nodes, int gpus_per_node, int num_experts, int redundant) {
  if (redundant < 0) {
    throw Error(ErrorCode::invalid_argument,
                "topology: redundant slots must be >= 0, got " + std::to_string(redundant));
  }
  Topology topo{num_nodes, gpus_per_node, 1};
  topo.validate();
  if (static_cast<std::int64_t>(num_experts) + redundant > kMaxSlots) {
    throw Error(ErrorCode::invalid_argument, "topology: " + std::to_string(num_experts) +
                                                 " experts + " + std::to_string(redundant) +
                                                 " redundant slots is more than " +
                                                 std::to_string(kMaxSlots) + " slots");
  }
  const int slots = num_experts + redundant;
  if (slots % topo.num_devices() != 0) {
    throw Error(ErrorCode::invalid_argument,
                "topology: " + std::to_string(num_experts) + " experts + " +
                    std::to_string(redundant) + " redundant slots = " + std::to_string(slots) +
                    " slots do not divide over " + std::to_string(topo.num_devices()) +
                    " devices; choose redundant slots so that experts + "
                    "redundant is a multiple of nodes × gpus per node");
  }
  topo.slots_per_gpu = slots / topo.num_devices();
  return topo;
}

}  // namespace switchyard::planner
