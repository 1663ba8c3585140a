// Auxiliary router losses (DESIGN.md routing rule 7): expert-level and device-level balance losses
// and the router z-loss. Statistics are accumulated per rank, summed over ranks by the caller, then
// turned into loss values and per-expert gradient coefficients.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace switchyard::kernels {

// Sums over tokens, laid out flat so that one all-reduce (sum) combines them across ranks:
// [counts(E) | score_sums(E) | logsumexp_sq_sum | tokens].
class RouterStats {
 public:
  explicit RouterStats(int experts) : experts_(experts), data_(2 * experts + 2, 0.0) {}
  int experts() const { return experts_; }
  double* counts() { return data_.data(); }                 // selected (token, expert) pairs
  double* score_sums() { return data_.data() + experts_; }  // sum_t s[t,e], unbiased scores
  double& logsumexp_sq_sum() { return data_[2 * experts_]; }
  double& tokens() { return data_[2 * experts_ + 1]; }
  const double* counts() const { return data_.data(); }
  const double* score_sums() const { return data_.data() + experts_; }
  double logsumexp_sq_sum() const { return data_[2 * experts_]; }
  double tokens() const { return data_[2 * experts_ + 1]; }
  std::span<double> flat() { return data_; }

 private:
  int experts_;
  std::vector<double> data_;
};

// Adds this batch's tokens to stats: counts from idx [tokens, top_k], score sums from scores
// [tokens, experts], logsumexp(logits[t,:])^2 per token, and the token count.
template <typename T>
void accumulate_router_stats(const T* logits, const T* scores, const int32_t* idx, int64_t tokens,
                             int experts, int top_k, RouterStats& stats);

struct AuxLosses {
  double expert_balance = 0;  // sum_i f_i P_i, f_i = E/(K T) count_i, P_i = score_sum_i / T
  double device_balance = 0;  // sum_d f'_d P'_d, f'_d = mean_{j in d} f_j, P'_d = sum_{j in d} P_j
  double z_loss = 0;          // mean_t logsumexp(logits_t)^2
};

// Loss values from globally summed stats. device_of_expert[e] is the device that owns expert e;
// devices that own no expert are skipped. All losses are 0 when stats.tokens() == 0.
AuxLosses aux_losses(const RouterStats& global, int top_k, std::span<const int> device_of_expert,
                     int num_devices);

// coef[e] = d(alpha_expert * expert_balance + alpha_device * device_balance) / d scores[t,e], the
// same for every token t (f is a constant: selection carries no gradient).
std::vector<double> balance_score_grad(const RouterStats& global, int top_k,
                                       std::span<const int> device_of_expert, int num_devices,
                                       double alpha_expert, double alpha_device);

// grad_scores[t,e] += coef[e] for every token.
template <typename T>
void add_balance_grad(const double* coef, int64_t tokens, int experts, T* grad_scores);

// grad_logits[t,:] += alpha_z / global_tokens * d(logsumexp(logits_t)^2) / d logits_t.
template <typename T>
void z_loss_backward(const T* logits, int64_t tokens, int experts, double alpha_z,
                     double global_tokens, T* grad_logits);

}  // namespace switchyard::kernels
