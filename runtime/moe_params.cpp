#include "runtime/moe_params.h"

#include <algorithm>
#include <cmath>

namespace switchyard {

template <typename T>
SwigluParams<T>::SwigluParams(int64_t hidden_size, int64_t inter_size)
    : hidden(hidden_size),
      inter(inter_size),
      gate_proj(inter_size * hidden_size),
      up_proj(inter_size * hidden_size),
      down_proj(hidden_size * inter_size) {}

template <typename T>
kernels::SwigluWeights<T> SwigluParams<T>::weights() const {
  return {gate_proj.data(), up_proj.data(), down_proj.data(), hidden, inter};
}

template <typename T>
kernels::SwigluGrads<T> SwigluParams<T>::grads() {
  return {gate_proj.data(), up_proj.data(), down_proj.data(), all_fresh()};
}

template <typename T>
bool SwigluParams<T>::all_fresh() const {
  return gate_proj.fresh() && up_proj.fresh() && down_proj.fresh();
}

template <typename T>
MoeParams<T>::MoeParams(const MoeConfig& config, std::vector<int> held_experts)
    : hidden(config.hidden),
      gate_weight(static_cast<size_t>(config.num_experts) * config.hidden),
      expert_ids(std::move(held_experts)) {
  std::sort(expert_ids.begin(), expert_ids.end());
  if (config.num_shared > 0) shared = SwigluParams<T>(config.hidden, config.num_shared * config.intermediate);
  experts.reserve(expert_ids.size());
  for (size_t i = 0; i < expert_ids.size(); ++i) {
    experts.emplace_back(config.hidden, config.intermediate);
  }
}

template <typename T>
int MoeParams<T>::local_index(int expert) const {
  auto it = std::lower_bound(expert_ids.begin(), expert_ids.end(), expert);
  if (it == expert_ids.end() || *it != expert) return -1;
  return static_cast<int>(it - expert_ids.begin());
}

template <typename T>
std::vector<std::span<T>> MoeParams<T>::replicated_tensors() {
  std::vector<std::span<T>> out{gate_weight};
  if (!shared.gate_proj.empty()) {
    out.insert(out.end(), {std::span<T>(shared.gate_proj), std::span<T>(shared.up_proj),
                           std::span<T>(shared.down_proj)});
  }
  return out;
}

template <typename T>
std::vector<std::span<T>> MoeParams<T>::tensors() {
  auto out = replicated_tensors();
  for (auto& e : experts) {
    out.insert(out.end(),
               {std::span<T>(e.gate_proj), std::span<T>(e.up_proj), std::span<T>(e.down_proj)});
  }
  return out;
}

template <typename T>
std::vector<ParamTensor<T>*> MoeParams<T>::param_tensors() {
  std::vector<ParamTensor<T>*> out{&gate_weight};
  auto add = [&out](SwigluParams<T>& p) {
    out.insert(out.end(), {&p.gate_proj, &p.up_proj, &p.down_proj});
  };
  if (!shared.gate_proj.empty()) add(shared);
  for (auto& e : experts) add(e);
  return out;
}

template <typename T>
void MoeParams<T>::zero() {
  for (ParamTensor<T>* t : param_tensors()) {
    std::fill(t->begin(), t->end(), T(0));
    t->mark_written();
  }
}

template <typename T>
void MoeParams<T>::zero_fresh() {
  for (ParamTensor<T>* t : param_tensors()) t->zero_if_fresh();
}

template <typename T>
void MoeParams<T>::mark_fresh() {
  for (ParamTensor<T>* t : param_tensors()) t->mark_fresh();
}

template <typename T>
bool MoeParams<T>::any_bound() const {
  auto bound = [](const SwigluParams<T>& p) {
    return p.gate_proj.bound() || p.up_proj.bound() || p.down_proj.bound();
  };
  return gate_weight.bound() || bound(shared) || std::any_of(experts.begin(), experts.end(), bound);
}

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Counter-based: element i of stream `stream` is a pure function of (seed, stream, i).
template <typename T>
void fill_uniform(ParamTensor<T>& data, uint64_t seed, uint64_t stream, double bound) {
  const uint64_t key = splitmix64(seed ^ splitmix64(stream));
  for (size_t i = 0; i < data.size(); ++i) {
    const double u = static_cast<double>(splitmix64(key + i) >> 11) * 0x1.0p-53;  // [0, 1)
    data[i] = static_cast<T>((2.0 * u - 1.0) * bound);
  }
}

}  // namespace

template <typename T>
void init_params(MoeParams<T>& params, uint64_t seed) {
  auto fill_swiglu = [&](SwigluParams<T>& p, uint64_t stream) {
    fill_uniform(p.gate_proj, seed, stream, 1.0 / std::sqrt(double(p.hidden)));
    fill_uniform(p.up_proj, seed, stream + 1, 1.0 / std::sqrt(double(p.hidden)));
    fill_uniform(p.down_proj, seed, stream + 2, 1.0 / std::sqrt(double(p.inter)));
  };
  fill_uniform(params.gate_weight, seed, 0, 1.0 / std::sqrt(double(params.hidden)));
  if (!params.shared.gate_proj.empty()) fill_swiglu(params.shared, 1);
  for (size_t i = 0; i < params.experts.size(); ++i) {
    fill_swiglu(params.experts[i], 16 + 3 * static_cast<uint64_t>(params.expert_ids[i]));
  }
}

template struct SwigluParams<float>;
template struct SwigluParams<double>;
template struct MoeParams<float>;
template struct MoeParams<double>;
template void init_params(MoeParams<float>&, uint64_t);
template void init_params(MoeParams<double>&, uint64_t);

}  // namespace switchyard
