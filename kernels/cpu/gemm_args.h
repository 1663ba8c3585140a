// What every CPU GEMM does besides calling its library (the contract of kernels/blas.h): the
// k == 0 case, which only scales C. (The argument checks, which throw instead of letting a library
// print and return, are kernels/argument_checks.h's check_gemm_args.)
#pragma once

#include <cstdint>

namespace switchyard::kernels::detail {

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
