#include "kernels/cpu/sigmoid.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace switchyard::kernels {
namespace {

double reference(double v) {
  return v >= 0 ? 1 / (1 + std::exp(-v)) : std::exp(v) / (1 + std::exp(v));
}

// Inputs a SwiGLU pre-activation can hold, and the edges: zeros of both signs, tiny and huge
// magnitudes (exp of -|x| underflows), both infinities.
std::vector<float> inputs(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 4.f);
  const float edges[] = {0.f,
                         -0.f,
                         1e-30f,
                         -1e-30f,
                         1e-45f,
                         -1e-45f,
                         15.f,
                         -15.f,
                         87.f,
                         -87.f,
                         89.f,
                         -89.f,
                         104.f,
                         -104.f,
                         1e30f,
                         -1e30f,
                         std::numeric_limits<float>::infinity(),
                         -std::numeric_limits<float>::infinity()};
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = i < std::size(edges) ? edges[i] : normal(rng);
  return x;
}

// Every length from 0 to 40 (whole vectors of 16 and every tail) and one long array, against the
// fp64 reference: within 4 float ulps of the exact value (relative 5e-7: libmvec's expf and the
// division each round), whichever path runs.
TEST(Sigmoid, MatchesFp64ReferenceAtEveryLength) {
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 40; ++n) lengths.push_back(n);
  lengths.push_back(24 * 1408 + 5);
  for (size_t n : lengths) {
    const std::vector<float> x = inputs(n, static_cast<uint32_t>(n));
    std::vector<float> out(n + 1, -7.f);  // one guard element past the end
    detail::sigmoid(x.data(), static_cast<int64_t>(n), out.data());
    for (size_t i = 0; i < n; ++i) {
      const double want = reference(x[i]);
      ASSERT_LE(std::abs(out[i] - want), 5e-7 * want + 1e-44)
          << "n " << n << ", x[" << i << "] = " << x[i] << ": " << out[i] << " vs " << want;
    }
    EXPECT_EQ(out[n], -7.f) << "n " << n << ": wrote past the end";
  }
}

TEST(Sigmoid, VectorPathAgreesWithScalarPath) {
  const std::vector<float> x = inputs(1000, 7);
  std::vector<float> vec(x.size()), scalar(x.size());
  detail::sigmoid(x.data(), static_cast<int64_t>(x.size()), vec.data());
  detail::sigmoid_scalar(x.data(), static_cast<int64_t>(x.size()), scalar.data());
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_NEAR(vec[i], scalar[i], 5e-7 * scalar[i] + 1e-44) << "x = " << x[i];
  }
  std::cout << "sigmoid path on this CPU: "
            << (detail::sigmoid_is_vectorized() ? "AVX-512 (libmvec expf)" : "scalar") << "\n";
}

TEST(Sigmoid, InPlaceAndNaN) {
  std::vector<float> x = {std::numeric_limits<float>::quiet_NaN(), 0.f, 2.f, -2.f};
  detail::sigmoid(x.data(), 4, x.data());
  EXPECT_TRUE(std::isnan(x[0]));
  EXPECT_EQ(x[1], 0.5f);
  EXPECT_NEAR(x[2], reference(2.0), 1e-7);
  EXPECT_NEAR(x[3], reference(-2.0), 1e-7);
}

TEST(Sigmoid, DoubleMatchesReference) {
  const std::vector<double> x = {-800, -30, -1, -1e-300, 0, 1e-300, 1, 30, 800};
  std::vector<double> out(x.size());
  detail::sigmoid(x.data(), static_cast<int64_t>(x.size()), out.data());
  for (size_t i = 0; i < x.size(); ++i)
    EXPECT_NEAR(out[i], reference(x[i]), 1e-16 * reference(x[i]) + 1e-300);
}

}  // namespace
}  // namespace switchyard::kernels
