#include "kernels/cpu/host_backend.h"

#include "kernels/argument_checks.h"
#include "kernels/permute.h"
#include "kernels/rows.h"

namespace switchyard::kernels {

template <typename T>
T* HostBackend<T>::scratch(int slot, int64_t count) {
  if (slot < 0 || slot >= static_cast<int>(scratch_.size()) || count < 0) {
    detail::invalid_argument("scratch: slot ", slot, " count ", count, " out of range");
  }
  auto& buffer = scratch_[slot];
  if (buffer.size() < static_cast<size_t>(count)) buffer.resize(count);
  return buffer.data();
}

template <typename T>
void HostBackend<T>::swiglu_forward(const SwigluWeights<T>& w, const T* x, int64_t n, T* gate_pre,
                                    T* up_pre, T* y) {
  kernels::swiglu_forward(*this, w, x, n, gate_pre, up_pre, y);
}

template <typename T>
void HostBackend<T>::swiglu_backward(const SwigluWeights<T>& w, const T* x, int64_t n,
                                     const T* gate_pre, const T* up_pre, const T* grad_y, T* grad_x,
                                     const SwigluGrads<T>& grads) {
  kernels::swiglu_backward(*this, w, x, n, gate_pre, up_pre, grad_y, grad_x, grads);
}

template <typename T>
void HostBackend<T>::swiglu_backward_data(const SwigluWeights<T>& w, int64_t n, const T* gate_pre,
                                          const T* up_pre, const T* grad_y, T* grad_x,
                                          T* grad_gate_pre, T* grad_up_pre) {
  kernels::swiglu_backward_data(*this, w, n, gate_pre, up_pre, grad_y, grad_x, grad_gate_pre,
                                grad_up_pre);
}

template <typename T>
void HostBackend<T>::swiglu_backward_weights(const SwigluWeights<T>& w, const T* x, int64_t n,
                                             const T* gate_pre, const T* up_pre, const T* grad_y,
                                             const T* grad_gate_pre, const T* grad_up_pre,
                                             const SwigluGrads<T>& grads) {
  kernels::swiglu_backward_weights(*this, w, x, n, gate_pre, up_pre, grad_y, grad_gate_pre,
                                   grad_up_pre, grads);
}

template <typename T>
void HostBackend<T>::compute_scores(const T* logits, int64_t tokens, int experts, ScoreFunc func,
                                    T* scores) {
  kernels::compute_scores(logits, tokens, experts, func, scores);
}

template <typename T>
void HostBackend<T>::select_experts(const T* scores, const T* bias, int64_t tokens, int experts,
                                    const RouterOptions& opts, int32_t* idx) {
  kernels::select_experts(scores, bias, tokens, experts, opts, idx);
}

template <typename T>
void HostBackend<T>::routing_weights(const T* scores, const int32_t* idx, int64_t tokens,
                                     int experts, const RouterOptions& opts, T* weights) {
  kernels::routing_weights(scores, idx, tokens, experts, opts, weights);
}

template <typename T>
void HostBackend<T>::accumulate_router_stats(const T* logits, const T* scores, const int32_t* idx,
                                             int64_t tokens, int experts, int top_k,
                                             RouterStats& stats) {
  kernels::accumulate_router_stats(logits, scores, idx, tokens, experts, top_k, stats);
}

template <typename T>
void HostBackend<T>::routing_weights_backward(const T* scores, const int32_t* idx,
                                              const T* grad_weights, int64_t tokens, int experts,
                                              const RouterOptions& opts, T* grad_scores) {
  kernels::routing_weights_backward(scores, idx, grad_weights, tokens, experts, opts, grad_scores);
}

template <typename T>
void HostBackend<T>::add_balance_grad(const double* coef, int64_t tokens, int experts,
                                      T* grad_scores) {
  kernels::add_balance_grad(coef, tokens, experts, grad_scores);
}

template <typename T>
void HostBackend<T>::scores_backward(const T* scores, const T* grad_scores, int64_t tokens,
                                     int experts, ScoreFunc func, T* grad_logits) {
  kernels::scores_backward(scores, grad_scores, tokens, experts, func, grad_logits);
}

template <typename T>
void HostBackend<T>::z_loss_backward(const T* logits, int64_t tokens, int experts, double alpha_z,
                                     double global_tokens, T* grad_logits) {
  kernels::z_loss_backward(logits, tokens, experts, alpha_z, global_tokens, grad_logits);
}

template <typename T>
void HostBackend<T>::permute_rows(const T* src, int64_t cols, const int64_t* rows, int64_t n,
                                  T* dst) {
  kernels::permute_rows(src, cols, rows, n, dst);
}

template <typename T>
void HostBackend<T>::unpermute_rows(const T* src, int64_t cols, const int64_t* rows, const T* scale,
                                    int64_t n, T* dst) {
  kernels::unpermute_rows(src, cols, rows, scale, n, dst);
}

template <typename T>
void HostBackend<T>::gathered_row_dots(const T* a, const T* b, int64_t cols, const int64_t* rows,
                                       int64_t n, T* out) {
  kernels::gathered_row_dots(a, b, cols, rows, n, out);
}

template <typename T>
void HostBackend<T>::add(T* dst, const T* src, int64_t n) {
  kernels::add(dst, src, n);
}

template <typename T>
void HostBackend<T>::scale_rows(T* x, int64_t n, int64_t cols, const T* scale) {
  kernels::scale_rows(x, n, cols, scale);
}

template <typename T>
void HostBackend<T>::pack_backward_rows(const T* grad_x, int64_t n, int64_t hidden,
                                        const int64_t* rows, const int32_t* slots,
                                        const T* grad_weight, int top_k, int64_t num_rows,
                                        T* back_rows) {
  kernels::pack_backward_rows(grad_x, n, hidden, rows, slots, grad_weight, top_k, num_rows,
                              back_rows);
}

template <typename T>
void HostBackend<T>::unpack_backward_rows(const T* back_rows, int64_t tokens, int64_t hidden,
                                          int top_k, T* grad_x, T* grad_weights) {
  kernels::unpack_backward_rows(back_rows, tokens, hidden, top_k, grad_x, grad_weights);
}

template class HostBackend<float>;
template class HostBackend<double>;

}  // namespace switchyard::kernels
