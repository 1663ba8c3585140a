// Synthetic skewed routing for examples and benchmarks: makes a layer's expert load roughly
// Zipf-distributed without touching the layer's routing code.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace switchyard {

// Every token gets a shared offset u (a fixed unit direction) and expert e's gate row a component
// -skew * ln(1 + rank_e) along it, rank_e a fixed random order of the experts, so an expert's
// routing score carries a popularity term that makes the load roughly Zipf(skew)-distributed.
template <typename T>
struct RoutingSkew {
  std::vector<T> direction;   // u, unit length, [H]
  std::vector<double> bonus;  // [E]

  RoutingSkew(double skew, int64_t hidden, int experts, uint64_t seed)
      : direction(hidden), bonus(experts) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    double norm = 0;
    std::vector<double> u(hidden);
    for (auto& v : u) {
      v = normal(rng);
      norm += v * v;
    }
    for (int64_t h = 0; h < hidden; ++h) direction[h] = static_cast<T>(u[h] / std::sqrt(norm));
    std::vector<int> order(experts);
    for (int e = 0; e < experts; ++e) order[e] = e;
    std::shuffle(order.begin(), order.end(), rng);
    for (int r = 0; r < experts; ++r) bonus[order[r]] = -skew * std::log(1.0 + r);
  }
  void apply_to_gate(std::span<T> gate, int64_t hidden) const {
    for (size_t e = 0; e < bonus.size(); ++e) {
      for (int64_t h = 0; h < hidden; ++h)
        gate[e * hidden + h] += static_cast<T>(bonus[e]) * direction[h];
    }
  }
  void apply_to_tokens(std::vector<T>& x, int64_t hidden) const {
    for (size_t i = 0; i < x.size(); ++i) x[i] += direction[i % hidden];
  }
};

}  // namespace switchyard
