#include "kernels/cpu/openblas_backend.h"

#include <cstdio>
#include <mutex>

#include "kernels/blas.h"

namespace switchyard::kernels {

template <typename T>
OpenBlasBackend<T>::OpenBlasBackend() : core_(check_openblas_core()) {
  // Once per process: every layer of a model would otherwise repeat it.
  static std::once_flag warned;
  if (core_.too_old()) {
    std::call_once(warned, [&] { std::fprintf(stderr, "%s\n", core_.warning().c_str()); });
  }
}

template <typename T>
std::string OpenBlasBackend<T>::describe() const {
  return "openblas (core " + core_.core + (core_.too_old() ? ", too old for this CPU" : "") + ", " +
         (sizeof(T) == 4 ? "fp32" : "fp64") + ")";
}

template <typename T>
void OpenBlasBackend<T>::gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha,
                              const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c,
                              int64_t ldc, ParamOperand, GemmPrecision) {
  kernels::gemm<T>(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template class OpenBlasBackend<float>;
template class OpenBlasBackend<double>;

}  // namespace switchyard::kernels
