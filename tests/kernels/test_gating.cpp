#include "kernels/gating.h"

#include <algorithm>
#include <limits>

#include "tests/kernels/testing.h"

namespace switchyard::kernels {
namespace {

using testing::cast;
using testing::rel_err;
using testing::to_double;
using testing::tol;

// ---- fp64 references, written from DESIGN.md "Routing semantics" ----

std::vector<double> naive_scores(const std::vector<double>& logits, int experts, ScoreFunc func) {
  std::vector<double> s(logits.size());
  for (size_t row = 0; row < logits.size() / experts; ++row) {
    const double* l = &logits[row * experts];
    double m = l[0];
    for (int e = 1; e < experts; ++e) m = std::max(m, l[e]);
    double sum = 0;
    for (int e = 0; e < experts; ++e) sum += std::exp(l[e] - m);
    for (int e = 0; e < experts; ++e) {
      s[row * experts + e] =
          func == ScoreFunc::softmax ? std::exp(l[e] - m) / sum : 1 / (1 + std::exp(-l[e]));
    }
  }
  return s;
}

// Masks the experts of dropped groups with -inf, then takes top_k by repeated first-argmax
// (strict >, so ties go to the lower index). Groups are kept by counting the groups that beat them.
std::vector<int32_t> naive_select(const std::vector<double>& scores,
                                  const std::vector<double>* bias, int experts,
                                  const RouterOptions& o) {
  const int tokens = static_cast<int>(scores.size() / experts);
  const int gsize = experts / o.n_group;
  std::vector<int32_t> idx;
  for (int t = 0; t < tokens; ++t) {
    std::vector<double> sel(experts);
    for (int e = 0; e < experts; ++e) sel[e] = scores[t * experts + e] + (bias ? (*bias)[e] : 0);
    std::vector<double> gscore(o.n_group);
    for (int g = 0; g < o.n_group; ++g) {
      std::vector<double> v(sel.begin() + g * gsize, sel.begin() + (g + 1) * gsize);
      std::sort(v.begin(), v.end(), std::greater<>());
      gscore[g] = v[0] + (o.group_score == GroupScore::top2_sum && gsize > 1 ? v[1] : 0.0);
    }
    std::vector<double> masked = sel;
    for (int g = 0; g < o.n_group; ++g) {
      int better = 0;
      for (int h = 0; h < o.n_group; ++h) {
        better += gscore[h] > gscore[g] || (gscore[h] == gscore[g] && h < g);
      }
      if (better >= o.topk_group) {
        for (int j = 0; j < gsize; ++j) masked[g * gsize + j] = -INFINITY;
      }
    }
    std::vector<bool> taken(experts, false);
    for (int k = 0; k < o.top_k; ++k) {
      int best = -1;
      for (int e = 0; e < experts; ++e) {
        if (!taken[e] && (best < 0 || masked[e] > masked[best])) best = e;
      }
      taken[best] = true;
      idx.push_back(best);
    }
  }
  return idx;
}

std::vector<double> naive_weights(const std::vector<double>& scores,
                                  const std::vector<int32_t>& idx, int experts,
                                  const RouterOptions& o) {
  std::vector<double> w(idx.size());
  for (size_t t = 0; t < idx.size() / o.top_k; ++t) {
    double sum = 0;
    for (int k = 0; k < o.top_k; ++k) sum += scores[t * experts + idx[t * o.top_k + k]];
    for (int k = 0; k < o.top_k; ++k) {
      const double s = scores[t * experts + idx[t * o.top_k + k]];
      w[t * o.top_k + k] = (o.norm_topk_prob ? s / sum : s) * o.routed_scaling_factor;
    }
  }
  return w;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += a[i] * b[i];
  return sum;
}

template <typename T>
std::vector<int32_t> select(const std::vector<double>& scores, const std::vector<double>* bias,
                            int experts, const RouterOptions& o) {
  const auto s = cast<T>(scores);
  const auto b = bias ? cast<T>(*bias) : std::vector<T>();
  std::vector<int32_t> idx(scores.size() / experts * o.top_k, -1);
  select_experts<T>(s.data(), bias ? b.data() : nullptr, static_cast<int64_t>(s.size() / experts),
                    experts, o, idx.data());
  return idx;
}

RouterOptions options(int top_k, int n_group, int topk_group,
                      GroupScore group_score = GroupScore::top2_sum) {
  RouterOptions o;
  o.top_k = top_k;
  o.n_group = n_group;
  o.topk_group = topk_group;
  o.group_score = group_score;
  return o;
}

template <typename T>
class Gating : public ::testing::Test {};
TYPED_TEST_SUITE(Gating, testing::FloatTypes);

TYPED_TEST(Gating, ScoresMatchNaive) {
  using T = TypeParam;
  const int experts = 9;
  auto logits_d = testing::uniform(6 * experts, 11, -8, 8);
  // A row far from 0 checks that softmax subtracts the maximum and sigmoid never overflows.
  for (int e = 0; e < experts; ++e) logits_d[e] = (e % 2 ? 1 : -1) * (600.0 + e);
  const auto logits = cast<T>(logits_d);
  for (const ScoreFunc func : {ScoreFunc::softmax, ScoreFunc::sigmoid}) {
    std::vector<T> s(logits.size());
    compute_scores<T>(logits.data(), 6, experts, func, s.data());
    const auto expected = naive_scores(to_double(logits), experts, func);
    EXPECT_LE(rel_err(s, expected), tol<T>());
    EXPECT_TRUE(std::all_of(s.begin(), s.end(), [](T v) { return std::isfinite(v); }));
  }
}

TYPED_TEST(Gating, SelectionMatchesNaive) {
  using T = TypeParam;
  const int experts = 32, tokens = 64;
  // Grid values: exact in both precisions and full of ties, for groups and experts alike.
  const auto scores = testing::grid(tokens * experts, 21);
  auto bias = testing::grid(experts, 22);
  for (double& b : bias) b -= 0.5;  // negative and positive biases
  const RouterOptions cases[] = {
      options(6, 1, 1),       options(6, 8, 3),       options(6, 8, 3, GroupScore::max),
      options(4, 4, 1),       options(5, experts, 7),  // groups of one expert
      options(experts, 1, 1),                          // top_k == E: a full ranking
  };
  for (const RouterOptions& o : cases) {
    const std::vector<double>* no_bias = nullptr;
    const std::vector<double>* with_bias = &bias;
    for (const std::vector<double>* b : {no_bias, with_bias}) {
      SCOPED_TRACE(::testing::Message()
                   << "top_k=" << o.top_k << " n_group=" << o.n_group
                   << " topk_group=" << o.topk_group
                   << " max=" << (o.group_score == GroupScore::max) << " bias=" << (b != nullptr));
      EXPECT_EQ(select<T>(scores, b, experts, o), naive_select(scores, b, experts, o));
    }
  }
}

TYPED_TEST(Gating, DroppedGroupIsNeverChosenWithNegativeBiasedScores) {
  using T = TypeParam;
  // s_sel = [-0.25, -0.375, 0.625, -0.125]: group 1 (experts 2, 3) wins 0.5 to -0.625. Filling the
  // dropped group with 0, as Hugging Face does, would rank expert 0 (0) above expert 3 (-0.125).
  const std::vector<double> scores{0.25, 0.125, 0.625, 0.375};
  const std::vector<double> bias{-0.5, -0.5, 0.0, -0.5};
  EXPECT_EQ(select<T>(scores, &bias, 4, options(2, 2, 1)), (std::vector<int32_t>{2, 3}));
}

TYPED_TEST(Gating, TiesGoToTheLowerIndex) {
  using T = TypeParam;
  EXPECT_EQ(select<T>({0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5}, nullptr, 8, options(3, 4, 2)),
            (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(select<T>({0.25, 0.5, 0.5, 0.125}, nullptr, 4, options(2, 1, 1)),
            (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(select<T>({0.5, 0.125, 0.5, 0.5}, nullptr, 4, options(3, 1, 1)),
            (std::vector<int32_t>{0, 2, 3}));
  // Group scores tie (top-2 sums 0.5 and 0.5): the lower group wins.
  EXPECT_EQ(select<T>({0.375, 0.125, 0.25, 0.25}, nullptr, 4, options(2, 2, 1)),
            (std::vector<int32_t>{0, 1}));
  // Group maxima tie at 0.5 (V2): group 0; the top-2 sums (0.625 < 0.75) pick group 1 (V3).
  const std::vector<double> s{0.5, 0.125, 0.5, 0.25};
  EXPECT_EQ(select<T>(s, nullptr, 4, options(2, 2, 1, GroupScore::max)),
            (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(select<T>(s, nullptr, 4, options(2, 2, 1)), (std::vector<int32_t>{2, 3}));
}

TYPED_TEST(Gating, OutputIsInDescendingSelectionScore) {
  using T = TypeParam;
  const std::vector<double> s{0.1, 0.9, 0.3, 0.7, 0.5, 0.2};
  EXPECT_EQ(select<T>(s, nullptr, 6, options(6, 1, 1)), (std::vector<int32_t>{1, 3, 4, 2, 5, 0}));
  const std::vector<double> bias{0.9, 0, 0, 0, 0, 0};  // expert 0 first, by its bias only
  EXPECT_EQ(select<T>(s, &bias, 6, options(2, 1, 1)), (std::vector<int32_t>{0, 1}));
}

TYPED_TEST(Gating, WeightsMatchNaive) {
  using T = TypeParam;
  const int experts = 12, tokens = 10;
  const auto logits = cast<T>(testing::uniform(tokens * experts, 31, -3, 3));
  for (const ScoreFunc func : {ScoreFunc::softmax, ScoreFunc::sigmoid}) {
    std::vector<T> s(logits.size());
    compute_scores<T>(logits.data(), tokens, experts, func, s.data());
    for (const bool norm : {false, true}) {
      for (const double scale : {1.0, 2.5}) {
        RouterOptions o = options(4, 3, 2);
        o.norm_topk_prob = norm;
        o.routed_scaling_factor = scale;
        const auto idx = naive_select(to_double(s), nullptr, experts, o);
        std::vector<T> w(idx.size());
        routing_weights<T>(s.data(), idx.data(), tokens, experts, o, w.data());
        EXPECT_LE(rel_err(w, naive_weights(to_double(s), idx, experts, o)), tol<T>())
            << "norm=" << norm << " scale=" << scale;
      }
    }
  }
}

// The whole differentiable path logits -> scores -> weights, against central differences of the
// fp64 reference: routing_weights_backward alone (it accumulates), then through scores_backward.
TYPED_TEST(Gating, BackwardMatchesFiniteDifferences) {
  using T = TypeParam;
  const int experts = 8, tokens = 5;
  const auto logits = cast<T>(testing::uniform(tokens * experts, 41, -2, 2));
  for (const ScoreFunc func : {ScoreFunc::softmax, ScoreFunc::sigmoid}) {
    for (const bool norm : {false, true}) {
      SCOPED_TRACE(::testing::Message()
                   << "sigmoid=" << (func == ScoreFunc::sigmoid) << " norm=" << norm);
      RouterOptions o = options(3, 2, 1);
      o.norm_topk_prob = norm;
      o.routed_scaling_factor = 1.7;
      const auto s_d = naive_scores(to_double(logits), experts, func);
      const auto idx = naive_select(s_d, nullptr, experts, o);
      const auto grad_w = cast<T>(testing::uniform(idx.size(), 42));
      const auto gw_d = to_double(grad_w);

      std::vector<T> s(logits.size());
      compute_scores<T>(logits.data(), tokens, experts, func, s.data());
      const auto grad_s_init = cast<T>(testing::uniform(s.size(), 43));
      std::vector<T> grad_s = grad_s_init;
      routing_weights_backward<T>(s.data(), idx.data(), grad_w.data(), tokens, experts, o,
                                  grad_s.data());
      auto expected_s = testing::numeric_grad(
          [&](const std::vector<double>& sv) {
            return dot(gw_d, naive_weights(sv, idx, experts, o));
          },
          to_double(s));
      for (size_t i = 0; i < expected_s.size(); ++i) expected_s[i] += grad_s_init[i];
      EXPECT_LE(rel_err(grad_s, expected_s), testing::fd_tol<T>());

      std::vector<T> grad_s_only(s.size(), T(0));
      routing_weights_backward<T>(s.data(), idx.data(), grad_w.data(), tokens, experts, o,
                                  grad_s_only.data());
      std::vector<T> grad_logits(s.size(), std::numeric_limits<T>::quiet_NaN());  // overwritten
      scores_backward<T>(s.data(), grad_s_only.data(), tokens, experts, func, grad_logits.data());
      const auto expected_l = testing::numeric_grad(
          [&](const std::vector<double>& l) {
            return dot(gw_d, naive_weights(naive_scores(l, experts, func), idx, experts, o));
          },
          to_double(logits));
      EXPECT_LE(rel_err(grad_logits, expected_l), testing::fd_tol<T>());
      if (func == ScoreFunc::sigmoid) {  // only the selected logits get a gradient
        for (int t = 0; t < tokens; ++t) {
          for (int e = 0; e < experts; ++e) {
            const bool chosen = std::count(&idx[t * o.top_k], &idx[(t + 1) * o.top_k], e) > 0;
            if (!chosen) {
              EXPECT_EQ(grad_logits[t * experts + e], T(0));
            }
          }
        }
      }
    }
  }
}

// scores_backward on a gradient that touches every expert (the aux losses' case).
TYPED_TEST(Gating, ScoresBackwardMatchesFiniteDifferences) {
  using T = TypeParam;
  const int experts = 7, tokens = 4;
  const auto logits = cast<T>(testing::uniform(tokens * experts, 51, -3, 3));
  const auto grad_s = cast<T>(testing::uniform(tokens * experts, 52));
  for (const ScoreFunc func : {ScoreFunc::softmax, ScoreFunc::sigmoid}) {
    std::vector<T> s(logits.size());
    compute_scores<T>(logits.data(), tokens, experts, func, s.data());
    std::vector<T> grad_l(s.size());
    scores_backward<T>(s.data(), grad_s.data(), tokens, experts, func, grad_l.data());
    const auto expected = testing::numeric_grad(
        [&](const std::vector<double>& l) {
          return dot(to_double(grad_s), naive_scores(l, experts, func));
        },
        to_double(logits));
    EXPECT_LE(rel_err(grad_l, expected), testing::fd_tol<T>());
  }
}

TEST(GatingErrors, NameTheBadOption) {
  const std::vector<double> s(16, 0.5);
  std::vector<int32_t> idx(16);
  auto sel = [&](RouterOptions o) {
    return [&, o] { select_experts<double>(s.data(), nullptr, 2, 8, o, idx.data()); };
  };
  testing::expect_invalid(sel(options(9, 1, 1)), {"select_experts", "top_k = 9"});
  testing::expect_invalid(sel(options(0, 1, 1)), {"top_k = 0"});
  testing::expect_invalid(sel(options(2, 3, 1)), {"n_group = 3"});
  testing::expect_invalid(sel(options(2, 4, 5)), {"topk_group = 5"});
  testing::expect_invalid(sel(options(5, 4, 2)), {"top_k = 5", "topk_group = 2"});
  const std::vector<int32_t> bad{0, 8};
  std::vector<double> w(2);
  testing::expect_invalid(
      [&] { routing_weights<double>(s.data(), bad.data(), 1, 8, options(2, 1, 1), w.data()); },
      {"routing_weights", "idx[0,1] = 8"});
  testing::expect_invalid(
      [&] { compute_scores<double>(s.data(), 2, 0, ScoreFunc::softmax, w.data()); },
      {"experts = 0"});
}

}  // namespace
}  // namespace switchyard::kernels
