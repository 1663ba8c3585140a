// The cuda backend's router and aux-loss kernels against the CPU backend (fp32: the same expert
// choices, exactly) and the fp64 reference: scores, selection with bias and group limits (ties to
// the lower index, the -inf mask of dropped groups), routing weights and their backward, scores
// backward, balance and z-loss gradients, router statistics. Empty and uneven shapes included.
#include <cmath>
#include <numeric>

#include "tests/kernels_cuda/cuda_testing.h"

namespace switchyard::kernels {
namespace {

using testing::cast;
using testing::DeviceArray;
using testing::grid;
using testing::rel_err;
using testing::tol;
using testing::uniform;
using CudaRouter = testing::CudaTest;

constexpr double kTol = tol<float>();

struct Shape {
  int64_t tokens;
  int experts;
};
// Empty, one token, uneven; experts below, at and above a warp, and a DeepSeek-V3-like 256.
const Shape kShapes[] = {{0, 8}, {1, 1}, {5, 7}, {37, 32}, {19, 100}, {64, 256}};

TEST_F(CudaRouter, ScoresMatchTheFp64Reference) {
  CudaBackend gpu(ComputePrecision::native);
  auto ref = make_backend<double>({"openblas"});
  for (const auto func : {ScoreFunc::softmax, ScoreFunc::sigmoid}) {
    for (const auto& s : kShapes) {
      SCOPED_TRACE(::testing::Message() << "tokens " << s.tokens << " experts " << s.experts
                                        << " sigmoid " << (func == ScoreFunc::sigmoid));
      const auto logits = uniform(s.tokens * s.experts, 3 + s.experts, -4, 4);
      std::vector<double> want(logits.size());
      ref->compute_scores(logits.data(), s.tokens, s.experts, func, want.data());
      DeviceArray<float> dl(cast<float>(logits)), ds(logits.size());
      gpu.compute_scores(dl.get(), s.tokens, s.experts, func, ds.get());
      gpu.synchronize();
      EXPECT_LE(rel_err(ds.host(), want), kTol);
    }
  }
}

struct SelectCase {
  int experts, top_k, n_group, topk_group;
  GroupScore group_score;
  bool bias;
};

// Scores and bias on a grid of multiples of 1/256: exact in fp32, so the CPU's fp32 and fp64
// kernels and the GPU compare the same numbers, and ties are frequent.
TEST_F(CudaRouter, SelectionIsTheCpusExactlyWithTiesToTheLowerIndex) {
  CudaBackend gpu(ComputePrecision::native);
  auto cpu = make_backend<float>({"openblas"});
  auto ref = make_backend<double>({"openblas"});
  const SelectCase cases[] = {
      {8, 2, 1, 1, GroupScore::top2_sum, false},   {8, 8, 1, 1, GroupScore::top2_sum, true},
      {64, 6, 8, 3, GroupScore::top2_sum, true},   {64, 6, 8, 3, GroupScore::max, false},
      {256, 8, 8, 4, GroupScore::top2_sum, true},  {160, 6, 8, 3, GroupScore::max, true},
      {12, 3, 12, 5, GroupScore::top2_sum, true},  {100, 7, 1, 1, GroupScore::top2_sum, true},
      {96, 4, 32, 2, GroupScore::top2_sum, false},
  };
  for (const auto& c : cases) {
    for (const int64_t tokens : {int64_t{0}, int64_t{1}, int64_t{53}}) {
      SCOPED_TRACE(::testing::Message()
                   << "experts " << c.experts << " top_k " << c.top_k << " groups " << c.n_group
                   << "/" << c.topk_group << " max " << (c.group_score == GroupScore::max)
                   << " bias " << c.bias << " tokens " << tokens);
      RouterOptions o;
      o.top_k = c.top_k;
      o.n_group = c.n_group;
      o.topk_group = c.topk_group;
      o.group_score = c.group_score;
      // Few distinct values: many ties within a token and between groups.
      const auto scores = grid(tokens * c.experts, 7 + c.experts + tokens, 16);
      auto bias = grid(c.experts, 99 + c.experts, 16);
      for (double& b : bias) b -= 8 / 256.0;  // some biased scores negative, all still exact
      std::vector<int32_t> want(tokens * c.top_k), want64(tokens * c.top_k);
      const auto sf = cast<float>(scores), bf = cast<float>(bias);
      cpu->select_experts(sf.data(), c.bias ? bf.data() : nullptr, tokens, c.experts, o,
                          want.data());
      ref->select_experts(scores.data(), c.bias ? bias.data() : nullptr, tokens, c.experts, o,
                          want64.data());
      EXPECT_EQ(want, want64);
      DeviceArray<float> ds(sf), db(bf);
      DeviceArray<int32_t> di(tokens * c.top_k);
      gpu.select_experts(ds.get(), c.bias ? db.get() : nullptr, tokens, c.experts, o, di.get());
      gpu.synchronize();
      EXPECT_EQ(di.host(), want);
    }
  }
}

TEST_F(CudaRouter, TiesAndTheMaskOfDroppedGroups) {
  CudaBackend gpu(ComputePrecision::native);
  RouterOptions o;
  o.top_k = 3;
  // All equal: the lowest indices, in order.
  {
    DeviceArray<float> s(std::vector<float>(10, 0.25f));
    DeviceArray<int32_t> idx(3);
    gpu.select_experts(s.get(), nullptr, 1, 10, o, idx.get());
    gpu.synchronize();
    EXPECT_EQ(idx.host(), (std::vector<int32_t>{0, 1, 2}));
  }
  // Two groups of 3, one kept: group 1 (biased scores 0, 0, -1.4; group score 0) beats group 0
  // (-0.5, -0.6, -0.7; group score -1.1). With the -inf mask the three of group 1 are chosen;
  // filling group 0 with 0, as Hugging Face does, would choose experts 0 and 1 over expert 5.
  {
    o.n_group = 2;
    o.topk_group = 1;
    const std::vector<float> scores{0.5f, 0.4f, 0.3f, 0.1f, 0.1f, 0.1f};
    const std::vector<float> bias{-1.f, -1.f, -1.f, -0.1f, -0.1f, -1.5f};
    DeviceArray<float> s(scores), b(bias);
    DeviceArray<int32_t> idx(3);
    gpu.select_experts(s.get(), b.get(), 1, 6, o, idx.get());
    gpu.synchronize();
    EXPECT_EQ(idx.host(), (std::vector<int32_t>{3, 4, 5}));
  }
  // Equal group scores: the lower group is kept.
  {
    const std::vector<float> scores{0.2f, 0.1f, 0.1f, 0.2f};
    DeviceArray<float> s(scores);
    DeviceArray<int32_t> idx(2);
    o.top_k = 2;
    gpu.select_experts(s.get(), nullptr, 1, 4, o, idx.get());
    gpu.synchronize();
    EXPECT_EQ(idx.host(), (std::vector<int32_t>{0, 1}));
  }
}

TEST_F(CudaRouter, WeightsAndTheirBackwardMatchTheFp64Reference) {
  CudaBackend gpu(ComputePrecision::native);
  auto ref = make_backend<double>({"openblas"});
  for (const bool norm : {false, true}) {
    for (const int64_t tokens : {int64_t{0}, int64_t{1}, int64_t{29}}) {
      SCOPED_TRACE(::testing::Message() << "norm " << norm << " tokens " << tokens);
      const int experts = 24;
      RouterOptions o;
      o.top_k = 5;
      o.norm_topk_prob = norm;
      o.routed_scaling_factor = 2.5;
      std::vector<double> scores(tokens * experts);
      ref->compute_scores(uniform(scores.size(), 5, -2, 2).data(), tokens, experts,
                          ScoreFunc::sigmoid, scores.data());
      std::vector<int32_t> idx(tokens * o.top_k);
      ref->select_experts(scores.data(), nullptr, tokens, experts, o, idx.data());
      std::vector<double> w(tokens * o.top_k);
      ref->routing_weights(scores.data(), idx.data(), tokens, experts, o, w.data());
      const auto gw = uniform(w.size(), 6);
      auto gs = uniform(scores.size(), 7);  // accumulated into
      const auto gs0 = gs;
      ref->routing_weights_backward(scores.data(), idx.data(), gw.data(), tokens, experts, o,
                                    gs.data());

      DeviceArray<float> ds(cast<float>(scores)), dw(w.size()), dgw(cast<float>(gw)),
          dgs(cast<float>(gs0));
      DeviceArray<int32_t> di(idx);
      gpu.routing_weights(ds.get(), di.get(), tokens, experts, o, dw.get());
      gpu.routing_weights_backward(ds.get(), di.get(), dgw.get(), tokens, experts, o, dgs.get());
      gpu.synchronize();
      EXPECT_LE(rel_err(dw.host(), w), kTol);
      EXPECT_LE(rel_err(dgs.host(), gs), kTol);
    }
  }
}

TEST_F(CudaRouter, ScoresBackwardMatchesTheFp64Reference) {
  CudaBackend gpu(ComputePrecision::native);
  auto ref = make_backend<double>({"openblas"});
  for (const auto func : {ScoreFunc::softmax, ScoreFunc::sigmoid}) {
    for (const auto& s : kShapes) {
      SCOPED_TRACE(::testing::Message() << "tokens " << s.tokens << " experts " << s.experts);
      std::vector<double> scores(s.tokens * s.experts), gl(scores.size());
      ref->compute_scores(uniform(scores.size(), 11, -3, 3).data(), s.tokens, s.experts, func,
                          scores.data());
      const auto gs = uniform(scores.size(), 12);
      ref->scores_backward(scores.data(), gs.data(), s.tokens, s.experts, func, gl.data());
      DeviceArray<float> ds(cast<float>(scores)), dgs(cast<float>(gs)), dgl(scores.size());
      gpu.scores_backward(ds.get(), dgs.get(), s.tokens, s.experts, func, dgl.get());
      gpu.synchronize();
      // Softmax's gradient is a difference of nearly equal terms: held to the fp32 CPU kernel's
      // own error against fp64, measured in the same run, with a margin.
      auto cpu = make_backend<float>({"openblas"});
      std::vector<float> cpu_gl(scores.size());
      const auto sf = cast<float>(scores), gsf = cast<float>(gs);
      cpu->scores_backward(sf.data(), gsf.data(), s.tokens, s.experts, func, cpu_gl.data());
      EXPECT_LE(rel_err(dgl.host(), gl), std::max(kTol, 4 * rel_err(cpu_gl, gl)));
    }
  }
}

TEST_F(CudaRouter, BalanceAndZLossGradientsMatchTheFp64Reference) {
  CudaBackend gpu(ComputePrecision::native);
  auto ref = make_backend<double>({"openblas"});
  for (const auto& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "tokens " << s.tokens << " experts " << s.experts);
    const auto coef = uniform(s.experts, 13);
    const auto logits = uniform(s.tokens * s.experts, 14, -6, 6);
    auto g = uniform(logits.size(), 15);
    const auto g0 = g;
    ref->add_balance_grad(coef.data(), s.tokens, s.experts, g.data());
    ref->z_loss_backward(logits.data(), s.tokens, s.experts, 0.3, s.tokens + 11.0, g.data());
    DeviceArray<double> dcoef(coef);
    DeviceArray<float> dl(cast<float>(logits)), dg(cast<float>(g0));
    gpu.add_balance_grad(dcoef.get(), s.tokens, s.experts, dg.get());
    gpu.z_loss_backward(dl.get(), s.tokens, s.experts, 0.3, s.tokens + 11.0, dg.get());
    gpu.synchronize();
    EXPECT_LE(rel_err(dg.host(), g), kTol);
  }
}

TEST_F(CudaRouter, StatsMatchTheCpuAndABadIdLeavesThemAsTheyWere) {
  CudaBackend gpu(ComputePrecision::native);
  auto cpu = make_backend<float>({"openblas"});
  const int experts = 48, top_k = 6;
  for (const int64_t tokens : {int64_t{0}, int64_t{3}, int64_t{600}}) {  // 600: three chunks
    SCOPED_TRACE(::testing::Message() << "tokens " << tokens);
    const auto logits = cast<float>(uniform(tokens * experts, 21, -5, 5));
    std::vector<float> scores(logits.size());
    cpu->compute_scores(logits.data(), tokens, experts, ScoreFunc::softmax, scores.data());
    RouterOptions o;
    o.top_k = top_k;
    std::vector<int32_t> idx(tokens * top_k);
    cpu->select_experts(scores.data(), nullptr, tokens, experts, o, idx.data());
    RouterStats want(experts), got(experts);
    want.tokens() = got.tokens() = 4;  // accumulated into
    cpu->accumulate_router_stats(logits.data(), scores.data(), idx.data(), tokens, experts, top_k,
                                 want);
    DeviceArray<float> dl(logits), ds(scores);
    DeviceArray<int32_t> di(idx);
    gpu.accumulate_router_stats(dl.get(), ds.get(), di.get(), tokens, experts, top_k, got);
    std::vector<double> c_want(want.counts(), want.counts() + experts),
        c_got(got.counts(), got.counts() + experts);
    EXPECT_EQ(c_got, c_want);
    std::vector<double> s_want(want.score_sums(), want.score_sums() + experts),
        s_got(got.score_sums(), got.score_sums() + experts);
    EXPECT_LE(rel_err(s_got, s_want), 1e-12);
    EXPECT_NEAR(got.logsumexp_sq_sum(), want.logsumexp_sq_sum(),
                1e-12 * std::max(1.0, want.logsumexp_sq_sum()));
    EXPECT_EQ(got.tokens(), want.tokens());
  }
  // A bad expert id: refused, naming it, before anything is added.
  DeviceArray<float> dl(std::vector<float>(2 * experts)), ds(std::vector<float>(2 * experts));
  std::vector<int32_t> bad(2 * top_k, 1);
  bad[top_k + 2] = experts;
  DeviceArray<int32_t> di(bad);
  RouterStats stats(experts);
  testing::expect_invalid(
      [&] { gpu.accumulate_router_stats(dl.get(), ds.get(), di.get(), 2, experts, top_k, stats); },
      {"accumulate_router_stats", "idx[1,2] = 48"});
  EXPECT_EQ(stats.tokens(), 0.0);
  EXPECT_EQ(stats.counts()[1], 0.0);
  RouterOptions o;
  o.top_k = top_k;
  DeviceArray<float> dw(2 * top_k);
  testing::expect_invalid(
      [&] { gpu.routing_weights(ds.get(), di.get(), 2, experts, o, dw.get()); },
      {"routing_weights", "idx[1,2] = 48"});
}

TEST_F(CudaRouter, OptionErrorsNameTheBadOption) {
  CudaBackend gpu(ComputePrecision::native);
  RouterOptions o;
  o.top_k = 2;
  o.n_group = 3;
  testing::expect_invalid([&] { gpu.select_experts(nullptr, nullptr, 0, 8, o, nullptr); },
                          {"select_experts", "n_group = 3"});
  o.n_group = 1;
  o.top_k = 9;
  testing::expect_invalid([&] { gpu.routing_weights(nullptr, nullptr, 0, 8, o, nullptr); },
                          {"routing_weights", "top_k = 9"});
}

// The same inputs give the same bits, call after call (no atomics whose order changes sums).
TEST_F(CudaRouter, RepeatedCallsAreBitwiseEqual) {
  CudaBackend gpu(ComputePrecision::native);
  const int64_t tokens = 300;
  const int experts = 64;
  DeviceArray<float> dl(cast<float>(uniform(tokens * experts, 41, -3, 3)));
  DeviceArray<float> s1(tokens * experts), s2(tokens * experts);
  gpu.compute_scores(dl.get(), tokens, experts, ScoreFunc::softmax, s1.get());
  gpu.compute_scores(dl.get(), tokens, experts, ScoreFunc::softmax, s2.get());
  RouterStats a(experts), b(experts);
  RouterOptions o;
  o.top_k = 6;
  DeviceArray<int32_t> idx(tokens * 6);
  gpu.select_experts(s1.get(), nullptr, tokens, experts, o, idx.get());
  gpu.accumulate_router_stats(dl.get(), s1.get(), idx.get(), tokens, experts, 6, a);
  gpu.accumulate_router_stats(dl.get(), s1.get(), idx.get(), tokens, experts, 6, b);
  gpu.synchronize();
  EXPECT_EQ(s1.host(), s2.host());
  EXPECT_EQ(a.logsumexp_sq_sum(), b.logsumexp_sq_sum());
  for (int e = 0; e < experts; ++e) EXPECT_EQ(a.score_sums()[e], b.score_sums()[e]);
}

}  // namespace
}  // namespace switchyard::kernels
