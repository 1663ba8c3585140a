#include "runtime/moe_config.h"

#include <cmath>

#include <fmt/format.h>

#include "base/error.h"

namespace switchyard {

kernels::RouterOptions MoeConfig::router_options() const {
  kernels::RouterOptions opts;
  opts.score = scoring;
  opts.top_k = top_k;
  opts.n_group = n_group;
  opts.topk_group = topk_group;
  opts.group_score = group_score;
  opts.norm_topk_prob = norm_topk_prob;
  opts.routed_scaling_factor = routed_scaling_factor;
  return opts;
}

void MoeConfig::validate() const {
  require(hidden > 0, fmt::format("MoeConfig.hidden must be positive, got {}", hidden));
  require(num_experts > 0,
          fmt::format("MoeConfig.num_experts must be positive, got {}", num_experts));
  require(intermediate > 0,
          fmt::format("MoeConfig.intermediate must be positive, got {}", intermediate));
  require(num_shared >= 0, fmt::format("MoeConfig.num_shared must be >= 0, got {}", num_shared));
  require(top_k >= 1 && top_k <= num_experts,
          fmt::format("MoeConfig.top_k = {} must be in [1, num_experts = {}]", top_k, num_experts));
  require(n_group >= 1 && num_experts % n_group == 0,
          fmt::format("MoeConfig.n_group = {} must be >= 1 and divide num_experts = {}", n_group,
                      num_experts));
  require(
      topk_group >= 1 && topk_group <= n_group,
      fmt::format("MoeConfig.topk_group = {} must be in [1, n_group = {}]", topk_group, n_group));
  const int group_size = num_experts / n_group;
  require(
      top_k <= topk_group * group_size,
      fmt::format("MoeConfig.top_k = {} exceeds the {} experts left in topk_group = {} groups of "
                  "{}; raise topk_group or lower top_k",
                  top_k, topk_group * group_size, topk_group, group_size));
  require(n_group == 1 || group_score != kernels::GroupScore::top2_sum || group_size >= 2,
          fmt::format("MoeConfig.group_score top2_sum needs at least 2 experts per group, but "
                      "n_group = {} leaves {}; use group_score max or fewer groups",
                      n_group, group_size));
  require(std::isfinite(routed_scaling_factor) && routed_scaling_factor > 0,
          fmt::format("MoeConfig.routed_scaling_factor must be finite and positive, got {}",
                      routed_scaling_factor));
  require(bias_update_rate >= 0,
          fmt::format("MoeConfig.bias_update_rate must be >= 0, got {}", bias_update_rate));
  require(aux_expert_alpha >= 0,
          fmt::format("MoeConfig.aux_expert_alpha must be >= 0, got {}", aux_expert_alpha));
  require(aux_device_alpha >= 0,
          fmt::format("MoeConfig.aux_device_alpha must be >= 0, got {}", aux_device_alpha));
  require(z_loss_alpha >= 0,
          fmt::format("MoeConfig.z_loss_alpha must be >= 0, got {}", z_loss_alpha));
  require(wire == WirePrecision::native || wire == WirePrecision::bf16,
          fmt::format("MoeConfig.wire = {} is not a WirePrecision; use native or bf16",
                      static_cast<int>(wire)));
}

std::vector<std::pair<std::string, std::string>> MoeConfig::fields() const {
  // %.17g keeps every bit of a double, so that two ranks agree only when their values are equal.
  auto real = [](double v) { return fmt::format("{:.17g}", v); };
  auto flag = [](bool v) { return std::string(v ? "true" : "false"); };
  return {
      {"MoeConfig.hidden", std::to_string(hidden)},
      {"MoeConfig.num_experts", std::to_string(num_experts)},
      {"MoeConfig.num_shared", std::to_string(num_shared)},
      {"MoeConfig.top_k", std::to_string(top_k)},
      {"MoeConfig.intermediate", std::to_string(intermediate)},
      {"MoeConfig.scoring", scoring == kernels::ScoreFunc::softmax ? "softmax" : "sigmoid"},
      {"MoeConfig.norm_topk_prob", flag(norm_topk_prob)},
      {"MoeConfig.routed_scaling_factor", real(routed_scaling_factor)},
      {"MoeConfig.n_group", std::to_string(n_group)},
      {"MoeConfig.topk_group", std::to_string(topk_group)},
      {"MoeConfig.group_score", group_score == kernels::GroupScore::max ? "max" : "top2_sum"},
      {"MoeConfig.selection_bias", flag(selection_bias)},
      {"MoeConfig.bias_update_rate", real(bias_update_rate)},
      {"MoeConfig.aux_expert_alpha", real(aux_expert_alpha)},
      {"MoeConfig.aux_device_alpha", real(aux_device_alpha)},
      {"MoeConfig.z_loss_alpha", real(z_loss_alpha)},
      {"MoeConfig.wire", wire == WirePrecision::native || wire == WirePrecision::bf16
                             ? wire_precision_name(wire)
                             : fmt::format("invalid ({})", static_cast<int>(wire))},
  };
}

kernels::ScoreFunc parse_score_func(const std::string& name) {
  if (name == "softmax") return kernels::ScoreFunc::softmax;
  if (name == "sigmoid") return kernels::ScoreFunc::sigmoid;
  throw Error(ErrorCode::invalid_argument,
              fmt::format("scoring '{}' is unknown; use softmax or sigmoid", name));
}

WirePrecision parse_wire_precision(const std::string& name) {
  if (name == "native") return WirePrecision::native;
  if (name == "bf16") return WirePrecision::bf16;
  throw Error(ErrorCode::invalid_argument,
              fmt::format("wire precision '{}' is unknown; use native (the layer's own type) or "
                          "bf16",
                          name));
}

const char* wire_precision_name(WirePrecision wire) {
  return wire == WirePrecision::bf16 ? "bf16" : "native";
}

}  // namespace switchyard
