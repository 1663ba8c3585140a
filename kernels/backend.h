// The kernel backend: one object, chosen at run time, through which the layer runs every kernel
// (GEMMs, the SwiGLU expert FFN, the router, row permutations and the token loops of combine and
// gradient packing). A backend owns what its kernels need besides their arguments: cached
// primitives, converted copies of parameters, scratch memory, and (kernels/cuda, later) a stream.
// Pointers are in the backend's memory space: host memory for the CPU backends.
//
// Backends: "openblas" (kernels/cpu, the default) and "onednn" (kernels/onednn, fp32 layers).
// Chosen by BackendOptions::name, else SWITCHYARD_BACKEND (which fp64 layers, having only
// openblas, leave aside), else openblas.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kernels/aux_loss.h"
#include "kernels/gating.h"
#include "kernels/swiglu.h"

namespace switchyard::kernels {

// Precision of the GEMMs' inputs. native: the layer's own type. bf16: inputs rounded to bfloat16,
// products accumulated and written in fp32 (onednn only, fp32 layers only); explicit, never the
// default.
enum class ComputePrecision { native, bf16 };

struct BackendOptions {
  std::string name;  // "" = SWITCHYARD_BACKEND, else "openblas"
  ComputePrecision compute = ComputePrecision::native;
};

// Which GEMM operand is a layer parameter, unchanged until parameters_changed(): a backend may
// keep a converted copy of it (onednn bf16 converts each parameter once per update, not per call).
enum class ParamOperand { none, a, b };

// A GEMM at the backend's compute precision, or always at the layer's own: the router's GEMMs
// are (as in DeepSeek-V3 and Megatron's fp32 router), so that bf16 compute never changes which
// experts a token picks.
enum class GemmPrecision { compute, native };

template <typename T>
class Backend {
 public:
  virtual ~Backend() = default;

  virtual const std::string& name() const = 0;
  // One line for logs: the backend, its precision and the instruction set its GEMMs run on.
  virtual std::string describe() const = 0;
  virtual ComputePrecision compute() const = 0;
  // The layer's parameters may have changed since the last call: drop converted copies.
  virtual void parameters_changed() {}
  // A reusable buffer of at least count elements, one per slot (0..3), kept between calls so that
  // a step's kernels allocate nothing once the shapes have been seen. Valid until the next call
  // for the same slot; slot 0 belongs to the SwiGLU kernels, 1 and 2 to swiglu_backward.
  virtual T* scratch(int slot, int64_t count) = 0;

  // C[m,n] = alpha * op(A) * op(B) + beta * C, row-major (the contract of kernels/blas.h).
  virtual void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha,
                    const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc,
                    ParamOperand param = ParamOperand::none,
                    GemmPrecision precision = GemmPrecision::compute) = 0;

  // SwiGLU expert FFN (kernels/swiglu.h), through this backend's GEMMs.
  virtual void swiglu_forward(const SwigluWeights<T>& w, const T* x, int64_t n, T* gate_pre,
                              T* up_pre, T* y) = 0;
  virtual void swiglu_backward(const SwigluWeights<T>& w, const T* x, int64_t n, const T* gate_pre,
                               const T* up_pre, const T* grad_y, T* grad_x,
                               const SwigluGrads<T>& grads) = 0;
  virtual void swiglu_backward_data(const SwigluWeights<T>& w, int64_t n, const T* gate_pre,
                                    const T* up_pre, const T* grad_y, T* grad_x, T* grad_gate_pre,
                                    T* grad_up_pre) = 0;
  virtual void swiglu_backward_weights(const SwigluWeights<T>& w, const T* x, int64_t n,
                                       const T* gate_pre, const T* up_pre, const T* grad_y,
                                       const T* grad_gate_pre, const T* grad_up_pre,
                                       const SwigluGrads<T>& grads) = 0;

  // Router (kernels/gating.h, kernels/aux_loss.h).
  virtual void compute_scores(const T* logits, int64_t tokens, int experts, ScoreFunc func,
                              T* scores) = 0;
  virtual void select_experts(const T* scores, const T* bias, int64_t tokens, int experts,
                              const RouterOptions& opts, int32_t* idx) = 0;
  virtual void routing_weights(const T* scores, const int32_t* idx, int64_t tokens, int experts,
                               const RouterOptions& opts, T* weights) = 0;
  virtual void accumulate_router_stats(const T* logits, const T* scores, const int32_t* idx,
                                       int64_t tokens, int experts, int top_k,
                                       RouterStats& stats) = 0;
  virtual void routing_weights_backward(const T* scores, const int32_t* idx, const T* grad_weights,
                                        int64_t tokens, int experts, const RouterOptions& opts,
                                        T* grad_scores) = 0;
  virtual void add_balance_grad(const double* coef, int64_t tokens, int experts,
                                T* grad_scores) = 0;
  virtual void scores_backward(const T* scores, const T* grad_scores, int64_t tokens, int experts,
                               ScoreFunc func, T* grad_logits) = 0;
  virtual void z_loss_backward(const T* logits, int64_t tokens, int experts, double alpha_z,
                               double global_tokens, T* grad_logits) = 0;

  // Rows (kernels/permute.h, kernels/rows.h).
  virtual void permute_rows(const T* src, int64_t cols, const int64_t* rows, int64_t n, T* dst) = 0;
  virtual void unpermute_rows(const T* src, int64_t cols, const int64_t* rows, const T* scale,
                              int64_t n, T* dst) = 0;
  virtual void gathered_row_dots(const T* a, const T* b, int64_t cols, const int64_t* rows,
                                 int64_t n, T* out) = 0;
  virtual void add(T* dst, const T* src, int64_t n) = 0;
  virtual void scale_rows(T* x, int64_t n, int64_t cols, const T* scale) = 0;
  virtual void pack_backward_rows(const T* grad_x, int64_t n, int64_t hidden, const int64_t* rows,
                                  const int32_t* slots, const T* grad_weight, int top_k,
                                  int64_t num_rows, T* back_rows) = 0;
  virtual void unpack_backward_rows(const T* back_rows, int64_t tokens, int64_t hidden, int top_k,
                                    T* grad_x, T* grad_weights) = 0;
};

// The backend named by options (or SWITCHYARD_BACKEND). Throws Error(invalid_argument) naming the
// choices for an unknown name or a precision the backend cannot compute in, and for a backend
// this build lacks.
template <typename T>
std::unique_ptr<Backend<T>> make_backend(const BackendOptions& options = {});

// "native" or "bf16"; throws Error(invalid_argument) naming the choices.
ComputePrecision parse_compute_precision(const std::string& name);
const char* compute_precision_name(ComputePrecision compute);

}  // namespace switchyard::kernels
