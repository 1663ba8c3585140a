// The router of the layer: gate GEMM, scores, group-limited top-k, routing weights and the global
// load statistics (forward), and the gradients back through weights, scores, logits to x and the
// gate (backward). Semantics: ../shared/DESIGN.md "Routing semantics".
#include "runtime/moe_layer.h"

#include "runtime/fault_injection.h"

namespace switchyard {

template <typename T>
kernels::AuxLosses MoeLayer<T>::route(const T* x, MoeSaved<T>& s, T* weights,
                                      const LocalStatus& status) {
  const int64_t tokens = s.tokens;
  const int64_t H = config_.hidden;
  const int E = config_.num_experts;
  const int K = config_.top_k;
  const kernels::RouterOptions router = config_.router_options();
  ScopedPhase phase(times_.gate);
  TraceSpan trace(tracer_, TracePhase::gate);
  kernels::RouterStats stats(E);
  // A rank whose call failed its own checks routes nothing: it only joins the statistics'
  // all-reduce below, so that its peers learn of the failure there.
  if (!status.failed()) {
    s.logits.resize(tokens * E);
    backend_->gemm(false, true, tokens, E, H, T(1), x, H, params_.gate_weight.data(), H, T(0),
                   s.logits.data(), E, kernels::ParamOperand::b, kernels::GemmPrecision::native);
    s.scores.resize(tokens * E);
    backend_->compute_scores(s.logits.data(), tokens, E, config_.scoring, s.scores.data());
    s.idx.resize(tokens * K);
    backend_->select_experts(s.scores.data(), config_.selection_bias ? bias_.data() : nullptr,
                             tokens, E, router, s.idx.data());
    backend_->routing_weights(s.scores.data(), s.idx.data(), tokens, E, router, weights);
    backend_->accumulate_router_stats(s.logits.data(), s.scores.data(), s.idx.data(), tokens, E,
                                      K, stats);
  }
  // The forward's first collective carries, besides the statistics, how many ranks failed: the
  // good path pays one double more.
  std::vector<double> reduced(stats.flat().begin(), stats.flat().end());
  reduced.push_back(status.failed() ? 1.0 : 0.0);
  {
    inject_fault(FaultPhase::gate, comm_.rank());
    comm_.allreduce_sum(reduced.data(), reduced.size());
  }
  if (reduced.back() != 0) raise_collective_failure(comm_, "forward", status);
  std::copy(reduced.begin(), reduced.end() - 1, stats.flat().begin());
  const kernels::AuxLosses aux = kernels::aux_losses(stats, K, device_of_expert_, comm_.size());
  last_load_.assign(stats.counts(), stats.counts() + E);
  s.global_stats = std::move(stats);
  return aux;
}

template <typename T>
void MoeLayer<T>::router_backward(const MoeSaved<T>& s, const T* grad_weights, T* grad_x,
                                  T* gate_grad) {
  const int64_t tokens = s.tokens;
  const int64_t H = config_.hidden;
  const int E = config_.num_experts;
  const int K = config_.top_k;
  const kernels::RouterOptions router = config_.router_options();
  std::vector<T> grad_scores(tokens * E, T(0));
  backend_->routing_weights_backward(s.scores.data(), s.idx.data(), grad_weights, tokens, E, router,
                                     grad_scores.data());
  if (config_.aux_expert_alpha > 0 || config_.aux_device_alpha > 0) {
    const auto coef =
        kernels::balance_score_grad(s.global_stats, K, device_of_expert_, comm_.size(),
                                    config_.aux_expert_alpha, config_.aux_device_alpha);
    backend_->add_balance_grad(coef.data(), tokens, E, grad_scores.data());
  }
  std::vector<T> grad_logits(tokens * E);
  backend_->scores_backward(s.scores.data(), grad_scores.data(), tokens, E, config_.scoring,
                            grad_logits.data());
  if (config_.z_loss_alpha > 0) {
    backend_->z_loss_backward(s.logits.data(), tokens, E, config_.z_loss_alpha,
                              s.global_stats.tokens(), grad_logits.data());
  }
  backend_->gemm(false, false, tokens, H, E, T(1), grad_logits.data(), E,
                 params_.gate_weight.data(), H, T(1), grad_x, H, kernels::ParamOperand::b,
                 kernels::GemmPrecision::native);
  backend_->gemm(true, false, E, H, tokens, T(1), grad_logits.data(), E, s.x.data(), H, T(0),
                 gate_grad, H, kernels::ParamOperand::none, kernels::GemmPrecision::native);
}

template kernels::AuxLosses MoeLayer<float>::route(const float*, MoeSaved<float>&, float*,
                                                   const LocalStatus&);
template kernels::AuxLosses MoeLayer<double>::route(const double*, MoeSaved<double>&, double*,
                                                    const LocalStatus&);
template void MoeLayer<float>::router_backward(const MoeSaved<float>&, const float*, float*,
                                               float*);
template void MoeLayer<double>::router_backward(const MoeSaved<double>&, const double*, double*,
                                                double*);

}  // namespace switchyard
