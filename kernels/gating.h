// Router: scores, group-limited top-k selection with an optional selection bias, routing weights,
// and their backward passes. Semantics follow ../shared/DESIGN.md "Routing semantics" exactly.
#pragma once

#include <cstdint>

namespace switchyard::kernels {

enum class ScoreFunc { softmax, sigmoid };

// How a group of experts is ranked: DeepSeek-V3 sums the two largest selection scores of the
// group; DeepSeek-V2 takes the largest.
enum class GroupScore { top2_sum, max };

struct RouterOptions {
  ScoreFunc score = ScoreFunc::softmax;
  int top_k = 1;
  int n_group = 1;     // experts are split into n_group contiguous blocks of E / n_group
  int topk_group = 1;  // groups kept per token; experts of the other groups are masked to -inf
  GroupScore group_score = GroupScore::top2_sum;
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;
};

// scores[t,e] = softmax(logits[t,:])[e] (max-subtracted) or sigmoid(logits[t,e]).
template <typename T>
void compute_scores(const T* logits, int64_t tokens, int experts, ScoreFunc func, T* scores);

// idx[t, 0..top_k) = experts chosen for token t, in descending order of the selection score
// s_sel = scores + bias (bias may be nullptr). Groups as in RouterOptions. Ties go to the lower
// index, for groups and for experts, so routing is deterministic.
template <typename T>
void select_experts(const T* scores, const T* bias, int64_t tokens, int experts,
                    const RouterOptions& opts, int32_t* idx);

// weights[t,k] = scores[t, idx[t,k]], divided by its sum over k if norm_topk_prob, then times
// routed_scaling_factor. Uses the unbiased scores only.
template <typename T>
void routing_weights(const T* scores, const int32_t* idx, int64_t tokens, int experts,
                     const RouterOptions& opts, T* weights);

// grad_scores[t,e] += d(sum_k grad_weights[t,k] * weights[t,k]) / d scores[t,e]
// (non-zero only for the selected experts). Selection itself carries no gradient.
template <typename T>
void routing_weights_backward(const T* scores, const int32_t* idx, const T* grad_weights,
                              int64_t tokens, int experts, const RouterOptions& opts,
                              T* grad_scores);

// grad_logits[t,e] = d/d logits of sum(grad_scores * scores), through softmax or sigmoid.
// Overwrites grad_logits.
template <typename T>
void scores_backward(const T* scores, const T* grad_scores, int64_t tokens, int experts,
                     ScoreFunc func, T* grad_logits);

}  // namespace switchyard::kernels
