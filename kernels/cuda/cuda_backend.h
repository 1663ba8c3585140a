// The "cuda" backend: every kernel of kernels/backend.h on device memory, fp32 layers, fp32 or bf16
// compute. GEMMs go through cuBLAS (cublasGemmEx: fp32 inputs with CUBLAS_COMPUTE_32F, or bf16
// inputs with fp32 accumulation and fp32 output); the activation, router, aux-loss and row kernels
// are CUDA kernels of this folder that follow kernels/cpu exactly (DESIGN.md's routing semantics,
// ties to the lower index) and are deterministic: no floating-point atomics, every sum in a fixed
// order for a given shape.
//
// Memory: every pointer argument is device memory (or pinned/managed memory the device can reach),
// including add_balance_grad's coef (double) and the int32/int64 index arrays; RouterStats stays a
// host object. Pageable host memory is refused with Error(invalid_argument) naming the kernel and
// argument, so that a layer that hands host buffers to this backend fails cleanly.
//
// Ordering: kernels are queued on the backend's stream and return before they finish; read results
// after synchronize() (or order your own work after stream()). Calls that must look at device data
// to honour the contract of kernels/cpu wait for the stream: accumulate_router_stats (it fills a
// host RouterStats) and the argument checks of routing_weights, routing_weights_backward,
// accumulate_router_stats and pack_backward_rows (an expert id or row out of range throws
// Error(invalid_argument) before anything is written, as on the CPU).
//
// The backend owns its stream (unless given one), its cuBLAS handle and workspace, the scratch
// slots, the bf16 copies of parameters (kept until parameters_changed()) and every temporary buffer.
//
// Status: compiled in CI (nvcc 13, sm_90), tested by tests/kernels_cuda, never run on a GPU when
// this was written (docs/gpu.md). The MoE layer (runtime/) does not run on device memory yet.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kernels/backend.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*; kept out of this header's includes

namespace switchyard::kernels {

class CudaBackend final : public Backend<float> {
 public:
  // On the current CUDA device, with a stream of its own (non-blocking), or on `stream` when given
  // (not owned: it must outlive the backend). Throws Error(internal) "no CUDA device: <CUDA's
  // reason>" when there is none, and Error(internal) naming the CUDA or cuBLAS call otherwise.
  explicit CudaBackend(ComputePrecision compute, CUstream_st* stream = nullptr);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  const std::string& name() const override { return name_; }
  std::string describe() const override;
  ComputePrecision compute() const override { return compute_; }
  void parameters_changed() override;
  // Device memory, one buffer per slot (0..3), grown on the stream (stream-ordered allocation).
  float* scratch(int slot, int64_t count) override;

  CUstream_st* stream() const;
  // Waits for everything queued on the stream; throws Error(internal) on a CUDA error.
  void synchronize();
  // Conversions of parameters to bf16 so far (for tests: once per parameter and update).
  uint64_t param_conversions() const;

  void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
            const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
            int64_t ldc, ParamOperand param = ParamOperand::none,
            GemmPrecision precision = GemmPrecision::compute) override;

  void swiglu_forward(const SwigluWeights<float>& w, const float* x, int64_t n, float* gate_pre,
                      float* up_pre, float* y) override;
  void swiglu_backward(const SwigluWeights<float>& w, const float* x, int64_t n,
                       const float* gate_pre, const float* up_pre, const float* grad_y,
                       float* grad_x, const SwigluGrads<float>& grads) override;
  void swiglu_backward_data(const SwigluWeights<float>& w, int64_t n, const float* gate_pre,
                            const float* up_pre, const float* grad_y, float* grad_x,
                            float* grad_gate_pre, float* grad_up_pre) override;
  void swiglu_backward_weights(const SwigluWeights<float>& w, const float* x, int64_t n,
                               const float* gate_pre, const float* up_pre, const float* grad_y,
                               const float* grad_gate_pre, const float* grad_up_pre,
                               const SwigluGrads<float>& grads) override;

  void compute_scores(const float* logits, int64_t tokens, int experts, ScoreFunc func,
                      float* scores) override;
  void select_experts(const float* scores, const float* bias, int64_t tokens, int experts,
                      const RouterOptions& opts, int32_t* idx) override;
  void routing_weights(const float* scores, const int32_t* idx, int64_t tokens, int experts,
                       const RouterOptions& opts, float* weights) override;
  void accumulate_router_stats(const float* logits, const float* scores, const int32_t* idx,
                               int64_t tokens, int experts, int top_k,
                               RouterStats& stats) override;
  void routing_weights_backward(const float* scores, const int32_t* idx,
                                const float* grad_weights, int64_t tokens, int experts,
                                const RouterOptions& opts, float* grad_scores) override;
  void add_balance_grad(const double* coef, int64_t tokens, int experts,
                        float* grad_scores) override;
  void scores_backward(const float* scores, const float* grad_scores, int64_t tokens, int experts,
                       ScoreFunc func, float* grad_logits) override;
  void z_loss_backward(const float* logits, int64_t tokens, int experts, double alpha_z,
                       double global_tokens, float* grad_logits) override;

  void permute_rows(const float* src, int64_t cols, const int64_t* rows, int64_t n,
                    float* dst) override;
  void unpermute_rows(const float* src, int64_t cols, const int64_t* rows, const float* scale,
                      int64_t n, float* dst) override;
  void gathered_row_dots(const float* a, const float* b, int64_t cols, const int64_t* rows,
                         int64_t n, float* out) override;
  void add(float* dst, const float* src, int64_t n) override;
  void scale_rows(float* x, int64_t n, int64_t cols, const float* scale) override;
  void pack_backward_rows(const float* grad_x, int64_t n, int64_t hidden, const int64_t* rows,
                          const int32_t* slots, const float* grad_weight, int top_k,
                          int64_t num_rows, float* back_rows) override;
  void unpack_backward_rows(const float* back_rows, int64_t tokens, int64_t hidden, int top_k,
                            float* grad_x, float* grad_weights) override;

 private:
  struct State;  // CUDA and cuBLAS objects, kept out of this header
  std::string name_ = "cuda";
  ComputePrecision compute_;
  std::unique_ptr<State> state_;
};

// make_backend's hook: a CudaBackend on the current device with its own stream.
std::unique_ptr<Backend<float>> make_cuda_backend(ComputePrecision compute);

}  // namespace switchyard::kernels
