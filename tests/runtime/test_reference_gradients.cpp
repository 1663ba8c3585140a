// The fp64 reference's backward against central finite differences of its own forward, so that the
// parity tests compare the distributed layer with gradients that are right, not merely agreeing.
// The objective is sum(y * grad_y) + the weighted aux losses, whose gradient the reference returns.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#include "tests/runtime/reference_moe.h"

namespace sy = switchyard;

namespace {

struct Problem {
  sy::MoeConfig config;
  sy::MoeParams<double> params;
  std::vector<double> bias, x, grad_y;
  std::vector<int> device_of_expert;
  int devices = 2;
};

Problem make_problem(sy::MoeConfig c) {
  Problem p;
  p.config = c;
  std::vector<int> all(c.num_experts);
  std::iota(all.begin(), all.end(), 0);
  p.params = sy::MoeParams<double>(c, all);
  sy::init_params(p.params, 9);
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> u(-1, 1);
  const int64_t tokens = 5;
  p.x.resize(tokens * c.hidden);
  p.grad_y.resize(tokens * c.hidden);
  p.bias.resize(c.num_experts);
  for (auto& v : p.x) v = u(rng);
  for (auto& v : p.grad_y) v = u(rng);
  for (auto& v : p.bias) v = 0.05 * u(rng);
  for (int e = 0; e < c.num_experts; ++e) p.device_of_expert.push_back(e * p.devices / c.num_experts);
  return p;
}

double objective(const Problem& p) {
  const auto r = sy::testing::reference_moe(p.config, p.params, p.bias, p.device_of_expert,
                                            p.devices, p.x, p.grad_y);
  double v = 0;
  for (size_t i = 0; i < r.y.size(); ++i) v += r.y[i] * p.grad_y[i];
  return v + p.config.aux_expert_alpha * r.expert_balance +
         p.config.aux_device_alpha * r.device_balance + p.config.z_loss_alpha * r.z_loss;
}

// Checks a few entries of one tensor: analytic gradient against a central difference.
void check_entries(Problem& p, std::span<double> tensor, std::span<const double> analytic,
                   const char* name) {
  const double h = 1e-6;
  for (size_t i = 0; i < tensor.size(); i += 1 + tensor.size() / 7) {
    const double saved = tensor[i];
    tensor[i] = saved + h;
    const double up = objective(p);
    tensor[i] = saved - h;
    const double down = objective(p);
    tensor[i] = saved;
    const double numeric = (up - down) / (2 * h);
    EXPECT_NEAR(analytic[i], numeric, 1e-6 * (1 + std::abs(numeric))) << name << "[" << i << "]";
  }
}

void check_all(sy::MoeConfig c) {
  Problem p = make_problem(c);
  const auto r = sy::testing::reference_moe(p.config, p.params, p.bias, p.device_of_expert,
                                            p.devices, p.x, p.grad_y);
  check_entries(p, p.x, r.grad_x, "x");
  check_entries(p, p.params.gate_weight, r.grads.gate_weight, "gate.weight");
  if (c.num_shared > 0) {
    check_entries(p, p.params.shared.gate_proj, r.grads.shared.gate_proj, "shared.gate_proj");
    check_entries(p, p.params.shared.down_proj, r.grads.shared.down_proj, "shared.down_proj");
  }
  for (int e : {0, c.num_experts - 1}) {
    check_entries(p, p.params.experts[e].gate_proj, r.grads.experts[e].gate_proj, "gate_proj");
    check_entries(p, p.params.experts[e].up_proj, r.grads.experts[e].up_proj, "up_proj");
    check_entries(p, p.params.experts[e].down_proj, r.grads.experts[e].down_proj, "down_proj");
  }
}

sy::MoeConfig base() {
  sy::MoeConfig c;
  c.hidden = 6;
  c.num_experts = 4;
  c.num_shared = 1;
  c.top_k = 2;
  c.intermediate = 5;
  c.aux_expert_alpha = 0.7;
  c.aux_device_alpha = 0.4;
  c.z_loss_alpha = 0.3;
  return c;
}

TEST(ReferenceGradients, SoftmaxWithAuxLosses) { check_all(base()); }

TEST(ReferenceGradients, SigmoidNormalisedScaledGroupedWithBias) {
  auto c = base();
  c.scoring = sy::kernels::ScoreFunc::sigmoid;
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  c.n_group = 2;
  c.topk_group = 1;
  c.selection_bias = true;
  check_all(c);
}

}  // namespace
