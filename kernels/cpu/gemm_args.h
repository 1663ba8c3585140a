// What every CPU GEMM does before it computes (the contract of kernels/blas.h): argument checks
// that throw instead of letting a library print and return, and the k == 0 case, which only
// scales C.
#pragma once

#include <cstdint>

namespace switchyard::kernels::detail {

// Throws Error(invalid_argument) "<kernel>: <arg> = <value> must be in [<min>, <max>]" for the
// first of m, n, k, lda, ldb, ldc out of range; max bounds every one (CBLAS takes 32-bit ints).
void check_gemm_args(const char* kernel, bool trans_a, bool trans_b, int64_t m, int64_t n,
                     int64_t k, int64_t lda, int64_t ldb, int64_t ldc, int64_t max);

// C[m,n] = beta * C, the whole product when k == 0; beta == 0 writes zeros without reading C
// (it may hold NaN or uninitialised memory).
template <typename T>
void scale_by_beta(int64_t m, int64_t n, T beta, T* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    T* row = c + i * ldc;
    for (int64_t j = 0; j < n; ++j) row[j] = beta == T(0) ? T(0) : beta * row[j];
  }
}

}  // namespace switchyard::kernels::detail
