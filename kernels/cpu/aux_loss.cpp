#include "kernels/aux_loss.h"

#include <cmath>
#include <vector>

#include "kernels/argument_checks.h"
#include "kernels/cpu/math.h"

namespace switchyard::kernels {
namespace {

void check_top_k(const char* fn, int top_k, int experts) {
  if (top_k < 1 || top_k > experts) {
    detail::invalid_argument(fn, ": top_k = ", top_k, " must be in [1, experts = ", experts, "]");
  }
}

// The balance factors of DESIGN rule 7: f_i = E/(K T) count_i per expert, and per device the mean
// f'_d of its experts' f (0 for a device that owns none, which is then skipped).
struct BalanceFactors {
  std::vector<double> f;
  std::vector<double> device_f;
  std::vector<int> device_experts;
};

BalanceFactors balance_factors(const char* fn, const RouterStats& global, int top_k,
                               std::span<const int> device_of_expert, int num_devices) {
  const int experts = global.experts();
  check_top_k(fn, top_k, experts);
  if (device_of_expert.size() != static_cast<size_t>(experts)) {
    detail::invalid_argument(fn, ": device_of_expert has ", device_of_expert.size(),
                             " entries, expected experts = ", experts);
  }
  if (num_devices < 1) detail::invalid_argument(fn, ": num_devices = ", num_devices, " < 1");
  BalanceFactors b{std::vector<double>(experts), std::vector<double>(num_devices),
                   std::vector<int>(num_devices)};
  const double tokens = global.tokens();
  const double per_count = tokens > 0 ? experts / (static_cast<double>(top_k) * tokens) : 0.0;
  for (int e = 0; e < experts; ++e) {
    const int d = device_of_expert[e];
    if (d < 0 || d >= num_devices) {
      detail::invalid_argument(fn, ": device_of_expert[", e, "] = ", d,
                               " is not a device in [0, num_devices = ", num_devices, ")");
    }
    b.f[e] = per_count * global.counts()[e];
    b.device_f[d] += b.f[e];
    ++b.device_experts[d];
  }
  for (int d = 0; d < num_devices; ++d) {
    if (b.device_experts[d] > 0) b.device_f[d] /= b.device_experts[d];
  }
  return b;
}

}  // namespace

template <typename T>
void accumulate_router_stats(const T* logits, const T* scores, const int32_t* idx, int64_t tokens,
                             int experts, int top_k, RouterStats& stats) {
  const char* fn = "accumulate_router_stats";
  if (tokens < 0) detail::invalid_argument(fn, ": tokens = ", tokens, " must be >= 0");
  if (experts != stats.experts()) {
    detail::invalid_argument(fn, ": experts = ", experts,
                             " differs from stats.experts() = ", stats.experts());
  }
  check_top_k(fn, top_k, experts);
  // Checked up front so that a bad id leaves stats as they were.
  for (int64_t i = 0; i < tokens * top_k; ++i) {
    if (idx[i] < 0 || idx[i] >= experts) {
      detail::invalid_argument(fn, ": idx[", i / top_k, ",", i % top_k, "] = ", idx[i],
                               " is not an expert in [0, ", experts, ")");
    }
  }
  double* counts = stats.counts();
  double* score_sums = stats.score_sums();
  for (int64_t t = 0; t < tokens; ++t) {
    for (int j = 0; j < top_k; ++j) counts[idx[t * top_k + j]] += 1;
    for (int e = 0; e < experts; ++e) score_sums[e] += scores[t * experts + e];
    const double lse = detail::logsumexp(logits + t * experts, experts);
    stats.logsumexp_sq_sum() += lse * lse;
  }
  stats.tokens() += static_cast<double>(tokens);
}

AuxLosses aux_losses(const RouterStats& global, int top_k, std::span<const int> device_of_expert,
                     int num_devices) {
  const BalanceFactors b =
      balance_factors("aux_losses", global, top_k, device_of_expert, num_devices);
  const double tokens = global.tokens();
  if (tokens == 0) return {};
  AuxLosses loss;
  std::vector<double> device_p(num_devices);
  for (int e = 0; e < global.experts(); ++e) {
    const double p = global.score_sums()[e] / tokens;
    loss.expert_balance += b.f[e] * p;
    device_p[device_of_expert[e]] += p;
  }
  for (int d = 0; d < num_devices; ++d) {
    if (b.device_experts[d] > 0) loss.device_balance += b.device_f[d] * device_p[d];
  }
  loss.z_loss = global.logsumexp_sq_sum() / tokens;
  return loss;
}

std::vector<double> balance_score_grad(const RouterStats& global, int top_k,
                                       std::span<const int> device_of_expert, int num_devices,
                                       double alpha_expert, double alpha_device) {
  const BalanceFactors b =
      balance_factors("balance_score_grad", global, top_k, device_of_expert, num_devices);
  std::vector<double> coef(global.experts(), 0.0);
  const double tokens = global.tokens();
  if (tokens == 0) return coef;
  // P_i = sum_t s[t,i] / T, so d(sum_i f_i P_i)/d s[t,e] = f_e / T, and the device term gives
  // f'_d / T to every expert e of device d (P'_d sums them with weight 1).
  for (int e = 0; e < global.experts(); ++e) {
    coef[e] = (alpha_expert * b.f[e] + alpha_device * b.device_f[device_of_expert[e]]) / tokens;
  }
  return coef;
}

template <typename T>
void add_balance_grad(const double* coef, int64_t tokens, int experts, T* grad_scores) {
  for (int64_t t = 0; t < tokens; ++t) {
    T* g = grad_scores + t * experts;
    for (int e = 0; e < experts; ++e) g[e] += static_cast<T>(coef[e]);
  }
}

template <typename T>
void z_loss_backward(const T* logits, int64_t tokens, int experts, double alpha_z,
                     double global_tokens, T* grad_logits) {
  if (experts < 1) detail::invalid_argument("z_loss_backward: experts = ", experts, " < 1");
  if (tokens == 0) return;
  if (global_tokens < static_cast<double>(tokens)) {
    detail::invalid_argument("z_loss_backward: global_tokens = ", global_tokens,
                             " is fewer than this rank's tokens = ", tokens);
  }
  // d(lse^2)/d logits = 2 lse softmax(logits), with softmax = exp(logits - lse).
  for (int64_t t = 0; t < tokens; ++t) {
    const T* l = logits + t * experts;
    T* g = grad_logits + t * experts;
    const double lse = detail::logsumexp(l, experts);
    const double factor = alpha_z / global_tokens * 2 * lse;
    for (int e = 0; e < experts; ++e) {
      g[e] += static_cast<T>(factor * std::exp(static_cast<double>(l[e]) - lse));
    }
  }
}

#define SWITCHYARD_INSTANTIATE(T)                                                                 \
  template void accumulate_router_stats<T>(const T*, const T*, const int32_t*, int64_t, int, int, \
                                           RouterStats&);                                         \
  template void add_balance_grad<T>(const double*, int64_t, int, T*);                             \
  template void z_loss_backward<T>(const T*, int64_t, int, double, double, T*);
SWITCHYARD_INSTANTIATE(float)
SWITCHYARD_INSTANTIATE(double)
#undef SWITCHYARD_INSTANTIATE

}  // namespace switchyard::kernels
