// The routed experts this rank holds, on the rows it received: grouped by expert, one SwiGLU per
// expert forward; backward in two halves (the rows to send back first, the weight gradients while
// they travel).
#include <fmt/format.h>

#include "base/error.h"
#include "kernels/permute.h"
#include "runtime/moe_layer.h"
#include "runtime/token_routes.h"

namespace switchyard {

template <typename T>
void MoeLayer<T>::experts_forward(MoeChunk<T>& chunk, const std::vector<std::byte>& recv_side,
                                  const std::vector<T>& recv_x, std::vector<T>& recv_y) {
  const int64_t H = config_.hidden;
  const int64_t I = config_.intermediate;
  const int64_t rows = chunk.layout.num_recv_rows();
  const auto pairs = decode_expert_pairs<T>(recv_side.data(), rows, config_.top_k);
  const int64_t num_pairs = static_cast<int64_t>(pairs.size());
  const int num_local = static_cast<int>(params_.experts.size());
  last_local_pairs_ += num_pairs;

  std::vector<int32_t> local_expert(num_pairs);
  for (int64_t p = 0; p < num_pairs; ++p) {
    local_expert[p] = params_.local_index(pairs[p].expert);
    SY_ENFORCE(local_expert[p] >= 0, ErrorCode::internal,
               "rank {} received a token for expert {}, which it does not hold: the ranks disagree "
               "on the expert placement",
               comm_.rank(), pairs[p].expert);
  }
  std::vector<int64_t> order(num_pairs);
  chunk.expert_offsets.assign(num_local + 1, 0);
  if (num_local > 0) {
    kernels::group_by_key(local_expert.data(), num_pairs, num_local, order.data(),
                          chunk.expert_offsets.data());
  }
  chunk.pair_rows.resize(num_pairs);
  chunk.pair_slots.resize(num_pairs);
  chunk.pair_weights.resize(num_pairs);
  for (int64_t j = 0; j < num_pairs; ++j) {
    const auto& p = pairs[order[j]];
    chunk.pair_rows[j] = p.row;
    chunk.pair_slots[j] = p.slot;
    chunk.pair_weights[j] = p.weight;
  }

  chunk.expert_x.resize(num_pairs * H);
  backend_->permute_rows(recv_x.data(), H, chunk.pair_rows.data(), num_pairs,
                         chunk.expert_x.data());
  chunk.expert_gate_pre.resize(num_pairs * I);
  chunk.expert_up_pre.resize(num_pairs * I);
  chunk.expert_out.resize(num_pairs * H);
  for (int e = 0; e < num_local; ++e) {
    const int64_t begin = chunk.expert_offsets[e];
    const int64_t n = chunk.expert_offsets[e + 1] - begin;
    if (n == 0) continue;
    backend_->swiglu_forward(params_.experts[e].weights(), chunk.expert_x.data() + begin * H, n,
                             chunk.expert_gate_pre.data() + begin * I,
                             chunk.expert_up_pre.data() + begin * I,
                             chunk.expert_out.data() + begin * H);
  }
  recv_y.assign(rows * H, T(0));
  backend_->unpermute_rows(chunk.expert_out.data(), H, chunk.pair_rows.data(),
                           chunk.pair_weights.data(), num_pairs, recv_y.data());
}

template <typename T>
void MoeLayer<T>::experts_backward_data(const MoeChunk<T>& chunk, const std::vector<T>& grad_recv,
                                        std::vector<T>& grad_out, std::vector<T>& grad_gate_pre,
                                        std::vector<T>& grad_up_pre, std::vector<T>& back_rows) {
  const int64_t H = config_.hidden;
  const int64_t I = config_.intermediate;
  const int K = config_.top_k;
  const int64_t rows = chunk.layout.num_recv_rows();
  // The output gradient of pair j is weight_j * grad_recv[row_j]; the weight's own gradient is
  // dot(expert_out_j, grad_recv[row_j]).
  const int64_t num_pairs = static_cast<int64_t>(chunk.pair_rows.size());
  grad_out.resize(num_pairs * H);
  backend_->permute_rows(grad_recv.data(), H, chunk.pair_rows.data(), num_pairs, grad_out.data());
  std::vector<T> grad_pair_weight(num_pairs);
  backend_->gathered_row_dots(chunk.expert_out.data(), grad_recv.data(), H, chunk.pair_rows.data(),
                              num_pairs, grad_pair_weight.data());
  backend_->scale_rows(grad_out.data(), num_pairs, H, chunk.pair_weights.data());
  std::vector<T> grad_expert_x(num_pairs * H);
  grad_gate_pre.resize(num_pairs * I);
  grad_up_pre.resize(num_pairs * I);
  for (size_t e = 0; e + 1 < chunk.expert_offsets.size(); ++e) {
    const int64_t begin = chunk.expert_offsets[e];
    const int64_t n = chunk.expert_offsets[e + 1] - begin;
    if (n == 0) continue;
    backend_->swiglu_backward_data(
        params_.experts[e].weights(), n, chunk.expert_gate_pre.data() + begin * I,
        chunk.expert_up_pre.data() + begin * I, grad_out.data() + begin * H,
        grad_expert_x.data() + begin * H, grad_gate_pre.data() + begin * I,
        grad_up_pre.data() + begin * I);
  }
  // Each row goes back as [grad_x (H) | grad_weight per slot (K)]; a slot is served by one rank,
  // so summing rows over ranks assembles every slot's gradient.
  const int64_t width = H + K;
  back_rows.resize(rows * width);
  backend_->pack_backward_rows(grad_expert_x.data(), num_pairs, H, chunk.pair_rows.data(),
                               chunk.pair_slots.data(), grad_pair_weight.data(), K, rows,
                               back_rows.data());
}

template <typename T>
void MoeLayer<T>::experts_backward_weights(const MoeChunk<T>& chunk, const std::vector<T>& grad_out,
                                           const std::vector<T>& grad_gate_pre,
                                           const std::vector<T>& grad_up_pre,
                                           std::vector<SwigluParams<T>>& replica_grads,
                                           const std::function<void()>& between_experts) {
  const int64_t H = config_.hidden;
  const int64_t I = config_.intermediate;
  for (size_t e = 0; e + 1 < chunk.expert_offsets.size(); ++e) {
    const int64_t begin = chunk.expert_offsets[e];
    const int64_t n = chunk.expert_offsets[e + 1] - begin;
    if (n == 0) continue;
    SwigluParams<T>& grad = replicated(static_cast<int>(e)) ? replica_grads[e] : grads_.experts[e];
    // A gradient bound fresh (the caller's .grad was None) is written by the GEMMs instead of
    // added to: no zeroing pass over it, no read of it. Some of the three fresh: those start
    // from zeros.
    if (!grad.all_fresh()) {
      for (auto* t : {&grad.gate_proj, &grad.up_proj, &grad.down_proj}) t->zero_if_fresh();
    }
    const kernels::SwigluGrads<T> target = grad.grads();
    backend_->swiglu_backward_weights(
        params_.experts[e].weights(), chunk.expert_x.data() + begin * H, n,
        chunk.expert_gate_pre.data() + begin * I, chunk.expert_up_pre.data() + begin * I,
        grad_out.data() + begin * H, grad_gate_pre.data() + begin * I,
        grad_up_pre.data() + begin * I, target);
    if (target.overwrite) {
      for (auto* t : {&grad.gate_proj, &grad.up_proj, &grad.down_proj}) t->mark_written();
    }
    between_experts();
  }
}

template void MoeLayer<float>::experts_forward(MoeChunk<float>&, const std::vector<std::byte>&,
                                               const std::vector<float>&, std::vector<float>&);
template void MoeLayer<float>::experts_backward_data(const MoeChunk<float>&,
                                                     const std::vector<float>&, std::vector<float>&,
                                                     std::vector<float>&, std::vector<float>&,
                                                     std::vector<float>&);
template void MoeLayer<float>::experts_backward_weights(const MoeChunk<float>&,
                                                        const std::vector<float>&,
                                                        const std::vector<float>&,
                                                        const std::vector<float>&,
                                                        std::vector<SwigluParams<float>>&,
                                                        const std::function<void()>&);
template void MoeLayer<double>::experts_forward(MoeChunk<double>&, const std::vector<std::byte>&,
                                                const std::vector<double>&, std::vector<double>&);
template void MoeLayer<double>::experts_backward_data(const MoeChunk<double>&,
                                                      const std::vector<double>&,
                                                      std::vector<double>&, std::vector<double>&,
                                                      std::vector<double>&, std::vector<double>&);
template void MoeLayer<double>::experts_backward_weights(const MoeChunk<double>&,
                                                         const std::vector<double>&,
                                                         const std::vector<double>&,
                                                         const std::vector<double>&,
                                                         std::vector<SwigluParams<double>>&,
                                                         const std::function<void()>&);
}  // namespace switchyard
