// The "onednn" backend: the CPU kernels with oneDNN's matmul (brgemm on AVX-512 machines), fp32
// or bf16 compute. Matmul primitives are created once per shape and kept; with bf16 compute each
// parameter is converted to bfloat16 once per update (until parameters_changed()), activations
// once per call, and products accumulate in fp32. fp32 layers only. The fp32 weight gradients
// (GEMMs of a transposed A) run on OpenBLAS where its kernels are AVX-512 ones: faster there.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kernels/cpu/host_backend.h"

namespace switchyard::kernels {

class OneDnnBackend final : public HostBackend<float> {
 public:
  // Throws Error(invalid_argument) when compute is bf16 and the CPU lacks AVX-512 BF16 (oneDNN
  // would emulate it, slower than fp32).
  explicit OneDnnBackend(ComputePrecision compute);
  ~OneDnnBackend() override;

  const std::string& name() const override { return name_; }
  std::string describe() const override;
  ComputePrecision compute() const override { return compute_; }
  void parameters_changed() override;

  void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
            const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
            int64_t ldc, ParamOperand param, GemmPrecision precision) override;

  // Primitives created so far (for tests: repeated shapes must not add any).
  size_t cached_primitives() const;
  // Conversions of parameters to bf16 so far (for tests: once per parameter and update).
  uint64_t param_conversions() const;

 private:
  struct State;  // oneDNN objects, kept out of this header
  std::string name_ = "onednn";
  ComputePrecision compute_;
  // fp32 GEMMs of a transposed A (the weight gradients) go to OpenBLAS when its kernels are
  // AVX-512 ones (see gemm()).
  bool weight_grads_by_blas_ = false;
  std::string blas_core_;
  std::unique_ptr<State> state_;
};

}  // namespace switchyard::kernels
