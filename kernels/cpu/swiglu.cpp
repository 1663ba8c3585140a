#include "kernels/swiglu.h"

#include <algorithm>

#include "kernels/argument_checks.h"
#include "kernels/backend.h"
#include "kernels/cpu/sigmoid.h"

namespace switchyard::kernels {
namespace {

using detail::check_swiglu_shape;

// act = silu(gate_pre) * up_pre, the input of the down projection. The logistic function first,
// over the whole array (vectorized, kernels/cpu/sigmoid.h), then the products.
template <typename T>
void swiglu_activation(const T* gate_pre, const T* up_pre, int64_t count, T* act) {
  detail::sigmoid(gate_pre, count, act);
  for (int64_t i = 0; i < count; ++i) act[i] = gate_pre[i] * act[i] * up_pre[i];
}

}  // namespace

template <typename T>
void swiglu_forward(Backend<T>& backend, const SwigluWeights<T>& w, const T* x, int64_t n,
                    T* gate_pre, T* up_pre, T* y) {
  check_swiglu_shape("swiglu_forward", w, n);
  if (n == 0) return;
  const int64_t h = w.hidden;
  const int64_t in = w.inter;
  const auto param_b = ParamOperand::b;
  backend.gemm(false, true, n, in, h, T(1), x, h, w.gate_proj, h, T(0), gate_pre, in, param_b);
  backend.gemm(false, true, n, in, h, T(1), x, h, w.up_proj, h, T(0), up_pre, in, param_b);
  T* act = backend.scratch(0, n * in);
  swiglu_activation(gate_pre, up_pre, n * in, act);
  backend.gemm(false, true, n, h, in, T(1), act, in, w.down_proj, in, T(0), y, h, param_b);
}

template <typename T>
void swiglu_backward_data(Backend<T>& backend, const SwigluWeights<T>& w, int64_t n,
                          const T* gate_pre, const T* up_pre, const T* grad_y, T* grad_x,
                          T* grad_gate_pre, T* grad_up_pre) {
  check_swiglu_shape("swiglu_backward_data", w, n);
  if (n == 0) return;
  const int64_t h = w.hidden;
  const int64_t in = w.inter;
  const auto param_b = ParamOperand::b;
  // grad_gate_pre first holds the activation's gradient and grad_up_pre sigma(gate_pre); both are
  // then overwritten in place.
  T* grad_act = grad_gate_pre;
  backend.gemm(false, false, n, in, h, T(1), grad_y, h, w.down_proj, in, T(0), grad_act, in,
               param_b);
  detail::sigmoid(gate_pre, n * in, grad_up_pre);
  for (int64_t i = 0; i < n * in; ++i) {
    const T g = gate_pre[i];
    const T sig = grad_up_pre[i];
    const T ga = grad_act[i];
    grad_up_pre[i] = ga * g * sig;
    // silu'(g) = sigma(g) (1 + g (1 - sigma(g)))
    grad_gate_pre[i] = ga * up_pre[i] * sig * (T(1) + g * (T(1) - sig));
  }
  backend.gemm(false, false, n, h, in, T(1), grad_gate_pre, in, w.gate_proj, h, T(0), grad_x, h,
               param_b);
  backend.gemm(false, false, n, h, in, T(1), grad_up_pre, in, w.up_proj, h, T(1), grad_x, h,
               param_b);
}

template <typename T>
void swiglu_backward_weights(Backend<T>& backend, const SwigluWeights<T>& w, const T* x, int64_t n,
                             const T* gate_pre, const T* up_pre, const T* grad_y,
                             const T* grad_gate_pre, const T* grad_up_pre,
                             const SwigluGrads<T>& grads) {
  check_swiglu_shape("swiglu_backward_weights", w, n);
  const int64_t h = w.hidden;
  const int64_t in = w.inter;
  if (n == 0) {  // no tokens: the weight gradients gain nothing (are nothing, when written)
    if (grads.overwrite) {
      for (T* g : {grads.gate_proj, grads.up_proj, grads.down_proj}) std::fill_n(g, in * h, T(0));
    }
    return;
  }
  T* act = backend.scratch(0, n * in);
  swiglu_activation(gate_pre, up_pre, n * in, act);
  const T beta = grads.overwrite ? T(0) : T(1);
  backend.gemm(true, false, h, in, n, T(1), grad_y, h, act, in, beta, grads.down_proj, in);
  backend.gemm(true, false, in, h, n, T(1), grad_gate_pre, in, x, h, beta, grads.gate_proj, h);
  backend.gemm(true, false, in, h, n, T(1), grad_up_pre, in, x, h, beta, grads.up_proj, h);
}

template <typename T>
void swiglu_backward(Backend<T>& backend, const SwigluWeights<T>& w, const T* x, int64_t n,
                     const T* gate_pre, const T* up_pre, const T* grad_y, T* grad_x,
                     const SwigluGrads<T>& grads) {
  check_swiglu_shape("swiglu_backward", w, n);
  if (n == 0) {  // no tokens: grad_x is empty and the weight gradients gain nothing
    swiglu_backward_weights<T>(backend, w, x, n, gate_pre, up_pre, grad_y, nullptr, nullptr, grads);
    return;
  }
  T* grad_gate_pre = backend.scratch(1, n * w.inter);
  T* grad_up_pre = backend.scratch(2, n * w.inter);
  swiglu_backward_data(backend, w, n, gate_pre, up_pre, grad_y, grad_x, grad_gate_pre, grad_up_pre);
  swiglu_backward_weights(backend, w, x, n, gate_pre, up_pre, grad_y, grad_gate_pre, grad_up_pre,
                          grads);
}

#define SWITCHYARD_INSTANTIATE(T)                                                                  \
  template void swiglu_forward<T>(Backend<T>&, const SwigluWeights<T>&, const T*, int64_t, T*, T*, \
                                  T*);                                                             \
  template void swiglu_backward<T>(Backend<T>&, const SwigluWeights<T>&, const T*, int64_t,        \
                                   const T*, const T*, const T*, T*, const SwigluGrads<T>&);       \
  template void swiglu_backward_data<T>(Backend<T>&, const SwigluWeights<T>&, int64_t, const T*,   \
                                        const T*, const T*, T*, T*, T*);                           \
  template void swiglu_backward_weights<T>(Backend<T>&, const SwigluWeights<T>&, const T*,         \
                                           int64_t, const T*, const T*, const T*, const T*,        \
                                           const T*, const SwigluGrads<T>&);
SWITCHYARD_INSTANTIATE(float)
SWITCHYARD_INSTANTIATE(double)
#undef SWITCHYARD_INSTANTIATE

}  // namespace switchyard::kernels
