// Shared helpers for the kernel tests: random inputs, relative error, finite differences and
// invalid-argument checks. References live in each test file, written with plain fp64 loops.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "base/error.h"
#include "kernels/backend.h"

namespace switchyard::kernels::testing {

using FloatTypes = ::testing::Types<float, double>;

// Tolerance on the relative error against an analytic fp64 reference.
template <typename T>
constexpr double tol() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-12;
}

// Tolerance against central finite differences (step 1e-6), limited by the differences
// themselves in fp64 and by the kernel's own precision in fp32.
template <typename T>
constexpr double fd_tol() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-6;
}

// Tolerance of bf16 compute (inputs rounded to bfloat16, fp32 accumulation) on the relative error
// (norm-wise, rel_err below) against the fp64 reference: one rounding of each input is 2^-9
// relative; the whole layer (tests/runtime, LayerCompute) measured at most 6.2e-3.
constexpr double kBf16Tol = 1.5e-2;

// One backend configuration to run a kernel test with, and the tolerance it is held to.
struct BackendCase {
  std::string name;
  ComputePrecision compute;
  double tol;
};

// Every backend this build has for T: openblas; and for fp32, onednn in fp32 and in bf16.
template <typename T>
std::vector<BackendCase> backend_cases() {
  std::vector<BackendCase> cases{{"openblas", ComputePrecision::native, tol<T>()}};
#ifdef SWITCHYARD_HAVE_ONEDNN
  if constexpr (std::is_same_v<T, float>) {
    cases.push_back({"onednn", ComputePrecision::native, tol<T>()});
    cases.push_back({"onednn", ComputePrecision::bf16, kBf16Tol});
  }
#endif
  return cases;
}

inline std::string case_name(const BackendCase& c) {
  return c.name + "/" + compute_precision_name(c.compute);
}

inline std::vector<double> uniform(size_t n, uint64_t seed, double lo = -1, double hi = 1) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

// Multiples of 1/256 in [0, hi): exact in float and double, and so are sums of a few of them, so
// both precisions make the same comparisons as the fp64 reference, and ties are frequent.
inline std::vector<double> grid(size_t n, uint64_t seed, int hi = 256) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> dist(0, hi - 1);
  std::vector<double> v(n);
  for (double& x : v) x = dist(rng) / 256.0;
  return v;
}

template <typename T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

template <typename T>
std::vector<double> to_double(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// ||a - b|| / ||b|| (plain ||a - b|| when b is 0), in fp64.
template <typename A, typename B>
double rel_err(const std::vector<A>& a, const std::vector<B>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0;
  double norm = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    diff += d * d;
    norm += static_cast<double>(b[i]) * static_cast<double>(b[i]);
  }
  return norm == 0 ? std::sqrt(diff) : std::sqrt(diff / norm);
}

// Central differences of f at x, one coordinate at a time.
inline std::vector<double> numeric_grad(const std::function<double(const std::vector<double>&)>& f,
                                        std::vector<double> x, double h = 1e-6) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double orig = x[i];
    x[i] = orig + h;
    const double up = f(x);
    x[i] = orig - h;
    const double down = f(x);
    x[i] = orig;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

// Expects fn to throw switchyard::Error(invalid_argument) whose message contains every one of
// names.
inline void expect_invalid(const std::function<void()>& fn, const std::vector<std::string>& names) {
  try {
    fn();
    ADD_FAILURE() << "no switchyard::Error thrown";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << e.what();
    for (const auto& name : names) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos)
          << "message \"" << e.what() << "\" does not name " << name;
    }
  }
}

}  // namespace switchyard::kernels::testing
