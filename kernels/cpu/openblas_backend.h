// The "openblas" backend: the CPU kernels with OpenBLAS's GEMM (fp32 and fp64, native precision).
// Checks at construction that OpenBLAS runs kernels that fit the CPU, and prints one warning per
// process when it does not (openblas_core.h).
#pragma once

#include <string>

#include "kernels/cpu/host_backend.h"
#include "kernels/cpu/openblas_core.h"

namespace switchyard::kernels {

template <typename T>
class OpenBlasBackend final : public HostBackend<T> {
 public:
  OpenBlasBackend();

  const std::string& name() const override { return name_; }
  std::string describe() const override;
  ComputePrecision compute() const override { return ComputePrecision::native; }
  const OpenBlasCoreCheck& core_check() const { return core_; }

  void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
            int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc, ParamOperand param,
            GemmPrecision precision) override;

 private:
  std::string name_ = "openblas";
  OpenBlasCoreCheck core_;
};

}  // namespace switchyard::kernels
