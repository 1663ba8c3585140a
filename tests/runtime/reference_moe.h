// A naive single-process fp64 reference of the whole DeepSeekMoE layer, forward and backward,
// written from DESIGN.md's routing semantics with plain loops and sharing no code with kernels/ or
// runtime/, so that the distributed layer is checked against an independent implementation.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/moe_config.h"
#include "runtime/moe_params.h"

namespace switchyard::testing {

struct ReferenceResult {
  std::vector<double> y;       // [T, H]
  std::vector<double> grad_x;  // [T, H]
  std::vector<int> idx;        // [T, K] selected experts
  MoeParams<double> grads;     // every expert
  double expert_balance = 0, device_balance = 0, z_loss = 0;
};

// params holds every routed expert; bias is [E] (used only when config.selection_bias);
// device_of_expert[e] is the device owning expert e (for the device-level balance loss).
ReferenceResult reference_moe(const MoeConfig& config, const MoeParams<double>& params,
                              const std::vector<double>& bias,
                              const std::vector<int>& device_of_expert, int num_devices,
                              const std::vector<double>& x, const std::vector<double>& grad_y);

}  // namespace switchyard::testing
