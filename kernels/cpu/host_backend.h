// What the CPU backends share: every kernel but the GEMM runs on host memory through the loops of
// kernels/cpu; a backend derived from this one supplies gemm() (OpenBLAS, oneDNN), and the SwiGLU
// kernels run their GEMMs through it.
#pragma once

#include <array>
#include <vector>

#include "kernels/backend.h"

namespace switchyard::kernels {

template <typename T>
class HostBackend : public Backend<T> {
 public:
  T* scratch(int slot, int64_t count) override;

  void swiglu_forward(const SwigluWeights<T>& w, const T* x, int64_t n, T* gate_pre, T* up_pre,
                      T* y) override;
  void swiglu_backward(const SwigluWeights<T>& w, const T* x, int64_t n, const T* gate_pre,
                       const T* up_pre, const T* grad_y, T* grad_x,
                       const SwigluGrads<T>& grads) override;
  void swiglu_backward_data(const SwigluWeights<T>& w, int64_t n, const T* gate_pre,
                            const T* up_pre, const T* grad_y, T* grad_x, T* grad_gate_pre,
                            T* grad_up_pre) override;
  void swiglu_backward_weights(const SwigluWeights<T>& w, const T* x, int64_t n, const T* gate_pre,
                               const T* up_pre, const T* grad_y, const T* grad_gate_pre,
                               const T* grad_up_pre, const SwigluGrads<T>& grads) override;

  void compute_scores(const T* logits, int64_t tokens, int experts, ScoreFunc func,
                      T* scores) override;
  void select_experts(const T* scores, const T* bias, int64_t tokens, int experts,
                      const RouterOptions& opts, int32_t* idx) override;
  void routing_weights(const T* scores, const int32_t* idx, int64_t tokens, int experts,
                       const RouterOptions& opts, T* weights) override;
  void accumulate_router_stats(const T* logits, const T* scores, const int32_t* idx, int64_t tokens,
                               int experts, int top_k, RouterStats& stats) override;
  void routing_weights_backward(const T* scores, const int32_t* idx, const T* grad_weights,
                                int64_t tokens, int experts, const RouterOptions& opts,
                                T* grad_scores) override;
  void add_balance_grad(const double* coef, int64_t tokens, int experts, T* grad_scores) override;
  void scores_backward(const T* scores, const T* grad_scores, int64_t tokens, int experts,
                       ScoreFunc func, T* grad_logits) override;
  void z_loss_backward(const T* logits, int64_t tokens, int experts, double alpha_z,
                       double global_tokens, T* grad_logits) override;

  void permute_rows(const T* src, int64_t cols, const int64_t* rows, int64_t n, T* dst) override;
  void unpermute_rows(const T* src, int64_t cols, const int64_t* rows, const T* scale, int64_t n,
                      T* dst) override;
  void gathered_row_dots(const T* a, const T* b, int64_t cols, const int64_t* rows, int64_t n,
                         T* out) override;
  void add(T* dst, const T* src, int64_t n) override;
  void scale_rows(T* x, int64_t n, int64_t cols, const T* scale) override;
  void pack_backward_rows(const T* grad_x, int64_t n, int64_t hidden, const int64_t* rows,
                          const int32_t* slots, const T* grad_weight, int top_k, int64_t num_rows,
                          T* back_rows) override;
  void unpack_backward_rows(const T* back_rows, int64_t tokens, int64_t hidden, int top_k,
                            T* grad_x, T* grad_weights) override;

 private:
  std::array<std::vector<T>, 4> scratch_;
};

}  // namespace switchyard::kernels
