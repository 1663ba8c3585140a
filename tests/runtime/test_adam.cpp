// Adam against hand-computed steps, and a rejected step that leaves everything untouched.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "base/error.h"
#include "runtime/adam.h"

namespace sy = switchyard;

TEST(Adam, TwoStepsMatchTheFormula) {
  std::vector<double> p = {1.0, -2.0}, g = {0.5, -0.25}, m(2, 0.0), v(2, 0.0);
  const sy::AdamOptions o{.lr = 0.1, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8};
  sy::adam_update<double>(p, g, m, v, o, 1);
  // Step 1: m_hat = g, v_hat = g^2, so each parameter moves by lr * g / (|g| + eps).
  const double p0 = 1.0 - 0.1 * 0.5 / (0.5 + 1e-8), p1 = -2.0 + 0.1 * 0.25 / (0.25 + 1e-8);
  EXPECT_NEAR(p[0], p0, 1e-15);
  EXPECT_NEAR(p[1], p1, 1e-15);
  g = {0.5, 0.25};
  sy::adam_update<double>(p, g, m, v, o, 2);
  const double m0 = 0.9 * 0.05 + 0.1 * 0.5, v0 = 0.99 * 0.0025 + 0.01 * 0.25;
  const double m1 = 0.9 * -0.025 + 0.1 * 0.25, v1 = 0.99 * 0.000625 + 0.01 * 0.0625;
  const double c1 = 1 - 0.81, c2 = 1 - 0.9801;
  EXPECT_NEAR(p[0], p0 - 0.1 * (m0 / c1) / (std::sqrt(v0 / c2) + 1e-8), 1e-12);
  EXPECT_NEAR(p[1], p1 - 0.1 * (m1 / c1) / (std::sqrt(v1 / c2) + 1e-8), 1e-12);
}

sy::MoeConfig tiny() {
  sy::MoeConfig c;
  c.hidden = 3;
  c.num_experts = 4;
  c.num_shared = 1;
  c.top_k = 1;
  c.intermediate = 2;
  return c;
}

TEST(MoeAdam, UpdatesEveryTensor) {
  sy::MoeParams<double> p(tiny(), {1, 3}), g(tiny(), {1, 3});
  for (auto t : g.tensors()) std::fill(t.begin(), t.end(), 0.5);
  sy::MoeAdam<double> adam({.lr = 0.1}, tiny(), {1, 3});
  adam.step(p, g);
  for (auto t : p.tensors()) {
    for (double x : t) EXPECT_NEAR(x, -0.1, 1e-7);
  }
}

TEST(MoeAdam, MismatchedExpertsAreRejectedWithoutTouchingAnything) {
  sy::MoeParams<float> p(tiny(), {0, 1}), g(tiny(), {0, 2});
  for (auto t : g.tensors()) std::fill(t.begin(), t.end(), 1.0f);
  sy::MoeAdam<float> adam({}, tiny(), {0, 1});
  EXPECT_THROW(adam.step(p, g), sy::Error);
  for (auto t : p.tensors()) {
    for (float x : t) EXPECT_EQ(x, 0.0f);
  }
  EXPECT_EQ(adam.steps(), 0);
  sy::MoeParams<float> g_ok(tiny(), {0, 1});
  adam.step(p, g_ok);  // still usable
  EXPECT_EQ(adam.steps(), 1);
}
