// Helpers shared by the multi-rank layer tests: seeded inputs, the relative error they are judged
// by, and the tolerance per precision (fp64 1e-12, fp32 1e-5).
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <type_traits>
#include <vector>

namespace switchyard::testing {

// ||got - want|| / ||want|| (the absolute error when want is all zeros). T is given; W is T unless
// given too (e.g. a fp32 result against a fp64 reference).
template <typename T, typename W = T>
double rel_error(std::span<const T> got, std::type_identity_t<std::span<const W>> want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = double(got[i]) - double(want[i]);
    diff += d * d;
    norm += double(want[i]) * double(want[i]);
  }
  return norm == 0 ? std::sqrt(diff) : std::sqrt(diff / norm);
}

template <typename T>
double tolerance() {
  return sizeof(T) == sizeof(double) ? 1e-12 : 1e-5;
}

// n values uniform in [-scale, scale] from seed.
template <typename T>
std::vector<T> random_values(size_t n, uint64_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(-scale, scale);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(dist(rng));
  return v;
}

}  // namespace switchyard::testing
