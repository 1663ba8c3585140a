// Configuration of one DeepSeekMoE layer (field names follow Hugging Face's DeepseekV3Config where
// one exists).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kernels/gating.h"

namespace switchyard {

// Precision of the token rows that dispatch and combine carry, forward and backward. native: the
// layer's own type, exact. bf16: rounded to bfloat16 for the wire and widened on arrival; combine
// adds in fp32 (comm/alltoall.h). Halves fp32's bytes at bf16's precision (about 3 digits).
enum class WirePrecision { native, bf16 };

struct MoeConfig {
  int64_t hidden = 0;        // H
  int num_experts = 0;       // E routed experts
  int num_shared = 0;        // S shared experts, run as one SwiGLU of width S * intermediate
  int top_k = 1;             // K experts per token
  int64_t intermediate = 0;  // I, each routed expert's intermediate size
  kernels::ScoreFunc scoring = kernels::ScoreFunc::softmax;
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;
  int n_group = 1;
  int topk_group = 1;
  kernels::GroupScore group_score = kernels::GroupScore::top2_sum;
  // Aux-loss-free balancing: a per-expert bias added to the scores for selection only, moved by
  // bias_update_rate * sign(mean_load - load) after each step.
  bool selection_bias = false;
  double bias_update_rate = 0.001;
  // Coefficients of the auxiliary losses added in backward (0 = off).
  double aux_expert_alpha = 0.0;
  double aux_device_alpha = 0.0;
  double z_loss_alpha = 0.0;
  WirePrecision wire = WirePrecision::native;

  kernels::RouterOptions router_options() const;
  // Throws Error(invalid_argument) naming the first field that is out of range and why.
  void validate() const;
  // Every field as (name, value as text, exact): what ranks compare before they build a layer.
  std::vector<std::pair<std::string, std::string>> fields() const;
};

kernels::ScoreFunc parse_score_func(const std::string& name);
// "native" or "bf16"; throws Error(invalid_argument) naming the choices.
WirePrecision parse_wire_precision(const std::string& name);
const char* wire_precision_name(WirePrecision wire);

}  // namespace switchyard
