// Dense matrix multiply, row-major, the one primitive every layer GEMM goes through.
#pragma once

#include <cstdint>

namespace switchyard::kernels {

// C[m,n] = alpha * op(A) * op(B) + beta * C, all row-major.
// op(A) is [m,k] (A stored [m,k], or [k,m] when trans_a); op(B) is [k,n] (B stored [k,n], or [n,k]
// when trans_b). Any of m, n, k may be 0: with k == 0, C is scaled by beta (C = 0 when beta == 0).
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

}  // namespace switchyard::kernels
