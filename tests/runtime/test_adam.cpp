// Adam against a hand-computed step, and a rejected step that leaves everything untouched.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "runtime/adam.h"
#include "runtime/error.h"

namespace sy = switchyard;

TEST(Adam, TwoStepsMatchTheFormula) {
  std::vector<double> p = {1.0, -2.0}, g = {0.5, -0.25};
  sy::Adam<double> adam({.lr = 0.1, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8});
  adam.step({p}, {g});
  // Step 1: m_hat = g, v_hat = g^2, so each parameter moves by lr * g / (|g| + eps).
  const double p0 = 1.0 - 0.1 * 0.5 / (0.5 + 1e-8), p1 = -2.0 + 0.1 * 0.25 / (0.25 + 1e-8);
  EXPECT_NEAR(p[0], p0, 1e-15);
  EXPECT_NEAR(p[1], p1, 1e-15);
  g = {0.5, 0.25};
  adam.step({p}, {g});
  const double m0 = 0.9 * 0.05 + 0.1 * 0.5, v0 = 0.99 * 0.0025 + 0.01 * 0.25;
  const double m1 = 0.9 * -0.025 + 0.1 * 0.25, v1 = 0.99 * 0.000625 + 0.01 * 0.0625;
  const double c1 = 1 - 0.81, c2 = 1 - 0.9801;
  EXPECT_NEAR(p[0], p0 - 0.1 * (m0 / c1) / (std::sqrt(v0 / c2) + 1e-8), 1e-12);
  EXPECT_NEAR(p[1], p1 - 0.1 * (m1 / c1) / (std::sqrt(v1 / c2) + 1e-8), 1e-12);
}

TEST(Adam, ShapeMismatchIsRejectedWithoutTouchingAnything) {
  std::vector<float> p = {1.0f, 2.0f}, g = {0.1f, 0.1f};
  sy::Adam<float> adam({});
  adam.step({p}, {g});
  const std::vector<float> before = p;
  std::vector<float> wrong = {0.1f};
  EXPECT_THROW(adam.step({p}, {wrong}), sy::Error);
  EXPECT_EQ(p, before);
  EXPECT_EQ(adam.steps(), 1);
  adam.step({p}, {g});  // still usable
  EXPECT_EQ(adam.steps(), 2);
}
