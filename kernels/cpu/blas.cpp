#include "kernels/blas.h"

#include <cblas.h>

#include <algorithm>
#include <climits>

#include "kernels/cpu/check.h"

namespace switchyard::kernels {
namespace {

// CBLAS takes 32-bit ints, and OpenBLAS reports a bad leading dimension through xerbla, which
// prints and returns without computing: check everything here so that misuse throws instead.
void check_args(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, int64_t lda,
                int64_t ldb, int64_t ldc) {
  const struct {
    const char* name;
    int64_t value;
    int64_t min;
  } args[] = {
      {"m", m, 0},
      {"n", n, 0},
      {"k", k, 0},
      {"lda", lda, std::max<int64_t>(1, trans_a ? m : k)},
      {"ldb", ldb, std::max<int64_t>(1, trans_b ? k : n)},
      {"ldc", ldc, std::max<int64_t>(1, n)},
  };
  for (const auto& a : args) {
    if (a.value < a.min || a.value > INT_MAX) {
      detail::invalid_argument("gemm: ", a.name, " = ", a.value, " must be in [", a.min, ", ",
                               INT_MAX, "]");
    }
  }
}

void blas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha,
               const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void blas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, double alpha,
               const double* a, int lda, const double* b, int ldb, double beta, double* c,
               int ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  check_args(trans_a, trans_b, m, n, k, lda, ldb, ldc);
  if (m == 0 || n == 0) return;
  if (k == 0) {
    // The product is empty, so only the beta term remains; beta == 0 must not read C (it may hold
    // NaN or uninitialised memory).
    for (int64_t i = 0; i < m; ++i) {
      T* row = c + i * ldc;
      for (int64_t j = 0; j < n; ++j) row[j] = beta == T(0) ? T(0) : beta * row[j];
    }
    return;
  }
  blas_gemm(trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
            static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
            static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);

}  // namespace switchyard::kernels
