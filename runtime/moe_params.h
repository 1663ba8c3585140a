// Parameters (and, with the same shapes, gradients) of one MoE layer as held by one rank, in
// Hugging Face's DeepSeek layout. The gate and shared experts are replicated on every rank; a
// routed expert lives only on the rank(s) the placement gives it. Each tensor is a ParamTensor:
// the layer's own storage, or a caller's memory bound to it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/swiglu.h"
#include "runtime/moe_config.h"
#include "runtime/param_tensor.h"

namespace switchyard {

template <typename T>
struct SwigluParams {
  int64_t hidden = 0;
  int64_t inter = 0;
  ParamTensor<T> gate_proj;  // [inter, hidden]
  ParamTensor<T> up_proj;    // [inter, hidden]
  ParamTensor<T> down_proj;  // [hidden, inter]

  SwigluParams() = default;
  SwigluParams(int64_t hidden_size, int64_t inter_size);  // zero-filled

  kernels::SwigluWeights<T> weights() const;
  // As gradients to write into: overwrite set when all three are fresh (ParamTensor::bind_fresh).
  kernels::SwigluGrads<T> grads();
  bool all_fresh() const;
};

template <typename T>
struct MoeParams {
  int64_t hidden = 0;
  ParamTensor<T> gate_weight;            // [E, H]
  SwigluParams<T> shared;                // intermediate S * I; empty when S == 0
  std::vector<int> expert_ids;           // routed experts held here, ascending
  std::vector<SwigluParams<T>> experts;  // parallel to expert_ids

  MoeParams() = default;
  MoeParams(const MoeConfig& config, std::vector<int> held_experts);  // zero-filled

  // Index of a routed expert in experts, or -1 when it is not held here.
  int local_index(int expert) const;
  // Tensors held on every rank (gate, shared experts), whose gradients are all-reduced.
  std::vector<std::span<T>> replicated_tensors();
  // Every tensor, replicated first then experts in expert_ids order (a stable order for
  // optimizers).
  std::vector<std::span<T>> tensors();
  // The same tensors as ParamTensors.
  std::vector<ParamTensor<T>*> param_tensors();
  void zero();
  // Fresh tensors (gradients bound by ParamTensor::bind_fresh, not yet written) become zeros:
  // before they are read or added to by anything but the backward that writes them.
  void zero_fresh();
  // Every tensor fresh (ParamTensor::mark_fresh): as zero() for what reads them, but the next
  // backward writes the gradients instead of adding them onto zeros, and nothing is written now.
  void mark_fresh();
  // Whether any tensor views a caller's memory (ParamTensor::bind).
  bool any_bound() const;
};

// Deterministic initialisation: every tensor is drawn from a stream keyed by (seed, tensor, expert
// id), uniform in +-1/sqrt(fan_in), so a parameter's value does not depend on how many ranks
// there are or which rank holds it.
template <typename T>
void init_params(MoeParams<T>& params, uint64_t seed);

}  // namespace switchyard
