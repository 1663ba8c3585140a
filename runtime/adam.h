// Adam (Kingma & Ba) whose moments are laid out like the layer's parameters, so that they travel
// with an expert when the runtime migrates it (MoeLayer::apply_placement takes them along).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "runtime/moe_params.h"

namespace switchyard {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
};

// One Adam update of step number `step` (1-based) on one tensor; moments in the parameters'
// precision, as torch.optim.Adam keeps them.
template <typename T>
void adam_update(std::span<T> param, std::span<const T> grad, std::span<T> m, std::span<T> v,
                 const AdamOptions& options, int64_t step);

template <typename T>
class MoeAdam {
 public:
  MoeAdam(AdamOptions options, const MoeConfig& config, const std::vector<int>& expert_ids);

  // Updates every tensor of params from grads. Throws Error(invalid_argument) before touching
  // anything when params, grads and the moments do not hold the same experts and shapes.
  void step(MoeParams<T>& params, MoeParams<T>& grads);
  int64_t steps() const { return step_; }
  const AdamOptions& options() const { return options_; }
  // Sets the step counter (a checkpoint's, runtime/checkpoint.h, with its moments in state()).
  void set_steps(int64_t steps) { step_ = steps; }
  // The moments, for MoeLayer::apply_placement to migrate with the experts.
  std::vector<MoeParams<T>*> state() { return {&m_, &v_}; }

 private:
  AdamOptions options_;
  int64_t step_ = 0;
  MoeParams<T> m_, v_;
};

}  // namespace switchyard
