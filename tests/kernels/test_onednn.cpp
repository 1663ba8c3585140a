// What the onednn backend keeps between calls: primitives once per shape, bf16 copies of
// parameters once per update, and results that follow a parameter change once it is announced.
#include "kernels/onednn/onednn_backend.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/openblas_core.h"

#include "tests/kernels/testing.h"

namespace switchyard::kernels {
namespace {

using testing::cast;
using testing::uniform;

struct Problem {
  int64_t m = 5, n = 7, k = 9;
  std::vector<float> a = cast<float>(uniform(5 * 9, 31));
  std::vector<float> b = cast<float>(uniform(7 * 9, 32));  // a parameter, stored [n, k]
  std::vector<float> c = std::vector<float>(5 * 7);

  void run(Backend<float>& backend) {
    backend.gemm(false, true, m, n, k, 1.f, a.data(), k, b.data(), k, 0.f, c.data(), n,
                 ParamOperand::b);
  }
  // c[0] recomputed in fp64 from the current a and b.
  double first() const {
    double sum = 0;
    for (int64_t p = 0; p < k; ++p) sum += double(a[p]) * double(b[p]);
    return sum;
  }
};

TEST(OneDnnBackend, CreatesOnePrimitivePerShape) {
  for (const auto compute : {ComputePrecision::native, ComputePrecision::bf16}) {
    OneDnnBackend backend(compute);
    Problem p;
    for (int i = 0; i < 3; ++i) p.run(backend);
    EXPECT_EQ(backend.cached_primitives(), 1u);
    p.m = 3;  // another shape
    p.run(backend);
    p.run(backend);
    EXPECT_EQ(backend.cached_primitives(), 2u);
  }
}

TEST(OneDnnBackend, ConvertsAParameterOncePerUpdate) {
  OneDnnBackend backend(ComputePrecision::bf16);
  Problem p;
  p.run(backend);
  p.run(backend);
  EXPECT_EQ(backend.param_conversions(), 1u);
  // A changed parameter is read again once the change is announced, and only then.
  for (float& v : p.b) v *= -2.f;
  backend.parameters_changed();
  p.run(backend);
  p.run(backend);
  EXPECT_EQ(backend.param_conversions(), 2u);
  EXPECT_NEAR(p.c[0], p.first(), testing::kBf16Tol * 3);
}

TEST(OneDnnBackend, NativeGemmsOfABf16BackendStayFp32) {
  OneDnnBackend backend(ComputePrecision::bf16);
  Problem p;
  backend.gemm(false, true, p.m, p.n, p.k, 1.f, p.a.data(), p.k, p.b.data(), p.k, 0.f, p.c.data(),
               p.n, ParamOperand::b, GemmPrecision::native);
  EXPECT_NEAR(p.c[0], p.first(), 1e-5);
  EXPECT_EQ(backend.param_conversions(), 0u);
}

TEST(OneDnnBackend, DescribesItsPrecisionAndIsa) {
  EXPECT_NE(OneDnnBackend(ComputePrecision::bf16).describe().find("bf16"), std::string::npos);
  EXPECT_NE(OneDnnBackend(ComputePrecision::native).describe().find("fp32"), std::string::npos);
}

// C0 + A^T B in fp64, A stored [k, m], B [k, n], C0 [m, n] (empty: zero): the weight-gradient
// products of the tests below.
std::vector<double> naive_at_b(int64_t m, int64_t n, int64_t k, const std::vector<float>& a,
                               const std::vector<float>& b, const std::vector<float>& c0 = {}) {
  std::vector<double> want(m * n, 0.0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double sum = c0.empty() ? 0.0 : c0[i * n + j];
      for (int64_t p = 0; p < k; ++p) sum += double(a[p * m + i]) * double(b[p * n + j]);
      want[i * n + j] = sum;
    }
  }
  return want;
}

// The weight gradients (fp32, transposed A) go to OpenBLAS only where it runs AVX-512 kernels
// (CTest runs this once more with OPENBLAS_CORETYPE=Prescott, the oneDNN path); either way they
// match the fp64 product, accumulating into C.
TEST(OneDnnBackend, WeightGradientsThroughOpenBlasOnlyWithAvx512Kernels) {
  OneDnnBackend backend(ComputePrecision::native);
  const bool by_blas = check_openblas_core().core_level >= 3;
  EXPECT_EQ(backend.describe().find("OpenBLAS") != std::string::npos, by_blas)
      << backend.describe();
  const int64_t m = 37, n = 29, k = 6;  // C [m, n] += A^T B, A stored [k, m], B [k, n]
  const auto a = cast<float>(uniform(k * m, 41));
  const auto b = cast<float>(uniform(k * n, 42));
  auto c = cast<float>(uniform(m * n, 43));
  const auto c0 = c;
  backend.gemm(true, false, m, n, k, 1.f, a.data(), m, b.data(), n, 1.f, c.data(), n,
               ParamOperand::none, GemmPrecision::native);
  const std::vector<double> want = naive_at_b(m, n, k, a, b, c0);
  for (int64_t i = 0; i < m * n; ++i) {
    EXPECT_NEAR(c[i], want[i], 1e-5 * (1 + std::abs(want[i]))) << i / n << "," << i % n;
  }
  // Written into fresh memory (beta 0, oneDNN's matmul): NaN there leaves no trace.
  std::vector<float> fresh(m * n, std::numeric_limits<float>::quiet_NaN());
  backend.gemm(true, false, m, n, k, 1.f, a.data(), m, b.data(), n, 0.f, fresh.data(), n,
               ParamOperand::none, GemmPrecision::native);
  EXPECT_LE(testing::rel_err(fresh, naive_at_b(m, n, k, a, b)), 1e-5);
}

// With bf16 compute, shallow weight gradients added to (depth < 48: one rank's few dozen tokens per
// expert) are fp32 products through OpenBLAS where it runs AVX-512 kernels, so they match the fp64
// product to fp32 precision; deeper ones, and every one written into fresh memory (beta 0), are
// bf16 products, within the bf16 bound.
TEST(OneDnnBackend, Bf16WeightGradientsOfShortDepthAreFp32WithAvx512Blas) {
  OneDnnBackend backend(ComputePrecision::bf16);
  const bool by_blas = check_openblas_core().core_level >= 3;
  const int64_t m = 37, n = 29;
  for (const float beta : {1.f, 0.f}) {
    for (const int64_t k : {24, 96}) {
      const auto a = cast<float>(uniform(k * m, 51));
      const auto b = cast<float>(uniform(k * n, 52));
      // Added onto zeros, or written over NaN (fresh memory).
      std::vector<float> c(m * n, beta == 0.f ? std::numeric_limits<float>::quiet_NaN() : 0.f);
      backend.gemm(true, false, m, n, k, 1.f, a.data(), m, b.data(), n, beta, c.data(), n,
                   ParamOperand::none, GemmPrecision::compute);
      const double worst = testing::rel_err(c, naive_at_b(m, n, k, a, b));
      const bool fp32 = by_blas && k < 48 && beta != 0.f;
      EXPECT_LE(worst, fp32 ? 1e-5 : testing::kBf16Tol) << "depth " << k << ", beta " << beta;
      // The bf16 products do round: an error above fp32's shows which path ran.
      if (!fp32) {
        EXPECT_GT(worst, 1e-5) << "depth " << k << ", beta " << beta;
      }
    }
  }
  EXPECT_EQ(backend.describe().find("in fp32 below depth 48") != std::string::npos, by_blas)
      << backend.describe();
}

TEST(BackendFactory, RefusesWhatItCannotDo) {
  testing::expect_invalid([] { make_backend<float>({"cublas"}); }, {"cublas", "openblas, onednn"});
  testing::expect_invalid([] { make_backend<double>({"onednn"}); }, {"onednn", "fp32"});
  testing::expect_invalid(
      [] {
        make_backend<float>({"openblas", ComputePrecision::bf16});
      },
      {"openblas", "bf16"});
  testing::expect_invalid([] { parse_compute_precision("fp8"); }, {"fp8", "native, bf16"});
}

}  // namespace
}  // namespace switchyard::kernels
