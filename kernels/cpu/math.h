// Scalar numerics shared by the CPU kernels, written to stay finite for any finite input.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace switchyard::kernels::detail {

// exp is only ever taken of a non-positive number, so neither branch overflows.
template <typename T>
T sigmoid(T x) {
  if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
  const T e = std::exp(x);
  return e / (T(1) + e);
}

// log(sum_i exp(x_i)), shifted by the maximum; accumulated in double so the aux-loss statistics
// do not depend on the storage type's precision.
template <typename T>
double logsumexp(const T* x, int64_t n) {
  const double m = *std::max_element(x, x + n);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i]) - m);
  return m + std::log(sum);
}

}  // namespace switchyard::kernels::detail
