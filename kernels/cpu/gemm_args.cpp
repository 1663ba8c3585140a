#include "kernels/cpu/gemm_args.h"

#include <algorithm>

#include "kernels/cpu/check.h"

namespace switchyard::kernels::detail {

void check_gemm_args(const char* kernel, bool trans_a, bool trans_b, int64_t m, int64_t n,
                     int64_t k, int64_t lda, int64_t ldb, int64_t ldc, int64_t max) {
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
    if (a.value < a.min || a.value > max) {
      invalid_argument(kernel, ": ", a.name, " = ", a.value, " must be in [", a.min, ", ", max,
                       "]");
    }
  }
}

}  // namespace switchyard::kernels::detail
