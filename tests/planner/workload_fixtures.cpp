#include "workload_fixtures.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>

namespace switchyard::planner::testing {

namespace {

Workload empty_workload(const std::string& name, int layers, int experts, int top_k, int tokens) {
  Workload w;
  w.name = name;
  w.num_layers = layers;
  w.num_experts = experts;
  w.top_k = top_k;
  w.tokens_per_layer = tokens;
  w.load.assign(layers, std::vector<std::int64_t>(experts, 0));
  return w;
}

// Appends one token of layer l: top_k distinct experts drawn by `weights` (changed in place).
void route_token(Workload& w, int l, std::vector<double>& weights, std::mt19937& rng) {
  for (int k = 0; k < w.top_k; ++k) {
    std::discrete_distribution<int> pick(weights.begin(), weights.end());
    const int e = pick(rng);
    weights[e] = 0.0;
    w.routes.push_back(static_cast<std::uint16_t>(e));
    ++w.load[l][e];
  }
}

// Zipf-like popularity with exponent `skew`, randomly permuted.
std::vector<double> shuffled_popularity(int experts, double skew, std::mt19937& rng) {
  std::vector<double> popularity(experts);
  for (int e = 0; e < experts; ++e) popularity[e] = 1.0 / std::pow(e + 1.0, skew);
  std::shuffle(popularity.begin(), popularity.end(), rng);
  return popularity;
}

}  // namespace

Workload random_workload(int layers, int experts, int top_k, int tokens, double skew,
                         std::uint32_t seed) {
  std::mt19937 rng(seed);
  Workload w = empty_workload("random", layers, experts, top_k, tokens);
  for (int l = 0; l < layers; ++l) {
    const std::vector<double> popularity = shuffled_popularity(experts, skew, rng);
    for (int t = 0; t < tokens; ++t) {
      std::vector<double> weights = popularity;
      route_token(w, l, weights, rng);
    }
  }
  w.validate();
  return w;
}

Workload random_grouped_workload(int layers, int experts, int groups, int topk_groups, int top_k,
                                 int tokens, double skew, std::uint32_t seed) {
  std::mt19937 rng(seed);
  Workload w = empty_workload("random-grouped", layers, experts, top_k, tokens);
  w.num_groups = groups;
  w.topk_groups = topk_groups;
  const int group_size = experts / groups;
  for (int l = 0; l < layers; ++l) {
    const std::vector<double> popularity = shuffled_popularity(experts, skew, rng);
    std::vector<double> group_popularity(groups, 0.0);
    for (int e = 0; e < experts; ++e) group_popularity[e / group_size] += popularity[e];
    for (int t = 0; t < tokens; ++t) {
      std::vector<double> group_weight = group_popularity;
      std::vector<double> weights(experts, 0.0);
      for (int g = 0; g < topk_groups; ++g) {
        std::discrete_distribution<int> pick(group_weight.begin(), group_weight.end());
        const int chosen = pick(rng);
        group_weight[chosen] = 0.0;
        std::copy(popularity.begin() + chosen * group_size,
                  popularity.begin() + (chosen + 1) * group_size,
                  weights.begin() + chosen * group_size);
      }
      route_token(w, l, weights, rng);
    }
  }
  w.validate();
  return w;
}

std::optional<Workload> public_workload(const std::string& name, int layers) {
  const std::filesystem::path path =
      std::filesystem::path(SWITCHYARD_WORKLOADS_DIR) / (name + ".json");
  if (!std::filesystem::exists(path)) return std::nullopt;
  Workload w = read_workload(path.string());
  w.num_layers = std::min(w.num_layers, layers);
  w.load.resize(w.num_layers);
  w.routes.resize(static_cast<std::size_t>(w.num_layers) * w.tokens_per_layer * w.top_k);
  return w;
}

}  // namespace switchyard::planner::testing
