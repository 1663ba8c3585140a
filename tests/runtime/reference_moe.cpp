#include "tests/runtime/reference_moe.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>

namespace switchyard::testing {

namespace {

double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// Index of the largest value among those not yet taken; the lowest index wins a tie.
int argmax_untaken(const std::vector<double>& v, const std::vector<bool>& taken) {
  int best = -1;
  for (int i = 0; i < static_cast<int>(v.size()); ++i) {
    if (taken[i]) continue;
    if (best < 0 || v[i] > v[best]) best = i;
  }
  return best;
}

std::vector<int> route_token(const MoeConfig& c, const std::vector<double>& sel) {
  const int E = c.num_experts, G = c.n_group, per = E / G;
  std::vector<double> masked = sel;
  if (G > 1) {
    std::vector<double> group_score(G);
    for (int g = 0; g < G; ++g) {
      std::vector<double> members(sel.begin() + g * per, sel.begin() + (g + 1) * per);
      std::sort(members.begin(), members.end(), std::greater<>());
      group_score[g] = c.group_score == kernels::GroupScore::max ? members[0]
                                                                  : members[0] + members[1];
    }
    std::vector<bool> kept(G, false);
    for (int i = 0; i < c.topk_group; ++i) kept[argmax_untaken(group_score, kept)] = true;
    for (int e = 0; e < E; ++e) {
      if (!kept[e / per]) masked[e] = -std::numeric_limits<double>::infinity();
    }
  }
  std::vector<bool> taken(E, false);
  std::vector<int> chosen;
  for (int k = 0; k < c.top_k; ++k) {
    const int e = argmax_untaken(masked, taken);
    taken[e] = true;
    chosen.push_back(e);
  }
  return chosen;
}

struct Ffn {
  std::span<const double> wg;  // [I, H]
  std::span<const double> wu;  // [I, H]
  std::span<const double> wd;  // [H, I]
  int64_t H, I;
};

// out = down(silu(gate x) * up x); keeps the pre-activations for ffn_backward.
void ffn_forward(const Ffn& f, const double* x, std::vector<double>& g, std::vector<double>& u,
                 std::vector<double>& out) {
  g.assign(f.I, 0.0);
  u.assign(f.I, 0.0);
  out.assign(f.H, 0.0);
  for (int64_t i = 0; i < f.I; ++i) {
    for (int64_t h = 0; h < f.H; ++h) {
      g[i] += f.wg[i * f.H + h] * x[h];
      u[i] += f.wu[i * f.H + h] * x[h];
    }
  }
  for (int64_t h = 0; h < f.H; ++h) {
    for (int64_t i = 0; i < f.I; ++i) out[h] += f.wd[h * f.I + i] * g[i] * sigmoid(g[i]) * u[i];
  }
}

void ffn_backward(const Ffn& f, const double* x, const std::vector<double>& g,
                  const std::vector<double>& u, const std::vector<double>& grad_out, double* grad_x,
                  SwigluParams<double>& grads) {
  for (int64_t i = 0; i < f.I; ++i) {
    const double sg = sigmoid(g[i]);
    const double silu = g[i] * sg;
    double grad_act = 0;
    for (int64_t h = 0; h < f.H; ++h) {
      grad_act += f.wd[h * f.I + i] * grad_out[h];
      grads.down_proj[h * f.I + i] += grad_out[h] * silu * u[i];
    }
    const double grad_g = grad_act * u[i] * sg * (1 + g[i] * (1 - sg));
    const double grad_u = grad_act * silu;
    for (int64_t h = 0; h < f.H; ++h) {
      grad_x[h] += f.wg[i * f.H + h] * grad_g + f.wu[i * f.H + h] * grad_u;
      grads.gate_proj[i * f.H + h] += grad_g * x[h];
      grads.up_proj[i * f.H + h] += grad_u * x[h];
    }
  }
}

}  // namespace

ReferenceResult reference_moe(const MoeConfig& c, const MoeParams<double>& params,
                              const std::vector<double>& bias,
                              const std::vector<int>& device_of_expert, int num_devices,
                              const std::vector<double>& x, const std::vector<double>& grad_y) {
  const int64_t H = c.hidden, I = c.intermediate;
  const int E = c.num_experts, K = c.top_k;
  const int64_t T = static_cast<int64_t>(x.size()) / H;
  std::vector<int> all_experts(E);
  for (int e = 0; e < E; ++e) all_experts[e] = e;

  ReferenceResult r;
  r.y.assign(T * H, 0.0);
  r.grad_x.assign(T * H, 0.0);
  r.idx.assign(T * K, 0);
  r.grads = MoeParams<double>(c, all_experts);

  // Router forward for every token, and the global statistics of the aux losses.
  std::vector<std::vector<double>> logits(T, std::vector<double>(E)), scores = logits;
  std::vector<double> lse(T), counts(E, 0.0), score_sum(E, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    double mx = -std::numeric_limits<double>::infinity();
    for (int e = 0; e < E; ++e) {
      double v = 0;
      for (int64_t h = 0; h < H; ++h) v += x[t * H + h] * params.gate_weight[e * H + h];
      logits[t][e] = v;
      mx = std::max(mx, v);
    }
    double z = 0;
    for (int e = 0; e < E; ++e) z += std::exp(logits[t][e] - mx);
    lse[t] = mx + std::log(z);
    for (int e = 0; e < E; ++e) {
      scores[t][e] = c.scoring == kernels::ScoreFunc::softmax ? std::exp(logits[t][e] - lse[t])
                                                               : sigmoid(logits[t][e]);
      score_sum[e] += scores[t][e];
    }
    std::vector<double> sel = scores[t];
    if (c.selection_bias) {
      for (int e = 0; e < E; ++e) sel[e] += bias[e];
    }
    const auto chosen = route_token(c, sel);
    for (int k = 0; k < K; ++k) {
      r.idx[t * K + k] = chosen[k];
      counts[chosen[k]] += 1;
    }
  }
  std::vector<double> f(E, 0.0), fdev(num_devices, 0.0), pdev(num_devices, 0.0);
  std::vector<int> experts_on(num_devices, 0);
  if (T > 0) {
    for (int e = 0; e < E; ++e) {
      f[e] = E * counts[e] / (double(K) * T);
      const double p = score_sum[e] / T;
      r.expert_balance += f[e] * p;
      fdev[device_of_expert[e]] += f[e];
      pdev[device_of_expert[e]] += p;
      experts_on[device_of_expert[e]] += 1;
    }
    for (int d = 0; d < num_devices; ++d) {
      if (experts_on[d] == 0) continue;
      fdev[d] /= experts_on[d];
      r.device_balance += fdev[d] * pdev[d];
    }
    for (int64_t t = 0; t < T; ++t) r.z_loss += lse[t] * lse[t] / T;
  }

  std::vector<double> g, u, out, grad_out(H);
  for (int64_t t = 0; t < T; ++t) {
    const double* xt = &x[t * H];
    const double* gy = &grad_y[t * H];
    double* gx = &r.grad_x[t * H];

    // Routed experts: y += w_k expert(x); grad of w_k is dot(expert(x), grad_y).
    double zsum = 0;
    for (int k = 0; k < K; ++k) zsum += scores[t][r.idx[t * K + k]];
    std::vector<double> w(K), grad_w(K);
    for (int k = 0; k < K; ++k) {
      const double s = scores[t][r.idx[t * K + k]];
      w[k] = (c.norm_topk_prob ? s / zsum : s) * c.routed_scaling_factor;
    }
    for (int k = 0; k < K; ++k) {
      const int e = r.idx[t * K + k];
      const Ffn ffn{params.experts[e].gate_proj, params.experts[e].up_proj,
                    params.experts[e].down_proj, H, I};
      ffn_forward(ffn, xt, g, u, out);
      grad_w[k] = 0;
      for (int64_t h = 0; h < H; ++h) {
        r.y[t * H + h] += w[k] * out[h];
        grad_w[k] += out[h] * gy[h];
        grad_out[h] = w[k] * gy[h];
      }
      ffn_backward(ffn, xt, g, u, grad_out, gx, r.grads.experts[e]);
    }
    if (c.num_shared > 0) {
      const Ffn ffn{params.shared.gate_proj, params.shared.up_proj, params.shared.down_proj, H,
                    c.num_shared * I};
      ffn_forward(ffn, xt, g, u, out);
      for (int64_t h = 0; h < H; ++h) r.y[t * H + h] += out[h];
      ffn_backward(ffn, xt, g, u, std::vector<double>(gy, gy + H), gx, r.grads.shared);
    }

    // Router backward.
    std::vector<double> grad_s(E, 0.0);
    double gw_dot_s = 0;
    for (int k = 0; k < K; ++k) gw_dot_s += grad_w[k] * scores[t][r.idx[t * K + k]];
    for (int k = 0; k < K; ++k) {
      const int e = r.idx[t * K + k];
      grad_s[e] += c.routed_scaling_factor *
                   (c.norm_topk_prob ? grad_w[k] / zsum - gw_dot_s / (zsum * zsum) : grad_w[k]);
    }
    for (int e = 0; e < E; ++e) {
      grad_s[e] += (c.aux_expert_alpha * f[e] + c.aux_device_alpha * fdev[device_of_expert[e]]) / T;
    }
    std::vector<double> grad_logit(E);
    double dot = 0;
    for (int e = 0; e < E; ++e) dot += grad_s[e] * scores[t][e];
    for (int e = 0; e < E; ++e) {
      const double s = scores[t][e];
      grad_logit[e] = c.scoring == kernels::ScoreFunc::softmax ? s * (grad_s[e] - dot)
                                                                : grad_s[e] * s * (1 - s);
      grad_logit[e] += c.z_loss_alpha * 2.0 * lse[t] * std::exp(logits[t][e] - lse[t]) / T;
    }
    for (int e = 0; e < E; ++e) {
      for (int64_t h = 0; h < H; ++h) {
        gx[h] += grad_logit[e] * params.gate_weight[e * H + h];
        r.grads.gate_weight[e * H + h] += grad_logit[e] * xt[h];
      }
    }
  }
  return r;
}

}  // namespace switchyard::testing
