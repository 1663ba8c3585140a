#include "kernels/aux_loss.h"

#include <limits>

#include "tests/kernels/testing.h"

namespace switchyard::kernels {
namespace {

using testing::cast;
using testing::rel_err;
using testing::tol;

template <typename T>
class AuxLoss : public ::testing::Test {};
TYPED_TEST_SUITE(AuxLoss, testing::FloatTypes);

// E = 4 experts, K = 2, two tokens, added one batch at a time. The scores need not be the softmax
// of the logits (with sigmoid routing they are not), which keeps the hand arithmetic short.
//   idx            {0,1}, {0,2}          -> counts [2,1,1,0], f = 4/(2*2) * counts = [2,1,1,0]
//   scores         [.4,.3,.2,.1], [.5,.1,.3,.1] -> P = [.45,.2,.25,.1]
//   expert loss    2*.45 + .2 + .25 + 0 = 1.35
//   devices        [0,0,2,2] of 3 (device 1 owns none): f' = [1.5, -, .5], P' = [.65, -, .35]
//   device loss    1.5*.65 + .5*.35 = 1.15
//   logits         [0,0,0,0] and [0, ln2, ln3, ln4]: logsumexp ln4 and ln10
//   z-loss         (ln4^2 + ln10^2) / 2
TYPED_TEST(AuxLoss, HandComputedSmallCase) {
  using T = TypeParam;
  const std::vector<T> logits =
      cast<T>({0, 0, 0, 0, 0, std::log(2.0), std::log(3.0), std::log(4.0)});
  const std::vector<T> scores = cast<T>({.4, .3, .2, .1, .5, .1, .3, .1});
  const std::vector<int32_t> idx{0, 1, 0, 2};
  RouterStats stats(4);
  for (int t = 0; t < 2; ++t) {
    accumulate_router_stats<T>(logits.data() + 4 * t, scores.data() + 4 * t, idx.data() + 2 * t, 1,
                               4, 2, stats);
  }
  const double ln4 = std::log(4.0), ln10 = std::log(10.0);
  const std::vector<double> flat(stats.flat().begin(), stats.flat().end());
  EXPECT_LE(
      rel_err(flat, std::vector<double>{2, 1, 1, 0, .9, .4, .5, .2, ln4 * ln4 + ln10 * ln10, 2}),
      tol<T>());

  const std::vector<int> device_of_expert{0, 0, 2, 2};
  const AuxLosses loss = aux_losses(stats, 2, device_of_expert, 3);
  EXPECT_NEAR(loss.expert_balance, 1.35, 1.35 * tol<T>());
  EXPECT_NEAR(loss.device_balance, 1.15, 1.15 * tol<T>());
  const double z = (ln4 * ln4 + ln10 * ln10) / 2;
  EXPECT_NEAR(loss.z_loss, z, z * tol<T>());

  // coef[e] = (alpha_e f_e + alpha_d f'_{d(e)}) / T with alpha_e = 1, alpha_d = 0.5:
  //   [(2 + .75)/2, (1 + .75)/2, (1 + .25)/2, (0 + .25)/2]
  const auto coef = balance_score_grad(stats, 2, device_of_expert, 3, 1.0, 0.5);
  EXPECT_LE(rel_err(coef, std::vector<double>{1.375, 0.875, 0.625, 0.125}), tol<T>());
}

TEST(AuxLoss, NoTokensGiveZeroLossAndGradient) {
  const RouterStats stats(3);
  const std::vector<int> device_of_expert{0, 1, 1};
  const AuxLosses loss = aux_losses(stats, 1, device_of_expert, 2);
  EXPECT_EQ(loss.expert_balance, 0);
  EXPECT_EQ(loss.device_balance, 0);
  EXPECT_EQ(loss.z_loss, 0);
  EXPECT_EQ(balance_score_grad(stats, 1, device_of_expert, 2, 1, 1), std::vector<double>(3, 0.0));
}

// Stats from two "ranks" summed through flat() (what the all-reduce does); the coefficients must
// be the gradient of the global loss with respect to every token's scores.
TEST(AuxLoss, BalanceGradMatchesFiniteDifferences) {
  const int experts = 6, top_k = 2;
  const int64_t tokens[] = {3, 2};
  const int64_t total = 5;
  const std::vector<int> device_of_expert{0, 0, 1, 1, 3, 3};  // device 2 owns none
  const int devices = 4;
  const double alpha_e = 0.7, alpha_d = 0.4;
  const auto scores = testing::uniform(total * experts, 101, 0, 1);
  const auto logits = testing::uniform(total * experts, 102);
  const std::vector<int32_t> idx{0, 3, 5, 1, 2, 3, 3, 4, 0, 5};

  RouterStats global(experts);
  for (int rank = 0, first = 0; rank < 2; first += static_cast<int>(tokens[rank]), ++rank) {
    RouterStats local(experts);
    accumulate_router_stats<double>(logits.data() + first * experts,
                                    scores.data() + first * experts, idx.data() + first * top_k,
                                    tokens[rank], experts, top_k, local);
    for (size_t i = 0; i < local.flat().size(); ++i) global.flat()[i] += local.flat()[i];
  }

  std::vector<double> count(experts, 0.0);
  for (int32_t e : idx) count[e] += 1;
  auto naive_loss = [&](const std::vector<double>& s, double* expert_out, double* device_out) {
    std::vector<double> f(experts), p(experts, 0.0);
    for (int e = 0; e < experts; ++e) {
      f[e] = experts / double(top_k * total) * count[e];
      for (int64_t t = 0; t < total; ++t) p[e] += s[t * experts + e] / total;
    }
    double expert = 0, device = 0;
    for (int e = 0; e < experts; ++e) expert += f[e] * p[e];
    for (int d = 0; d < devices; ++d) {
      double f_sum = 0, p_sum = 0;
      int owned = 0;
      for (int e = 0; e < experts; ++e) {
        if (device_of_expert[e] != d) continue;
        f_sum += f[e];
        p_sum += p[e];
        ++owned;
      }
      if (owned > 0) device += f_sum / owned * p_sum;
    }
    if (expert_out) *expert_out = expert;
    if (device_out) *device_out = device;
    return alpha_e * expert + alpha_d * device;
  };

  double expert = 0, device = 0;
  naive_loss(scores, &expert, &device);
  const AuxLosses loss = aux_losses(global, top_k, device_of_expert, devices);
  EXPECT_NEAR(loss.expert_balance, expert, 1e-12 * expert);
  EXPECT_NEAR(loss.device_balance, device, 1e-12 * device);

  const auto coef = balance_score_grad(global, top_k, device_of_expert, devices, alpha_e, alpha_d);
  std::vector<double> tiled;
  for (int64_t t = 0; t < total; ++t) tiled.insert(tiled.end(), coef.begin(), coef.end());
  const auto numeric = testing::numeric_grad(
      [&](const std::vector<double>& s) { return naive_loss(s, nullptr, nullptr); }, scores);
  EXPECT_LE(rel_err(tiled, numeric), 1e-6);
}

TYPED_TEST(AuxLoss, AddBalanceGradAddsToEveryToken) {
  using T = TypeParam;
  const std::vector<double> coef{0.5, -1.25, 2.0};
  const auto init = cast<T>(testing::uniform(4 * 3, 103));
  std::vector<T> grad = init;
  add_balance_grad<T>(coef.data(), 4, 3, grad.data());
  std::vector<double> expected(init.begin(), init.end());
  for (size_t i = 0; i < expected.size(); ++i) expected[i] += coef[i % 3];
  EXPECT_LE(rel_err(grad, expected), tol<T>());
}

// d/d logits of alpha_z / G * sum_t lse_t^2, where G counts every rank's tokens (here 7 while this
// rank holds 3); the gradient is added to what grad_logits already holds.
TYPED_TEST(AuxLoss, ZLossBackwardMatchesFiniteDifferences) {
  using T = TypeParam;
  const int experts = 5;
  const int64_t tokens = 3;
  const double alpha = 0.3, global_tokens = 7;
  const auto logits = cast<T>(testing::uniform(tokens * experts, 104, -3, 3));
  const auto init = cast<T>(testing::uniform(tokens * experts, 105));
  std::vector<T> grad = init;
  z_loss_backward<T>(logits.data(), tokens, experts, alpha, global_tokens, grad.data());
  auto expected = testing::numeric_grad(
      [&](const std::vector<double>& l) {
        double sum = 0;
        for (int64_t t = 0; t < tokens; ++t) {
          double z = 0;
          for (int e = 0; e < experts; ++e) z += std::exp(l[t * experts + e]);
          sum += std::log(z) * std::log(z);
        }
        return alpha / global_tokens * sum;
      },
      testing::to_double(logits));
  for (size_t i = 0; i < expected.size(); ++i) expected[i] += init[i];
  EXPECT_LE(rel_err(grad, expected), testing::fd_tol<T>());
}

// Logits whose exp overflows even fp64: logsumexp must shift by the maximum.
TYPED_TEST(AuxLoss, LargeLogitsStayFinite) {
  using T = TypeParam;
  const std::vector<T> logits{1000, 1000, -1000};
  const std::vector<T> scores{0.5, 0.5, 0};
  const std::vector<int32_t> idx{0};
  RouterStats stats(3);
  accumulate_router_stats<T>(logits.data(), scores.data(), idx.data(), 1, 3, 1, stats);
  const double lse = 1000 + std::log(2.0);
  EXPECT_NEAR(stats.logsumexp_sq_sum(), lse * lse, lse * lse * 1e-12);
  std::vector<T> grad(3, T(0));
  z_loss_backward<T>(logits.data(), 1, 3, 1.0, 1.0, grad.data());
  // 2 lse softmax = 2 lse [1/2, 1/2, 0]
  EXPECT_LE(rel_err(grad, std::vector<double>{lse, lse, 0}), tol<T>());
}

TEST(AuxLossErrors, NameTheBadArgument) {
  RouterStats stats(3);
  stats.tokens() = 1;
  const std::vector<int> ok{0, 1, 1}, short_map{0, 1}, bad_device{0, 2, 1};
  testing::expect_invalid([&] { aux_losses(stats, 1, short_map, 2); },
                          {"aux_losses", "device_of_expert has 2"});
  testing::expect_invalid([&] { aux_losses(stats, 1, bad_device, 2); },
                          {"device_of_expert[1] = 2", "num_devices = 2"});
  testing::expect_invalid([&] { balance_score_grad(stats, 0, ok, 2, 1, 1); },
                          {"balance_score_grad", "top_k = 0"});

  const std::vector<double> logits(6, 0.0), scores(6, 0.5);
  const std::vector<int32_t> idx{0, 3};
  RouterStats fresh(3);
  testing::expect_invalid(
      [&] {
        accumulate_router_stats<double>(logits.data(), scores.data(), idx.data(), 2, 3, 1, fresh);
      },
      {"accumulate_router_stats", "idx[1,0] = 3"});
  EXPECT_EQ(fresh.tokens(), 0);  // left as it was
  EXPECT_EQ(fresh.score_sums()[0], 0);
  testing::expect_invalid(
      [&] {
        accumulate_router_stats<double>(logits.data(), scores.data(), idx.data(), 2, 2, 1, fresh);
      },
      {"experts = 2", "stats.experts() = 3"});
  std::vector<double> grad(6);
  testing::expect_invalid(
      [&] { z_loss_backward<double>(logits.data(), 2, 3, 1.0, 1.0, grad.data()); },
      {"global_tokens = 1"});
  testing::expect_invalid(
      [&] { z_loss_backward<double>(logits.data(), 2, 0, 1.0, 2.0, grad.data()); },
      {"z_loss_backward", "experts = 0"});
}

}  // namespace
}  // namespace switchyard::kernels
