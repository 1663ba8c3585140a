// Router and aux-loss kernels of the cuda backend (launch.h), mirroring kernels/cpu/gating.cpp and
// kernels/cpu/aux_loss.cpp: one warp (or thread) per token, sums in a fixed order.
#include <algorithm>
#include <climits>

#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/launch.h"

namespace switchyard::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / kWarp;
// select_experts keeps a token's selection scores and flags in shared memory (one warp a block).
constexpr int kSelectSharedBytes = 48 * 1024;
// Tokens per partial sum of router_stats' score sums.
constexpr int64_t kStatsChunk = 256;

unsigned blocks_for(int64_t count, int per_block = kThreads) {
  return static_cast<unsigned>(std::min<int64_t>((count + per_block - 1) / per_block, 1 << 20));
}

// The token of this warp in a grid-stride loop over tokens, one warp each.
__device__ inline int64_t warp_index() {
  return (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
}
__device__ inline int64_t warp_stride() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x / kWarp;
}

__global__ void softmax_kernel(const float* logits, int64_t tokens, int experts, float* scores) {
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  for (int64_t t = warp_index(); t < tokens; t += warp_stride()) {
    const float* l = logits + t * experts;
    float* s = scores + t * experts;
    float m = l[0];
    for (int e = lane; e < experts; e += kWarp) m = m < l[e] ? l[e] : m;
    m = warp_max(m);
    float part = 0.f;
    for (int e = lane; e < experts; e += kWarp) {
      s[e] = expf(sum(l[e], -m));
      part = sum(part, s[e]);
    }
    const float total = warp_sum(part);
    for (int e = lane; e < experts; e += kWarp) s[e] = __fdiv_rn(s[e], total);
  }
}

__global__ void sigmoid_kernel(const float* logits, int64_t count, float* scores) {
  for (int64_t i = grid_index(); i < count; i += grid_stride()) scores[i] = sigmoid(logits[i]);
}

// "a ranks before b" of kernels/cpu/gating.cpp: the higher value, ties to the lower index. An
// index of INT_MAX is "no candidate", after every real one.
__device__ inline bool ranks_before(float va, int ia, float vb, int ib) {
  if (ib == INT_MAX) return ia != INT_MAX;
  if (ia == INT_MAX) return false;
  return va > vb || (va == vb && ia < ib);
}

// The best of the candidates (flag 0) among values[0..count), ties to the lower index, the same
// on every lane (lane 0's answer is broadcast). INT_MAX when there is none.
__device__ int warp_best(const float* values, const unsigned char* flags, int count, int lane) {
  float best_v = 0.f;
  int best_i = INT_MAX;
  for (int i = lane; i < count; i += kWarp) {
    if (flags[i] == 0 && ranks_before(values[i], i, best_v, best_i)) {
      best_v = values[i];
      best_i = i;
    }
  }
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const float v = __shfl_xor_sync(kFullMask, best_v, offset);
    const int i = __shfl_xor_sync(kFullMask, best_i, offset);
    if (ranks_before(v, i, best_v, best_i)) {
      best_v = v;
      best_i = i;
    }
  }
  return __shfl_sync(kFullMask, best_i, 0);
}

// One warp (one block) per token. Shared memory: sel[E], gscore[G], flags[E], group flags[G].
// A flag is 0 for a candidate, 1 once taken or masked.
__global__ void select_experts_kernel(const float* scores, const float* bias, int64_t tokens,
                                      int experts, int top_k, int n_group, int topk_group,
                                      bool group_max, int32_t* idx) {
  extern __shared__ float shared[];
  float* sel = shared;
  float* gscore = sel + experts;
  unsigned char* flags = reinterpret_cast<unsigned char*>(gscore + n_group);
  unsigned char* gflags = flags + experts;
  const int lane = static_cast<int>(threadIdx.x);
  const int group_size = experts / n_group;
  const bool limit_groups = topk_group < n_group;
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    const float* s = scores + t * experts;
    for (int e = lane; e < experts; e += kWarp) {
      sel[e] = bias != nullptr ? sum(s[e], bias[e]) : s[e];
      flags[e] = 0;
    }
    __syncwarp();
    if (limit_groups) {
      // A group's score exactly as group_score() of gating.cpp computes it, one lane a group.
      for (int g = lane; g < n_group; g += kWarp) {
        const float* gs = sel + g * group_size;
        float first = gs[0];
        float second = -INFINITY;
        for (int i = 1; i < group_size; ++i) {
          if (gs[i] > first) {
            second = first;
            first = gs[i];
          } else if (gs[i] > second) {
            second = gs[i];
          }
        }
        gscore[g] = group_max || group_size == 1 ? first : sum(first, second);
        gflags[g] = 0;
      }
      __syncwarp();
      for (int r = 0; r < topk_group; ++r) {
        const int g = warp_best(gscore, gflags, n_group, lane);
        if (lane == 0 && g != INT_MAX) gflags[g] = 1;
        __syncwarp();
      }
      // Experts of dropped groups leave the candidates: DESIGN rule 3's -inf mask.
      for (int e = lane; e < experts; e += kWarp) flags[e] = gflags[e / group_size] == 1 ? 0 : 1;
      __syncwarp();
    }
    for (int j = 0; j < top_k; ++j) {
      const int e = warp_best(sel, flags, experts, lane);
      if (lane == 0) {
        idx[t * top_k + j] = e;
        if (e != INT_MAX) flags[e] = 1;
      }
      __syncwarp();
    }
  }
}

__global__ void routing_weights_kernel(const float* scores, const int32_t* idx, int64_t tokens,
                                       int experts, int k, bool norm, float scale,
                                       float* weights) {
  for (int64_t t = grid_index(); t < tokens; t += grid_stride()) {
    const float* s = scores + t * experts;
    float* w = weights + t * k;
    float total = 0.f;
    for (int j = 0; j < k; ++j) total = sum(total, w[j] = s[idx[t * k + j]]);
    const float factor = norm ? __fdiv_rn(scale, total) : scale;
    for (int j = 0; j < k; ++j) w[j] = mul(w[j], factor);
  }
}

__global__ void routing_weights_backward_kernel(const float* scores, const int32_t* idx,
                                                const float* grad_weights, int64_t tokens,
                                                int experts, int k, bool norm, float scale,
                                                float* grad_scores) {
  for (int64_t t = grid_index(); t < tokens; t += grid_stride()) {
    const float* s = scores + t * experts;
    const float* gw = grad_weights + t * k;
    const int32_t* id = idx + t * k;
    float* gs = grad_scores + t * experts;
    if (!norm) {
      for (int j = 0; j < k; ++j) gs[id[j]] = sum(gs[id[j]], mul(scale, gw[j]));
      continue;
    }
    // w_j = c s_j / S with S = sum_k s_k:  dL/ds_j = c/S (g_j - sum_k g_k s_k / S).
    float total = 0.f;
    float dot = 0.f;
    for (int j = 0; j < k; ++j) {
      total = sum(total, s[id[j]]);
      dot = sum(dot, mul(gw[j], s[id[j]]));
    }
    const float c = __fdiv_rn(scale, total);
    const float mean = __fdiv_rn(dot, total);
    for (int j = 0; j < k; ++j) gs[id[j]] = sum(gs[id[j]], mul(c, sum(gw[j], -mean)));
  }
}

__global__ void scores_backward_kernel(const float* scores, const float* grad_scores,
                                       int64_t tokens, int experts, bool sigmoid,
                                       float* grad_logits) {
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  for (int64_t t = warp_index(); t < tokens; t += warp_stride()) {
    const float* s = scores + t * experts;
    const float* gs = grad_scores + t * experts;
    float* gl = grad_logits + t * experts;
    if (sigmoid) {
      for (int e = lane; e < experts; e += kWarp) gl[e] = mul(mul(gs[e], s[e]), sum(1.f, -s[e]));
      continue;
    }
    float part = 0.f;
    for (int e = lane; e < experts; e += kWarp) part = sum(part, mul(gs[e], s[e]));
    const float dot = warp_sum(part);
    for (int e = lane; e < experts; e += kWarp) gl[e] = mul(s[e], sum(gs[e], -dot));
  }
}

__global__ void add_balance_grad_kernel(const double* coef, int64_t tokens, int experts,
                                        float* grad_scores) {
  const int64_t count = tokens * experts;
  for (int64_t i = grid_index(); i < count; i += grid_stride()) {
    grad_scores[i] = sum(grad_scores[i], static_cast<float>(coef[i % experts]));
  }
}

// logsumexp(l[0..experts)) in double, shifted by the maximum (kernels/cpu/math.h), per warp.
__device__ double warp_logsumexp(const float* l, int experts, int lane) {
  float m = l[0];
  for (int e = lane; e < experts; e += kWarp) m = m < l[e] ? l[e] : m;
  const double shift = static_cast<double>(warp_max(m));
  double part = 0;
  for (int e = lane; e < experts; e += kWarp) part = sum(part, exp(static_cast<double>(l[e]) - shift));
  return shift + log(warp_sum(part));
}

__global__ void z_loss_backward_kernel(const float* logits, int64_t tokens, int experts,
                                       double factor, float* grad_logits) {
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  for (int64_t t = warp_index(); t < tokens; t += warp_stride()) {
    const float* l = logits + t * experts;
    float* g = grad_logits + t * experts;
    const double lse = warp_logsumexp(l, experts, lane);
    const double f = factor * 2 * lse;
    for (int e = lane; e < experts; e += kWarp) {
      g[e] = sum(g[e], static_cast<float>(f * exp(static_cast<double>(l[e]) - lse)));
    }
  }
}

// Integer atomics: the counts do not depend on the order of the additions.
__global__ void count_experts_kernel(const int32_t* idx, int64_t count,
                                     unsigned long long* counts) {
  for (int64_t i = grid_index(); i < count; i += grid_stride()) atomicAdd(&counts[idx[i]], 1ull);
}

// partial[chunk, e] = sum of scores[t, e] over the chunk's tokens, t ascending.
__global__ void score_partial_kernel(const float* scores, int64_t tokens, int experts,
                                     double* partial) {
  const int e = static_cast<int>(blockIdx.x) * blockDim.x + static_cast<int>(threadIdx.x);
  if (e >= experts) return;
  const int64_t chunk = blockIdx.y;
  const int64_t end = (chunk + 1) * kStatsChunk < tokens ? (chunk + 1) * kStatsChunk : tokens;
  double total = 0;
  for (int64_t t = chunk * kStatsChunk; t < end; ++t) {
    total = sum(total, static_cast<double>(scores[t * experts + e]));
  }
  partial[chunk * experts + e] = total;
}

__global__ void lse_sq_kernel(const float* logits, int64_t tokens, int experts, double* lse_sq) {
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  for (int64_t t = warp_index(); t < tokens; t += warp_stride()) {
    const double lse = warp_logsumexp(logits + t * experts, experts, lane);
    if (lane == 0) lse_sq[t] = mul(lse, lse);
  }
}

// One block of kStatsThreads: out = [counts | score sums over chunks | sum of lse^2].
constexpr int kStatsThreads = 1024;
__global__ void stats_finish_kernel(const unsigned long long* counts, const double* partial,
                                    int64_t chunks, const double* lse_sq, int64_t tokens,
                                    int experts, double* out) {
  __shared__ double tree[kStatsThreads];
  const int tid = static_cast<int>(threadIdx.x);
  for (int e = tid; e < experts; e += kStatsThreads) {
    out[e] = static_cast<double>(counts[e]);
    double total = 0;
    for (int64_t c = 0; c < chunks; ++c) total = sum(total, partial[c * experts + e]);
    out[experts + e] = total;
  }
  double part = 0;
  for (int64_t t = tid; t < tokens; t += kStatsThreads) part = sum(part, lse_sq[t]);
  tree[tid] = part;
  __syncthreads();
  for (int width = kStatsThreads / 2; width > 0; width /= 2) {
    if (tid < width) tree[tid] = sum(tree[tid], tree[tid + width]);
    __syncthreads();
  }
  if (tid == 0) out[2 * experts] = tree[0];
}

int select_shared_bytes(int experts, int n_group) {
  return (experts + n_group) * static_cast<int>(sizeof(float) + 1);
}

}  // namespace

cudaError_t compute_scores(const float* logits, int64_t tokens, int experts, bool sigmoid,
                           float* scores, cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  if (sigmoid) {
    sigmoid_kernel<<<blocks_for(tokens * experts), kThreads, 0, stream>>>(logits, tokens * experts,
                                                                          scores);
  } else {
    softmax_kernel<<<blocks_for(tokens, kWarpsPerBlock), kThreads, 0, stream>>>(logits, tokens,
                                                                                experts, scores);
  }
  return cudaGetLastError();
}

int select_experts_max_experts(int n_group) {
  return kSelectSharedBytes / static_cast<int>(sizeof(float) + 1) - n_group;
}

cudaError_t select_experts(const float* scores, const float* bias, int64_t tokens, int experts,
                           int top_k, int n_group, int topk_group, bool group_max, int32_t* idx,
                           cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(tokens, 1 << 20));
  select_experts_kernel<<<blocks, kWarp, select_shared_bytes(experts, n_group), stream>>>(
      scores, bias, tokens, experts, top_k, n_group, topk_group, group_max, idx);
  return cudaGetLastError();
}

cudaError_t routing_weights(const float* scores, const int32_t* idx, int64_t tokens, int experts,
                            int top_k, bool norm, float scale, float* weights,
                            cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  routing_weights_kernel<<<blocks_for(tokens), kThreads, 0, stream>>>(scores, idx, tokens, experts,
                                                                      top_k, norm, scale, weights);
  return cudaGetLastError();
}

cudaError_t routing_weights_backward(const float* scores, const int32_t* idx,
                                     const float* grad_weights, int64_t tokens, int experts,
                                     int top_k, bool norm, float scale, float* grad_scores,
                                     cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  routing_weights_backward_kernel<<<blocks_for(tokens), kThreads, 0, stream>>>(
      scores, idx, grad_weights, tokens, experts, top_k, norm, scale, grad_scores);
  return cudaGetLastError();
}

cudaError_t scores_backward(const float* scores, const float* grad_scores, int64_t tokens,
                            int experts, bool sigmoid, float* grad_logits, cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  scores_backward_kernel<<<blocks_for(tokens, kWarpsPerBlock), kThreads, 0, stream>>>(
      scores, grad_scores, tokens, experts, sigmoid, grad_logits);
  return cudaGetLastError();
}

cudaError_t add_balance_grad(const double* coef, int64_t tokens, int experts, float* grad_scores,
                             cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  add_balance_grad_kernel<<<blocks_for(tokens * experts), kThreads, 0, stream>>>(
      coef, tokens, experts, grad_scores);
  return cudaGetLastError();
}

cudaError_t z_loss_backward(const float* logits, int64_t tokens, int experts, double factor,
                            float* grad_logits, cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  z_loss_backward_kernel<<<blocks_for(tokens, kWarpsPerBlock), kThreads, 0, stream>>>(
      logits, tokens, experts, factor, grad_logits);
  return cudaGetLastError();
}

int64_t router_stats_work(int64_t tokens, int experts) {
  const int64_t chunks = (tokens + kStatsChunk - 1) / kStatsChunk;
  return chunks * experts + tokens;
}

cudaError_t router_stats(const float* logits, const float* scores, const int32_t* idx,
                         int64_t tokens, int experts, int top_k, double* out, double* work,
                         unsigned long long* counts, cudaStream_t stream) {
  cudaError_t err = cudaMemsetAsync(counts, 0, sizeof(unsigned long long) * experts, stream);
  if (err != cudaSuccess) return err;
  const int64_t chunks = (tokens + kStatsChunk - 1) / kStatsChunk;
  double* partial = work;
  double* lse_sq = work + chunks * experts;
  if (tokens > 0) {
    count_experts_kernel<<<blocks_for(tokens * top_k), kThreads, 0, stream>>>(idx, tokens * top_k,
                                                                              counts);
    const dim3 grid(static_cast<unsigned>((experts + 127) / 128), static_cast<unsigned>(chunks));
    score_partial_kernel<<<grid, 128, 0, stream>>>(scores, tokens, experts, partial);
    lse_sq_kernel<<<blocks_for(tokens, kWarpsPerBlock), kThreads, 0, stream>>>(logits, tokens,
                                                                               experts, lse_sq);
  }
  stats_finish_kernel<<<1, kStatsThreads, 0, stream>>>(counts, partial, chunks, lse_sq, tokens,
                                                       experts, out);
  return cudaGetLastError();
}

}  // namespace switchyard::kernels::cuda
