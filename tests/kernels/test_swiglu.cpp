#include "kernels/swiglu.h"

#include "kernels/backend.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "tests/kernels/testing.h"

namespace switchyard::kernels {
namespace {

using testing::cast;
using testing::rel_err;
using testing::to_double;
using testing::tol;

// One expert plus its input, all fp64, in Hugging Face's layout.
struct Naive {
  int64_t n, hidden, inter;
  std::vector<double> x, gate, up, down;  // [n,H], [I,H], [I,H], [H,I]
};

double sigmoid(double v) { return 1 / (1 + std::exp(-v)); }

struct NaiveForward {
  std::vector<double> g, u, act, y;
};

NaiveForward naive_forward(const Naive& p) {
  const int64_t n = p.n, h = p.hidden, in = p.inter;
  NaiveForward f{std::vector<double>(n * in), std::vector<double>(n * in),
                 std::vector<double>(n * in), std::vector<double>(n * h)};
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < in; ++i) {
      for (int64_t k = 0; k < h; ++k) {
        f.g[t * in + i] += p.x[t * h + k] * p.gate[i * h + k];
        f.u[t * in + i] += p.x[t * h + k] * p.up[i * h + k];
      }
      const double g = f.g[t * in + i];
      f.act[t * in + i] = g * sigmoid(g) * f.u[t * in + i];
    }
    for (int64_t k = 0; k < h; ++k) {
      for (int64_t i = 0; i < in; ++i) f.y[t * h + k] += f.act[t * in + i] * p.down[k * in + i];
    }
  }
  return f;
}

struct NaiveGrads {
  std::vector<double> x, gate, up, down;
};

NaiveGrads naive_backward(const Naive& p, const std::vector<double>& grad_y) {
  const int64_t n = p.n, h = p.hidden, in = p.inter;
  const NaiveForward f = naive_forward(p);
  NaiveGrads r{std::vector<double>(n * h), std::vector<double>(in * h), std::vector<double>(in * h),
               std::vector<double>(h * in)};
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < in; ++i) {
      double grad_act = 0;
      for (int64_t k = 0; k < h; ++k) {
        grad_act += grad_y[t * h + k] * p.down[k * in + i];
        r.down[k * in + i] += grad_y[t * h + k] * f.act[t * in + i];
      }
      const double g = f.g[t * in + i], sg = sigmoid(g);
      const double grad_g = grad_act * f.u[t * in + i] * (sg + g * sg * (1 - sg));
      const double grad_u = grad_act * g * sg;
      for (int64_t k = 0; k < h; ++k) {
        r.x[t * h + k] += grad_g * p.gate[i * h + k] + grad_u * p.up[i * h + k];
        r.gate[i * h + k] += grad_g * p.x[t * h + k];
        r.up[i * h + k] += grad_u * p.x[t * h + k];
      }
    }
  }
  return r;
}

Naive random_expert(int64_t n, int64_t hidden, int64_t inter, uint64_t seed) {
  const double s = 1 / std::sqrt(static_cast<double>(hidden));
  return {n,
          hidden,
          inter,
          testing::uniform(n * hidden, seed, -2, 2),
          testing::uniform(inter * hidden, seed + 1, -s, s),
          testing::uniform(inter * hidden, seed + 2, -s, s),
          testing::uniform(hidden * inter, seed + 3, -s, s)};
}

// The kernel's view of an expert in precision T; the reference then uses the rounded values.
template <typename T>
struct Expert {
  std::vector<T> x, gate, up, down;
  Naive rounded;
  explicit Expert(const Naive& p)
      : x(cast<T>(p.x)),
        gate(cast<T>(p.gate)),
        up(cast<T>(p.up)),
        down(cast<T>(p.down)),
        rounded{p.n,           p.hidden,       p.inter, to_double(x), to_double(gate),
                to_double(up), to_double(down)} {}
  SwigluWeights<T> weights() const {
    return {gate.data(), up.data(), down.data(), rounded.hidden, rounded.inter};
  }
};

template <typename T>
class Swiglu : public ::testing::Test {};
TYPED_TEST_SUITE(Swiglu, testing::FloatTypes);

TYPED_TEST(Swiglu, ForwardMatchesNaive) {
  using T = TypeParam;
  for (const auto& bc : testing::backend_cases<T>()) {
    SCOPED_TRACE(testing::case_name(bc));
    auto backend = make_backend<T>({bc.name, bc.compute});
    const Expert<T> e(random_expert(6, 16, 24, 81));
    std::vector<T> g(6 * 24), u(6 * 24), y(6 * 16);
    swiglu_forward<T>(*backend, e.weights(), e.x.data(), 6, g.data(), u.data(), y.data());
    const NaiveForward f = naive_forward(e.rounded);
    EXPECT_LE(rel_err(g, f.g), bc.tol);
    EXPECT_LE(rel_err(u, f.u), bc.tol);
    EXPECT_LE(rel_err(y, f.y), bc.tol);
  }
}

TYPED_TEST(Swiglu, NoTokens) {
  using T = TypeParam;
  for (const auto& bc : testing::backend_cases<T>()) {
    SCOPED_TRACE(testing::case_name(bc));
    auto backend = make_backend<T>({bc.name, bc.compute});
    const Expert<T> e(random_expert(0, 4, 3, 82));
    std::vector<T> grad(12, T(1));
    const SwigluGrads<T> grads{grad.data(), grad.data(), grad.data()};
    swiglu_forward<T>(*backend, e.weights(), nullptr, 0, nullptr, nullptr, nullptr);
    swiglu_backward<T>(*backend, e.weights(), nullptr, 0, nullptr, nullptr, nullptr, nullptr,
                       grads);
    EXPECT_EQ(grad, std::vector<T>(12, T(1)));
  }
}

// Backward against the analytic fp64 reference; weight gradients start non-zero to check that
// they are accumulated into, and grad_x starts as NaN to check that it is overwritten.
TYPED_TEST(Swiglu, BackwardMatchesNaive) {
  using T = TypeParam;
  for (const auto& bc : testing::backend_cases<T>()) {
    SCOPED_TRACE(testing::case_name(bc));
    auto backend = make_backend<T>({bc.name, bc.compute});
    const int64_t n = 7, h = 12, in = 20;
    const Expert<T> e(random_expert(n, h, in, 83));
    const auto grad_y = cast<T>(testing::uniform(n * h, 87));
    std::vector<T> g(n * in), u(n * in), y(n * h);
    swiglu_forward<T>(*backend, e.weights(), e.x.data(), n, g.data(), u.data(), y.data());
    std::vector<T> grad_x(n * h, std::numeric_limits<T>::quiet_NaN());
    const auto init = cast<T>(testing::uniform(in * h, 88));
    auto gate = init, up = init, down = init;
    swiglu_backward<T>(*backend, e.weights(), e.x.data(), n, g.data(), u.data(), grad_y.data(),
                       grad_x.data(), {gate.data(), up.data(), down.data()});
    NaiveGrads r = naive_backward(e.rounded, to_double(grad_y));
    for (size_t i = 0; i < init.size(); ++i) {
      r.gate[i] += init[i];
      r.up[i] += init[i];
      r.down[i] += init[i];
    }
    EXPECT_LE(rel_err(grad_x, r.x), bc.tol);
    EXPECT_LE(rel_err(gate, r.gate), bc.tol);
    EXPECT_LE(rel_err(up, r.up), bc.tol);
    EXPECT_LE(rel_err(down, r.down), bc.tol);
  }
}

// Gradients marked overwrite start as NaN (memory fresh from an allocator): the backward writes
// them (the analytic gradients, no NaN left), and with no tokens writes zeros.
TYPED_TEST(Swiglu, OverwrittenGradientsIgnoreWhatTheMemoryHeld) {
  using T = TypeParam;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  for (const auto& bc : testing::backend_cases<T>()) {
    SCOPED_TRACE(testing::case_name(bc));
    auto backend = make_backend<T>({bc.name, bc.compute});
    const int64_t n = 7, h = 12, in = 20;
    const Expert<T> e(random_expert(n, h, in, 84));
    const auto grad_y = cast<T>(testing::uniform(n * h, 89));
    std::vector<T> g(n * in), u(n * in), y(n * h), grad_x(n * h);
    swiglu_forward<T>(*backend, e.weights(), e.x.data(), n, g.data(), u.data(), y.data());
    std::vector<T> gate(in * h, nan), up(in * h, nan), down(in * h, nan);
    SwigluGrads<T> grads{gate.data(), up.data(), down.data()};
    grads.overwrite = true;
    swiglu_backward<T>(*backend, e.weights(), e.x.data(), n, g.data(), u.data(), grad_y.data(),
                       grad_x.data(), grads);
    const NaiveGrads r = naive_backward(e.rounded, to_double(grad_y));
    EXPECT_LE(rel_err(gate, r.gate), bc.tol);  // NaN would fail the comparison
    EXPECT_LE(rel_err(up, r.up), bc.tol);
    EXPECT_LE(rel_err(down, r.down), bc.tol);

    std::fill(gate.begin(), gate.end(), nan);
    std::fill(up.begin(), up.end(), nan);
    std::fill(down.begin(), down.end(), nan);
    swiglu_backward<T>(*backend, e.weights(), nullptr, 0, nullptr, nullptr, nullptr, nullptr,
                       grads);
    const std::vector<T> zeros(in * h, T(0));
    EXPECT_EQ(gate, zeros);
    EXPECT_EQ(up, zeros);
    EXPECT_EQ(down, zeros);
  }
}

// The data and weight halves applied to two row blocks in turn (as a pipelined layer does with its
// token chunks) give the analytic gradients too: grad_x per block, weight gradients accumulated.
TYPED_TEST(Swiglu, HalvesOverRowBlocksMatchNaive) {
  using T = TypeParam;
  for (const auto& bc : testing::backend_cases<T>()) {
    SCOPED_TRACE(testing::case_name(bc));
    auto backend = make_backend<T>({bc.name, bc.compute});
    const int64_t n = 7, h = 12, in = 20, split = 3;
    const Expert<T> e(random_expert(n, h, in, 93));
    const auto grad_y = cast<T>(testing::uniform(n * h, 94));
    std::vector<T> g(n * in), u(n * in), y(n * h);
    swiglu_forward<T>(*backend, e.weights(), e.x.data(), n, g.data(), u.data(), y.data());
    std::vector<T> grad_x(n * h, std::numeric_limits<T>::quiet_NaN());
    std::vector<T> grad_g(n * in), grad_u(n * in);
    std::vector<T> gate(in * h, T(0)), up(in * h, T(0)), down(in * h, T(0));
    for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, split}, {split, n}}) {
      const int64_t rows = end - begin;
      swiglu_backward_data<T>(*backend, e.weights(), rows, g.data() + begin * in,
                              u.data() + begin * in, grad_y.data() + begin * h,
                              grad_x.data() + begin * h, grad_g.data() + begin * in,
                              grad_u.data() + begin * in);
      swiglu_backward_weights<T>(*backend, e.weights(), e.x.data() + begin * h, rows,
                                 g.data() + begin * in, u.data() + begin * in,
                                 grad_y.data() + begin * h, grad_g.data() + begin * in,
                                 grad_u.data() + begin * in, {gate.data(), up.data(), down.data()});
    }
    const NaiveGrads r = naive_backward(e.rounded, to_double(grad_y));
    EXPECT_LE(rel_err(grad_x, r.x), bc.tol);
    EXPECT_LE(rel_err(gate, r.gate), bc.tol);
    EXPECT_LE(rel_err(up, r.up), bc.tol);
    EXPECT_LE(rel_err(down, r.down), bc.tol);
  }
}

// Backward against central differences of L = sum(grad_y * y), in fp64, for every input and
// weight entry.
TEST(SwigluFiniteDifferences, AllGradients) {
  auto backend = make_backend<double>({"openblas"});
  const int64_t n = 3, h = 5, in = 4;
  const Expert<double> e(random_expert(n, h, in, 91));
  const auto grad_y = testing::uniform(n * h, 92);
  std::vector<double> g(n * in), u(n * in), y(n * h), grad_x(n * h);
  std::vector<double> gate(in * h, 0.0), up(in * h, 0.0), down(h * in, 0.0);
  swiglu_forward<double>(*backend, e.weights(), e.x.data(), n, g.data(), u.data(), y.data());
  swiglu_backward<double>(*backend, e.weights(), e.x.data(), n, g.data(), u.data(), grad_y.data(),
                          grad_x.data(), {gate.data(), up.data(), down.data()});

  auto numeric = [&](std::vector<double> Naive::*field) {
    return testing::numeric_grad(
        [&](const std::vector<double>& v) {
          Naive p = e.rounded;
          p.*field = v;
          const auto out = naive_forward(p).y;
          double loss = 0;
          for (size_t i = 0; i < out.size(); ++i) loss += grad_y[i] * out[i];
          return loss;
        },
        e.rounded.*field);
  };
  EXPECT_LE(rel_err(grad_x, numeric(&Naive::x)), 1e-6);
  EXPECT_LE(rel_err(gate, numeric(&Naive::gate)), 1e-6);
  EXPECT_LE(rel_err(up, numeric(&Naive::up)), 1e-6);
  EXPECT_LE(rel_err(down, numeric(&Naive::down)), 1e-6);
}

TEST(SwigluErrors, NameTheBadShape) {
  auto backend = make_backend<double>({"openblas"});
  const SwigluWeights<double> w{nullptr, nullptr, nullptr, 0, 4};
  testing::expect_invalid(
      [&] { swiglu_forward<double>(*backend, w, nullptr, 0, nullptr, nullptr, nullptr); },
      {"swiglu_forward", "hidden = 0"});
  const SwigluWeights<double> ok{nullptr, nullptr, nullptr, 4, 4};
  testing::expect_invalid(
      [&] { swiglu_forward<double>(*backend, ok, nullptr, -2, nullptr, nullptr, nullptr); },
      {"n = -2"});
}

}  // namespace
}  // namespace switchyard::kernels
