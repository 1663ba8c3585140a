#include "kernels/swiglu.h"

#include <vector>

#include "kernels/blas.h"
#include "kernels/cpu/check.h"
#include "kernels/cpu/math.h"

namespace switchyard::kernels {
namespace {

template <typename T>
void check_shape(const char* fn, const SwigluWeights<T>& w, int64_t n) {
  if (n < 0) detail::invalid_argument(fn, ": n = ", n, " must be >= 0");
  if (w.hidden < 1) detail::invalid_argument(fn, ": weights.hidden = ", w.hidden, " must be >= 1");
  if (w.inter < 1) detail::invalid_argument(fn, ": weights.inter = ", w.inter, " must be >= 1");
}

}  // namespace

template <typename T>
void swiglu_forward(const SwigluWeights<T>& w, const T* x, int64_t n, T* gate_pre, T* up_pre,
                    T* y) {
  check_shape("swiglu_forward", w, n);
  if (n == 0) return;
  const int64_t h = w.hidden;
  const int64_t in = w.inter;
  gemm<T>(false, true, n, in, h, T(1), x, h, w.gate_proj, h, T(0), gate_pre, in);
  gemm<T>(false, true, n, in, h, T(1), x, h, w.up_proj, h, T(0), up_pre, in);
  std::vector<T> act(n * in);
  for (int64_t i = 0; i < n * in; ++i) {
    act[i] = gate_pre[i] * detail::sigmoid(gate_pre[i]) * up_pre[i];
  }
  gemm<T>(false, true, n, h, in, T(1), act.data(), in, w.down_proj, in, T(0), y, h);
}

template <typename T>
void swiglu_backward(const SwigluWeights<T>& w, const T* x, int64_t n, const T* gate_pre,
                     const T* up_pre, const T* grad_y, T* grad_x, const SwigluGrads<T>& grads) {
  check_shape("swiglu_backward", w, n);
  if (n == 0) return;  // no tokens: grad_x is empty and the weight gradients gain nothing
  const int64_t h = w.hidden;
  const int64_t in = w.inter;
  // Two [n, inter] buffers, each reused once its first value is consumed: act becomes grad_up,
  // grad_act becomes grad_gate.
  std::vector<T> act(n * in);
  std::vector<T> grad_act(n * in);
  for (int64_t i = 0; i < n * in; ++i) {
    act[i] = gate_pre[i] * detail::sigmoid(gate_pre[i]) * up_pre[i];
  }
  gemm<T>(false, false, n, in, h, T(1), grad_y, h, w.down_proj, in, T(0), grad_act.data(), in);
  gemm<T>(true, false, h, in, n, T(1), grad_y, h, act.data(), in, T(1), grads.down_proj, in);
  T* grad_up = act.data();
  T* grad_gate = grad_act.data();
  for (int64_t i = 0; i < n * in; ++i) {
    const T g = gate_pre[i];
    const T sig = detail::sigmoid(g);
    const T ga = grad_act[i];
    grad_up[i] = ga * g * sig;
    // silu'(g) = sigma(g) (1 + g (1 - sigma(g)))
    grad_gate[i] = ga * up_pre[i] * sig * (T(1) + g * (T(1) - sig));
  }
  gemm<T>(false, false, n, h, in, T(1), grad_gate, in, w.gate_proj, h, T(0), grad_x, h);
  gemm<T>(false, false, n, h, in, T(1), grad_up, in, w.up_proj, h, T(1), grad_x, h);
  gemm<T>(true, false, in, h, n, T(1), grad_gate, in, x, h, T(1), grads.gate_proj, h);
  gemm<T>(true, false, in, h, n, T(1), grad_up, in, x, h, T(1), grads.up_proj, h);
}

#define SWITCHYARD_INSTANTIATE(T)                                                                  \
  template void swiglu_forward<T>(const SwigluWeights<T>&, const T*, int64_t, T*, T*, T*);         \
  template void swiglu_backward<T>(const SwigluWeights<T>&, const T*, int64_t, const T*, const T*, \
                                   const T*, T*, const SwigluGrads<T>&);
SWITCHYARD_INSTANTIATE(float)
SWITCHYARD_INSTANTIATE(double)
#undef SWITCHYARD_INSTANTIATE

}  // namespace switchyard::kernels
