#include "runtime/adam.h"

#include <cmath>

#include <fmt/format.h>

#include "base/error.h"

namespace switchyard {

template <typename T>
void adam_update(std::span<T> param, std::span<const T> grad, std::span<T> m, std::span<T> v,
                 const AdamOptions& o, int64_t step) {
  const double b1 = o.beta1, b2 = o.beta2;
  const double c1 = 1.0 - std::pow(b1, double(step));
  const double c2 = 1.0 - std::pow(b2, double(step));
  for (size_t j = 0; j < param.size(); ++j) {
    const double g = grad[j];
    const double mj = b1 * m[j] + (1 - b1) * g;
    const double vj = b2 * v[j] + (1 - b2) * g * g;
    m[j] = static_cast<T>(mj);
    v[j] = static_cast<T>(vj);
    param[j] -= static_cast<T>(o.lr * (mj / c1) / (std::sqrt(vj / c2) + o.eps));
  }
}

template <typename T>
MoeAdam<T>::MoeAdam(AdamOptions options, const MoeConfig& config,
                    const std::vector<int>& expert_ids)
    : options_(options), m_(config, expert_ids), v_(config, expert_ids) {}

template <typename T>
void MoeAdam<T>::step(MoeParams<T>& params, MoeParams<T>& grads) {
  require(params.expert_ids == m_.expert_ids && grads.expert_ids == m_.expert_ids,
          "MoeAdam.step: the parameters, gradients and optimizer state hold different experts; "
          "migrate the optimizer state with MoeLayer::apply_placement(placement, adam.state())");
  grads.zero_fresh();  // a gradient bound fresh and never written is zero
  auto p = params.tensors(), g = grads.tensors(), m = m_.tensors(), v = v_.tensors();
  require(p.size() == g.size() && p.size() == m.size(),
          fmt::format("MoeAdam.step: {} parameter tensors, {} gradients, {} in the state",
                      p.size(), g.size(), m.size()));
  for (size_t i = 0; i < p.size(); ++i) {
    require(p[i].size() == g[i].size() && p[i].size() == m[i].size(),
            fmt::format("MoeAdam.step: tensor {} has {} parameters, {} gradients, {} in the state",
                        i, p[i].size(), g[i].size(), m[i].size()));
  }
  ++step_;
  for (size_t i = 0; i < p.size(); ++i) {
    adam_update<T>(p[i], g[i], m[i], v[i], options_, step_);
  }
}

template void adam_update(std::span<float>, std::span<const float>, std::span<float>,
                          std::span<float>, const AdamOptions&, int64_t);
template void adam_update(std::span<double>, std::span<const double>, std::span<double>,
                          std::span<double>, const AdamOptions&, int64_t);
template class MoeAdam<float>;
template class MoeAdam<double>;

}  // namespace switchyard
