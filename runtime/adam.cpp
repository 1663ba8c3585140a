#include "runtime/adam.h"

#include <cmath>

#include <fmt/format.h>

#include "runtime/error.h"

namespace switchyard {

template <typename T>
void Adam<T>::step(const std::vector<std::span<T>>& params, const std::vector<std::span<T>>& grads) {
  require(params.size() == grads.size(),
          fmt::format("Adam.step: {} parameter tensors but {} gradient tensors", params.size(),
                      grads.size()));
  if (m_.empty()) {
    for (const auto& p : params) {
      m_.emplace_back(p.size(), T(0));
      v_.emplace_back(p.size(), T(0));
    }
  }
  require(m_.size() == params.size(),
          fmt::format("Adam.step: the optimizer holds state for {} tensors, got {}", m_.size(),
                      params.size()));
  for (size_t i = 0; i < params.size(); ++i) {
    require(params[i].size() == m_[i].size() && grads[i].size() == m_[i].size(),
            fmt::format("Adam.step: tensor {} has {} parameters and {} gradients, state has {}", i,
                        params[i].size(), grads[i].size(), m_[i].size()));
  }
  ++step_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double c1 = 1.0 - std::pow(b1, double(step_));
  const double c2 = 1.0 - std::pow(b2, double(step_));
  for (size_t i = 0; i < params.size(); ++i) {
    auto& m = m_[i];
    auto& v = v_[i];
    for (size_t j = 0; j < m.size(); ++j) {
      const double g = grads[i][j];
      const double mj = b1 * m[j] + (1 - b1) * g;
      const double vj = b2 * v[j] + (1 - b2) * g * g;
      m[j] = static_cast<T>(mj);
      v[j] = static_cast<T>(vj);
      params[i][j] -= static_cast<T>(options_.lr * (mj / c1) / (std::sqrt(vj / c2) + options_.eps));
    }
  }
}

template class Adam<float>;
template class Adam<double>;

}  // namespace switchyard
