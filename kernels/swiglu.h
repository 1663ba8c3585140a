// SwiGLU expert FFN in Hugging Face's DeepSeek layout: y = down(silu(gate(x)) * up(x)).
#pragma once

#include <cstdint>

namespace switchyard::kernels {

template <typename T>
class Backend;

template <typename T>
struct SwigluWeights {
  const T* gate_proj;  // [inter, hidden]
  const T* up_proj;    // [inter, hidden]
  const T* down_proj;  // [hidden, inter]
  int64_t hidden;
  int64_t inter;
};

template <typename T>
struct SwigluGrads {
  T* gate_proj;  // [inter, hidden], accumulated into
  T* up_proj;    // [inter, hidden], accumulated into
  T* down_proj;  // [hidden, inter], accumulated into
  // The three hold no gradient yet (memory fresh from an allocator, NaN even): the weight
  // gradients are written instead of added (zeros when n == 0), as autograd writes a new .grad.
  bool overwrite = false;
};

// These run their GEMMs through `backend` (so a backend's GEMM precision applies) and keep their
// temporaries in its scratch memory (slot 0).

// x: [n, hidden] -> y: [n, hidden] (overwritten). Saves the pre-activations gate_pre = x gate^T and
// up_pre = x up^T, each [n, inter], for the backward pass. n may be 0.
template <typename T>
void swiglu_forward(Backend<T>& backend, const SwigluWeights<T>& w, const T* x, int64_t n,
                    T* gate_pre, T* up_pre, T* y);

// grad_x: [n, hidden] (overwritten); weight gradients accumulated into grads (or written, with
// grads.overwrite). The same as swiglu_backward_data followed by swiglu_backward_weights.
template <typename T>
void swiglu_backward(Backend<T>& backend, const SwigluWeights<T>& w, const T* x, int64_t n,
                     const T* gate_pre, const T* up_pre, const T* grad_y, T* grad_x,
                     const SwigluGrads<T>& grads);

// The two halves of swiglu_backward, so that a pipeline can send grad_x on its way before it
// spends time on the weight gradients. The data half writes grad_x and the pre-activation
// gradients grad_gate_pre, grad_up_pre ([n, inter] each, overwritten), which the weight half reads.
template <typename T>
void swiglu_backward_data(Backend<T>& backend, const SwigluWeights<T>& w, int64_t n,
                          const T* gate_pre, const T* up_pre, const T* grad_y, T* grad_x,
                          T* grad_gate_pre, T* grad_up_pre);
template <typename T>
void swiglu_backward_weights(Backend<T>& backend, const SwigluWeights<T>& w, const T* x, int64_t n,
                             const T* gate_pre, const T* up_pre, const T* grad_y,
                             const T* grad_gate_pre, const T* grad_up_pre,
                             const SwigluGrads<T>& grads);

}  // namespace switchyard::kernels
