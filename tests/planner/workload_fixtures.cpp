#include "workload_fixtures.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>

namespace switchyard::planner::testing {

Workload random_workload(int layers, int experts, int top_k, int tokens, double skew,
                         std::uint32_t seed) {
  std::mt19937 rng(seed);
  Workload w;
  w.name = "random";
  w.num_layers = layers;
  w.num_experts = experts;
  w.top_k = top_k;
  w.tokens_per_layer = tokens;
  w.load.assign(layers, std::vector<std::int64_t>(experts, 0));
  std::vector<double> popularity(experts);
  for (int l = 0; l < layers; ++l) {
    for (int e = 0; e < experts; ++e) popularity[e] = 1.0 / std::pow(e + 1.0, skew);
    std::shuffle(popularity.begin(), popularity.end(), rng);
    for (int t = 0; t < tokens; ++t) {
      std::vector<double> weights = popularity;
      for (int k = 0; k < top_k; ++k) {
        std::discrete_distribution<int> pick(weights.begin(), weights.end());
        const int e = pick(rng);
        weights[e] = 0.0;
        w.routes.push_back(static_cast<std::uint16_t>(e));
        ++w.load[l][e];
      }
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
