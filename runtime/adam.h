// Adam (Kingma & Ba) over a fixed list of tensors, the optimizer the training example uses.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace switchyard {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
};

template <typename T>
class Adam {
 public:
  explicit Adam(AdamOptions options) : options_(options) {}

  // params[i] -= lr * m_hat / (sqrt(v_hat) + eps), from grads[i]. The tensor list must keep the
  // same shapes from step to step; throws Error(invalid_argument) otherwise, before touching any
  // parameter or moment.
  void step(const std::vector<std::span<T>>& params, const std::vector<std::span<T>>& grads);
  int64_t steps() const { return step_; }

 private:
  AdamOptions options_;
  int64_t step_ = 0;
  std::vector<std::vector<T>> m_, v_;  // moments in the parameters' precision, as torch.optim.Adam
};

}  // namespace switchyard
