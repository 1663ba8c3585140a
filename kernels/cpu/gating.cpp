#include "kernels/gating.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "kernels/argument_checks.h"
#include "kernels/cpu/math.h"

namespace switchyard::kernels {
namespace {

using detail::check_groups;
using detail::check_router_shape;
using detail::check_top_k;

// Out-of-range ids would read outside the score rows, so they are rejected before any access.
void check_idx(const char* fn, const int32_t* idx, int64_t tokens, int experts, int top_k) {
  for (int64_t i = 0; i < tokens * top_k; ++i) {
    if (idx[i] < 0 || idx[i] >= experts) {
      detail::invalid_argument(fn, ": idx[", i / top_k, ",", i % top_k, "] = ", idx[i],
                               " is not an expert in [0, ", experts, ")");
    }
  }
}

// Strict "ranks before" for top-k: higher value first, ties to the lower index, which makes
// routing deterministic (DESIGN rule 4).
template <typename T>
auto ranks_before(const T* value) {
  return [value](int a, int b) { return value[a] > value[b] || (value[a] == value[b] && a < b); };
}

// A group's rank: V3 sums its two largest selection scores (just the one in a group of one
// expert), V2 takes its largest.
template <typename T>
T group_score(const T* sel, int size, GroupScore kind) {
  T first = sel[0];
  T second = -std::numeric_limits<T>::infinity();
  for (int i = 1; i < size; ++i) {
    if (sel[i] > first) {
      second = first;
      first = sel[i];
    } else if (sel[i] > second) {
      second = sel[i];
    }
  }
  return kind == GroupScore::max || size == 1 ? first : first + second;
}

}  // namespace

template <typename T>
void compute_scores(const T* logits, int64_t tokens, int experts, ScoreFunc func, T* scores) {
  check_router_shape("compute_scores", tokens, experts);
  for (int64_t t = 0; t < tokens; ++t) {
    const T* l = logits + t * experts;
    T* s = scores + t * experts;
    if (func == ScoreFunc::sigmoid) {
      for (int e = 0; e < experts; ++e) s[e] = detail::sigmoid(l[e]);
      continue;
    }
    const T m = *std::max_element(l, l + experts);
    T sum = 0;
    for (int e = 0; e < experts; ++e) sum += s[e] = std::exp(l[e] - m);
    for (int e = 0; e < experts; ++e) s[e] /= sum;
  }
}

template <typename T>
void select_experts(const T* scores, const T* bias, int64_t tokens, int experts,
                    const RouterOptions& opts, int32_t* idx) {
  check_router_shape("select_experts", tokens, experts);
  check_top_k("select_experts", experts, opts);
  check_groups(experts, opts);
  const int group_size = experts / opts.n_group;
  const bool limit_groups = opts.topk_group < opts.n_group;
  std::vector<T> sel(experts);
  std::vector<T> gscore(opts.n_group);
  std::vector<int> groups(opts.n_group);
  std::vector<int> candidates;
  candidates.reserve(experts);
  for (int64_t t = 0; t < tokens; ++t) {
    const T* s = scores + t * experts;
    for (int e = 0; e < experts; ++e) sel[e] = bias ? s[e] + bias[e] : s[e];
    // Experts of dropped groups are left out of the candidates altogether: the -inf mask of
    // DESIGN rule 3. (Filling them with 0, as Hugging Face does, would let them beat kept experts
    // whose biased score is negative.)
    candidates.clear();
    if (limit_groups) {
      for (int g = 0; g < opts.n_group; ++g) {
        gscore[g] = group_score(sel.data() + g * group_size, group_size, opts.group_score);
      }
      std::iota(groups.begin(), groups.end(), 0);
      std::partial_sort(groups.begin(), groups.begin() + opts.topk_group, groups.end(),
                        ranks_before(gscore.data()));
      for (int i = 0; i < opts.topk_group; ++i) {
        for (int j = 0; j < group_size; ++j) candidates.push_back(groups[i] * group_size + j);
      }
    } else {
      for (int e = 0; e < experts; ++e) candidates.push_back(e);
    }
    std::partial_sort(candidates.begin(), candidates.begin() + opts.top_k, candidates.end(),
                      ranks_before(sel.data()));
    std::copy_n(candidates.begin(), opts.top_k, idx + t * opts.top_k);
  }
}

template <typename T>
void routing_weights(const T* scores, const int32_t* idx, int64_t tokens, int experts,
                     const RouterOptions& opts, T* weights) {
  check_router_shape("routing_weights", tokens, experts);
  check_top_k("routing_weights", experts, opts);
  check_idx("routing_weights", idx, tokens, experts, opts.top_k);
  const int k = opts.top_k;
  const T scale = static_cast<T>(opts.routed_scaling_factor);
  for (int64_t t = 0; t < tokens; ++t) {
    const T* s = scores + t * experts;
    T* w = weights + t * k;
    T sum = 0;
    for (int j = 0; j < k; ++j) sum += w[j] = s[idx[t * k + j]];
    // No epsilon: softmax and sigmoid scores are positive, and an epsilon would make the weights
    // differ from the reference implementations.
    const T factor = opts.norm_topk_prob ? scale / sum : scale;
    for (int j = 0; j < k; ++j) w[j] *= factor;
  }
}

template <typename T>
void routing_weights_backward(const T* scores, const int32_t* idx, const T* grad_weights,
                              int64_t tokens, int experts, const RouterOptions& opts,
                              T* grad_scores) {
  check_router_shape("routing_weights_backward", tokens, experts);
  check_top_k("routing_weights_backward", experts, opts);
  check_idx("routing_weights_backward", idx, tokens, experts, opts.top_k);
  const int k = opts.top_k;
  const T scale = static_cast<T>(opts.routed_scaling_factor);
  for (int64_t t = 0; t < tokens; ++t) {
    const T* s = scores + t * experts;
    const T* gw = grad_weights + t * k;
    const int32_t* id = idx + t * k;
    T* gs = grad_scores + t * experts;
    if (!opts.norm_topk_prob) {
      for (int j = 0; j < k; ++j) gs[id[j]] += scale * gw[j];
      continue;
    }
    // w_j = c s_j / S with S = sum_k s_k:  dL/ds_j = c/S (g_j - sum_k g_k s_k / S).
    T sum = 0;
    T dot = 0;
    for (int j = 0; j < k; ++j) {
      sum += s[id[j]];
      dot += gw[j] * s[id[j]];
    }
    for (int j = 0; j < k; ++j) gs[id[j]] += scale / sum * (gw[j] - dot / sum);
  }
}

template <typename T>
void scores_backward(const T* scores, const T* grad_scores, int64_t tokens, int experts,
                     ScoreFunc func, T* grad_logits) {
  check_router_shape("scores_backward", tokens, experts);
  for (int64_t t = 0; t < tokens; ++t) {
    const T* s = scores + t * experts;
    const T* gs = grad_scores + t * experts;
    T* gl = grad_logits + t * experts;
    if (func == ScoreFunc::sigmoid) {
      for (int e = 0; e < experts; ++e) gl[e] = gs[e] * s[e] * (T(1) - s[e]);
      continue;
    }
    T dot = 0;
    for (int e = 0; e < experts; ++e) dot += gs[e] * s[e];
    for (int e = 0; e < experts; ++e) gl[e] = s[e] * (gs[e] - dot);
  }
}

#define SWITCHYARD_INSTANTIATE(T)                                                                \
  template void compute_scores<T>(const T*, int64_t, int, ScoreFunc, T*);                        \
  template void select_experts<T>(const T*, const T*, int64_t, int, const RouterOptions&,        \
                                  int32_t*);                                                     \
  template void routing_weights<T>(const T*, const int32_t*, int64_t, int, const RouterOptions&, \
                                   T*);                                                          \
  template void routing_weights_backward<T>(const T*, const int32_t*, const T*, int64_t, int,    \
                                            const RouterOptions&, T*);                           \
  template void scores_backward<T>(const T*, const T*, int64_t, int, ScoreFunc, T*);
SWITCHYARD_INSTANTIATE(float)
SWITCHYARD_INSTANTIATE(double)
#undef SWITCHYARD_INSTANTIATE

}  // namespace switchyard::kernels
