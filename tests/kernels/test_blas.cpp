#include "kernels/blas.h"

#include "kernels/backend.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <limits>

#include "tests/kernels/testing.h"

namespace switchyard::kernels {
namespace {

using testing::cast;
using testing::rel_err;
using testing::tol;
using testing::uniform;

// Stored element (r, c) of a row-major matrix with leading dimension ld.
double at(const std::vector<double>& m, int64_t ld, int64_t r, int64_t c) { return m[r * ld + c]; }

// C = alpha op(A) op(B) + beta C over the m x n block only; padding columns are left as they are.
std::vector<double> naive_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha,
                               const std::vector<double>& a, int64_t lda,
                               const std::vector<double>& b, int64_t ldb, double beta,
                               std::vector<double> c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0;
      for (int64_t p = 0; p < k; ++p) {
        sum +=
            (ta ? at(a, lda, p, i) : at(a, lda, i, p)) * (tb ? at(b, ldb, j, p) : at(b, ldb, p, j));
      }
      c[i * ldc + j] = alpha * sum + beta * c[i * ldc + j];
    }
  }
  return c;
}

template <typename T>
class Gemm : public ::testing::Test {};
TYPED_TEST_SUITE(Gemm, testing::FloatTypes);

// Every transpose combination, with padded leading dimensions, at a small and a blocked size.
TYPED_TEST(Gemm, MatchesNaiveForAllTransposes) {
  using T = TypeParam;
  struct Size {
    int64_t m, n, k;
  };
  for (const auto& bc : testing::backend_cases<T>()) {
    auto backend = make_backend<T>({bc.name, bc.compute});
    for (const Size s : {Size{7, 5, 9}, Size{67, 45, 130}}) {
      for (const bool ta : {false, true}) {
        for (const bool tb : {false, true}) {
          SCOPED_TRACE(::testing::Message()
                       << testing::case_name(bc) << " m=" << s.m << " ta=" << ta << " tb=" << tb);
          const int64_t lda = (ta ? s.m : s.k) + 3;
          const int64_t ldb = (tb ? s.k : s.n) + 2;
          const int64_t ldc = s.n + 1;
          const auto a = cast<T>(uniform((ta ? s.k : s.m) * lda, 1));
          const auto b = cast<T>(uniform((tb ? s.n : s.k) * ldb, 2));
          auto c = cast<T>(uniform(s.m * ldc, 3));
          const auto expected =
              naive_gemm(ta, tb, s.m, s.n, s.k, 0.75, testing::to_double(a), lda,
                         testing::to_double(b), ldb, -1.25, testing::to_double(c), ldc);
          backend->gemm(ta, tb, s.m, s.n, s.k, T(0.75), a.data(), lda, b.data(), ldb, T(-1.25),
                        c.data(), ldc);
          // Compare the whole buffer: padding must come back untouched (it is in both).
          EXPECT_LE(rel_err(c, expected), bc.tol);
        }
      }
    }
  }
}

// A few rows times a parameter B, the expert FFNs' shape (onednn runs it as the transposed
// product, then adds C^T^T into C): every transpose, padded leading dimensions, beta -1.25, and
// beta 0 over a C of NaN.
TYPED_TEST(Gemm, FewRowsTimesAParameterMatchNaive) {
  using T = TypeParam;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  for (const auto& bc : testing::backend_cases<T>()) {
    auto backend = make_backend<T>({bc.name, bc.compute});
    for (const int64_t m : {1, 3, 24}) {
      const int64_t n = 130, k = 40;
      for (const bool ta : {false, true}) {
        for (const bool tb : {false, true}) {
          for (const double beta : {-1.25, 0.0}) {
            SCOPED_TRACE(::testing::Message() << testing::case_name(bc) << " m=" << m
                                              << " ta=" << ta << " tb=" << tb << " beta=" << beta);
            const int64_t lda = (ta ? m : k) + 3;
            const int64_t ldb = (tb ? k : n) + 2;
            const int64_t ldc = n + 1;
            const auto a = cast<T>(uniform((ta ? k : m) * lda, 11));
            const auto b = cast<T>(uniform((tb ? n : k) * ldb, 12));
            auto c = cast<T>(uniform(m * ldc, 13));
            if (beta == 0) {
              for (int64_t i = 0; i < m; ++i) std::fill_n(c.begin() + i * ldc, n, nan);
            }
            // The reference's C holds 0 where C holds NaN: beta 0 must not read C at all.
            std::vector<double> c_ref = testing::to_double(c);
            for (double& v : c_ref) v = std::isnan(v) ? 0 : v;
            const auto expected = naive_gemm(ta, tb, m, n, k, 0.75, testing::to_double(a), lda,
                                             testing::to_double(b), ldb, beta, c_ref, ldc);
            // A new parameter, perhaps where the last one was: a backend may hold a converted
            // copy of that one (ParamOperand's contract).
            backend->parameters_changed();
            backend->gemm(ta, tb, m, n, k, T(0.75), a.data(), lda, b.data(), ldb, T(beta), c.data(),
                          ldc, ParamOperand::b);
            EXPECT_LE(rel_err(c, expected), bc.tol);
          }
        }
      }
    }
  }
}

TYPED_TEST(Gemm, BetaZeroNeverReadsC) {
  using T = TypeParam;
  const int64_t m = 4, n = 3, k = 5;
  const auto a = cast<T>(uniform(m * k, 4));
  const auto b = cast<T>(uniform(k * n, 5));
  const auto expected = naive_gemm(false, false, m, n, k, 2.0, testing::to_double(a), k,
                                   testing::to_double(b), n, 0.0, std::vector<double>(m * n), n);
  for (const auto& bc : testing::backend_cases<T>()) {
    SCOPED_TRACE(testing::case_name(bc));
    std::vector<T> c(m * n, std::numeric_limits<T>::quiet_NaN());
    make_backend<T>({bc.name, bc.compute})
        ->gemm(false, false, m, n, k, T(2), a.data(), k, b.data(), n, T(0), c.data(), n);
    EXPECT_LE(rel_err(c, expected), bc.tol);
  }
}

TYPED_TEST(Gemm, ZeroSizes) {
  using T = TypeParam;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  for (const auto& bc : testing::backend_cases<T>()) {
    SCOPED_TRACE(testing::case_name(bc));
    auto backend = make_backend<T>({bc.name, bc.compute});
    auto gemm = [&](auto... args) { backend->gemm(args...); };
    // m == 0 or n == 0: nothing is touched (A and B may be null).
    std::vector<T> c{T(1.5)};
    gemm(false, false, 0, 3, 4, T(1), nullptr, 4, nullptr, 3, T(2), c.data(), 3);
    gemm(true, true, 3, 0, 4, T(1), nullptr, 3, nullptr, 4, T(2), c.data(), 1);
    EXPECT_EQ(c[0], T(1.5));
    // k == 0, beta == 0: C = 0 even where it held NaN; the padding column stays as it was.
    std::vector<T> c0{nan, nan, T(7), nan, nan, T(7)};
    gemm(false, false, 2, 2, 0, T(1), nullptr, 1, nullptr, 2, T(0), c0.data(), 3);
    EXPECT_EQ(c0, (std::vector<T>{0, 0, T(7), 0, 0, T(7)}));
    // k == 0, beta != 0: C is scaled by beta.
    std::vector<T> c1{1, 2, 3, 4};
    gemm(true, false, 2, 2, 0, T(1), nullptr, 2, nullptr, 2, T(-2), c1.data(), 2);
    EXPECT_EQ(c1, (std::vector<T>{-2, -4, -6, -8}));
  }
}

TEST(GemmErrors, NameTheBadArgument) {
  std::vector<double> buf(16);
  const double* p = buf.data();
  auto call = [&](int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc) {
    return [=, &buf] {
      gemm<double>(false, false, m, n, k, 1.0, p, lda, p, ldb, 0.0, buf.data(), ldc);
    };
  };
  testing::expect_invalid(call(-1, 2, 2, 2, 2, 2), {"gemm", "m = -1"});
  testing::expect_invalid(call(2, 2, 3, 2, 2, 2), {"lda = 2"});
  testing::expect_invalid(call(2, 3, 2, 2, 2, 3), {"ldb = 2"});
  testing::expect_invalid(call(2, 3, 2, 2, 3, 1), {"ldc = 1"});
  // CBLAS takes 32-bit sizes: larger ones must be refused, not truncated.
  testing::expect_invalid(call(int64_t{INT_MAX} + 1, 1, 1, 1, 1, 1), {"m = 2147483648"});
}

}  // namespace
}  // namespace switchyard::kernels
