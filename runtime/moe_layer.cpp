#include "runtime/moe_layer.h"

#include <algorithm>
#include <initializer_list>
#include <optional>

#include <fmt/format.h>

#include "kernels/blas.h"
#include "kernels/gating.h"
#include "kernels/permute.h"
#include "kernels/swiglu.h"
#include "runtime/error.h"
#include "runtime/token_routes.h"

namespace switchyard {

namespace {

template <typename T>
constexpr comm::DataType dtype_of() {
  return sizeof(T) == sizeof(double) ? comm::DataType::fp64 : comm::DataType::fp32;
}

template <typename T>
void add_into(T* dst, const T* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

}  // namespace

template <typename T>
MoeLayer<T>::MoeLayer(const MoeConfig& config, comm::Communicator& comm,
                      planner::ExpertPlacement placement, const std::string& alltoall)
    : config_(config), comm_(comm), placement_(std::move(placement)) {
  config_.validate();
  require(placement_.num_experts() == config_.num_experts,
          fmt::format("the placement places {} experts but MoeConfig.num_experts is {}",
                      placement_.num_experts(), config_.num_experts));
  require(placement_.num_devices() == comm_.size(),
          fmt::format("the placement is for {} devices but the communicator has {} ranks",
                      placement_.num_devices(), comm_.size()));
  alltoall_ = comm::make_alltoall(alltoall, comm_);
  params_ = MoeParams<T>(config_, placement_.experts_of(comm_.rank()));
  grads_ = MoeParams<T>(config_, params_.expert_ids);
  bias_.assign(config_.num_experts, T(0));
  device_of_expert_ = placement_.owners();
  node_of_rank_ = comm_.topology().node_of_rank;
  last_load_.assign(config_.num_experts, 0.0);
}

template <typename T>
MoeForward<T> MoeLayer<T>::forward(const T* x, int64_t tokens, int64_t hidden, T* y) {
  require(hidden == config_.hidden,
          fmt::format("forward: the input's hidden size {} does not match MoeConfig.hidden = {}",
                      hidden, config_.hidden));
  require(tokens >= 0, fmt::format("forward: token count must be >= 0, got {}", tokens));
  const int64_t H = config_.hidden;
  const int E = config_.num_experts;
  const int K = config_.top_k;
  const kernels::RouterOptions router = config_.router_options();

  MoeForward<T> result;
  result.saved = std::make_unique<MoeSaved<T>>();
  MoeSaved<T>& s = *result.saved;
  s.tokens = tokens;
  s.x.assign(x, x + tokens * H);

  std::vector<T> weights(tokens * K);
  {
    ScopedPhase phase(times_.gate);
    TraceSpan trace(tracer_, TracePhase::gate);
    s.logits.resize(tokens * E);
    kernels::gemm<T>(false, true, tokens, E, H, T(1), x, H, params_.gate_weight.data(), H, T(0),
                     s.logits.data(), E);
    s.scores.resize(tokens * E);
    kernels::compute_scores(s.logits.data(), tokens, E, config_.scoring, s.scores.data());
    s.idx.resize(tokens * K);
    kernels::select_experts(s.scores.data(), config_.selection_bias ? bias_.data() : nullptr,
                            tokens, E, router, s.idx.data());
    kernels::routing_weights(s.scores.data(), s.idx.data(), tokens, E, router, weights.data());

    kernels::RouterStats stats(E);
    kernels::accumulate_router_stats(s.logits.data(), s.scores.data(), s.idx.data(), tokens, E, K,
                                     stats);
    comm_.allreduce_sum(stats.flat().data(), stats.flat().size());
    result.aux = kernels::aux_losses(stats, K, device_of_expert_, comm_.size());
    last_load_.assign(stats.counts(), stats.counts() + E);
    s.global_stats = std::move(stats);
  }

  std::vector<T> recv_x;
  std::vector<std::byte> recv_side;
  {
    ScopedPhase phase(times_.dispatch);
    TraceSpan trace(tracer_, TracePhase::dispatch);
    LatencyTimer latency(metrics_, &Metrics::dispatch_forward);
    TokenRoutes<T> routes = build_token_routes(s.idx.data(), weights.data(), tokens, K,
                                               placement_, comm_.rank(), node_of_rank_);
    alltoall_->exchange_counts(routes.layout);
    const int64_t rows = routes.layout.num_recv_rows();
    recv_x.resize(rows * H);
    recv_side.resize(rows * routes.side_bytes);
    alltoall_->dispatch(routes.layout, x, H * sizeof(T), routes.side.data(), routes.side_bytes,
                        recv_x.data(), recv_side.data());
    count_traffic(alltoall_->stats().dispatch);
    trace.all_to_all(routes.layout, true, H * sizeof(T) + routes.side_bytes,
                     alltoall_->stats().dispatch);
    s.layout = std::move(routes.layout);
  }

  std::vector<T> recv_y;
  {
    ScopedPhase phase(times_.experts);
    TraceSpan trace(tracer_, TracePhase::experts);
    experts_forward(s, recv_side, recv_x, recv_y);
  }
  {
    ScopedPhase phase(times_.combine);
    TraceSpan trace(tracer_, TracePhase::combine);
    LatencyTimer latency(metrics_, &Metrics::combine_forward);
    alltoall_->combine(s.layout, dtype_of<T>(), recv_y.data(), H, y);
    count_traffic(alltoall_->stats().combine);
    trace.all_to_all(s.layout, false, H * sizeof(T), alltoall_->stats().combine);
  }
  if (config_.num_shared > 0) {
    ScopedPhase phase(times_.shared);
    TraceSpan trace(tracer_, TracePhase::shared);
    const int64_t I = params_.shared.inter;
    s.shared_gate_pre.resize(tokens * I);
    s.shared_up_pre.resize(tokens * I);
    std::vector<T> shared_y(tokens * H);
    kernels::swiglu_forward(params_.shared.weights(), x, tokens, s.shared_gate_pre.data(),
                            s.shared_up_pre.data(), shared_y.data());
    add_into(y, shared_y.data(), tokens * H);
  }
  return result;
}

template <typename T>
void MoeLayer<T>::experts_forward(MoeSaved<T>& s, const std::vector<std::byte>& recv_side,
                                  const std::vector<T>& recv_x, std::vector<T>& recv_y) {
  const int64_t H = config_.hidden;
  const int64_t I = config_.intermediate;
  const int64_t rows = s.layout.num_recv_rows();
  const auto pairs = decode_expert_pairs<T>(recv_side.data(), rows, config_.top_k);
  const int64_t num_pairs = static_cast<int64_t>(pairs.size());
  const int num_local = static_cast<int>(params_.experts.size());
  last_local_pairs_ = num_pairs;

  std::vector<int32_t> local_expert(num_pairs);
  for (int64_t p = 0; p < num_pairs; ++p) {
    local_expert[p] = params_.local_index(pairs[p].expert);
    if (local_expert[p] < 0) {
      throw Error(ErrorCode::internal,
                  fmt::format("rank {} received a token for expert {}, which it does not hold: the "
                              "ranks disagree on the expert placement",
                              comm_.rank(), pairs[p].expert));
    }
  }
  std::vector<int64_t> order(num_pairs);
  s.expert_offsets.assign(num_local + 1, 0);
  if (num_local > 0) {
    kernels::group_by_key(local_expert.data(), num_pairs, num_local, order.data(),
                          s.expert_offsets.data());
  }
  s.pair_rows.resize(num_pairs);
  s.pair_slots.resize(num_pairs);
  s.pair_weights.resize(num_pairs);
  for (int64_t j = 0; j < num_pairs; ++j) {
    const auto& p = pairs[order[j]];
    s.pair_rows[j] = p.row;
    s.pair_slots[j] = p.slot;
    s.pair_weights[j] = p.weight;
  }

  s.expert_x.resize(num_pairs * H);
  kernels::permute_rows(recv_x.data(), H, s.pair_rows.data(), num_pairs, s.expert_x.data());
  s.expert_gate_pre.resize(num_pairs * I);
  s.expert_up_pre.resize(num_pairs * I);
  s.expert_out.resize(num_pairs * H);
  for (int e = 0; e < num_local; ++e) {
    const int64_t begin = s.expert_offsets[e];
    const int64_t n = s.expert_offsets[e + 1] - begin;
    if (n == 0) continue;
    kernels::swiglu_forward(params_.experts[e].weights(), s.expert_x.data() + begin * H, n,
                            s.expert_gate_pre.data() + begin * I,
                            s.expert_up_pre.data() + begin * I, s.expert_out.data() + begin * H);
  }
  recv_y.assign(rows * H, T(0));
  kernels::unpermute_rows(s.expert_out.data(), H, s.pair_rows.data(), s.pair_weights.data(),
                          num_pairs, recv_y.data());
}

template <typename T>
void MoeLayer<T>::backward(const MoeSaved<T>& s, const T* grad_y, T* grad_x) {
  ScopedPhase total(times_.backward);
  const int64_t H = config_.hidden;
  const int64_t I = config_.intermediate;
  const int E = config_.num_experts;
  const int K = config_.top_k;
  const int64_t tokens = s.tokens;
  std::fill(grad_x, grad_x + tokens * H, T(0));

  // This rank's contributions to the replicated gradients (gate, shared experts), packed so that
  // one all-reduce sums them over ranks.
  MoeParams<T> replicated_grad(config_, {});

  if (config_.num_shared > 0) {
    TraceSpan trace(tracer_, TracePhase::shared_bwd);
    std::vector<T> shared_grad_x(tokens * H);
    kernels::swiglu_backward(params_.shared.weights(), s.x.data(), tokens,
                             s.shared_gate_pre.data(), s.shared_up_pre.data(), grad_y,
                             shared_grad_x.data(), replicated_grad.shared.grads());
    add_into(grad_x, shared_grad_x.data(), tokens * H);
  }

  // Combine backward is a dispatch of the output gradient to the ranks that computed each token.
  const int64_t rows = s.layout.num_recv_rows();
  std::vector<T> grad_recv(rows * H);
  {
    TraceSpan trace(tracer_, TracePhase::combine_bwd);
    LatencyTimer latency(metrics_, &Metrics::dispatch_backward);
    alltoall_->dispatch(s.layout, grad_y, H * sizeof(T), nullptr, 0, grad_recv.data(), nullptr);
    count_traffic(alltoall_->stats().dispatch);
    trace.all_to_all(s.layout, true, H * sizeof(T), alltoall_->stats().dispatch);
  }

  // Expert backward: the output gradient of pair j is weight_j * grad_recv[row_j]; the weight's own
  // gradient is dot(expert_out_j, grad_recv[row_j]).
  // An optional, so that the span ends where the expert work does rather than at scope end.
  std::optional<TraceSpan> experts_trace(std::in_place, tracer_, TracePhase::experts_bwd);
  const int64_t num_pairs = static_cast<int64_t>(s.pair_rows.size());
  std::vector<T> grad_out(num_pairs * H);
  kernels::permute_rows(grad_recv.data(), H, s.pair_rows.data(), num_pairs, grad_out.data());
  std::vector<T> grad_pair_weight(num_pairs);
  kernels::gathered_row_dots(s.expert_out.data(), grad_recv.data(), H, s.pair_rows.data(),
                             num_pairs, grad_pair_weight.data());
  for (int64_t j = 0; j < num_pairs; ++j) {
    for (int64_t h = 0; h < H; ++h) grad_out[j * H + h] *= s.pair_weights[j];
  }
  std::vector<T> grad_expert_x(num_pairs * H);
  // A replicated expert's gradient of this batch is kept apart until it is summed over its
  // replicas; the others accumulate directly.
  std::vector<SwigluParams<T>> replica_grads(params_.experts.size());
  for (size_t e = 0; e + 1 < s.expert_offsets.size(); ++e) {
    if (replicated(static_cast<int>(e))) replica_grads[e] = SwigluParams<T>(H, I);
    const int64_t begin = s.expert_offsets[e];
    const int64_t n = s.expert_offsets[e + 1] - begin;
    if (n == 0) continue;
    auto target = replicated(static_cast<int>(e)) ? replica_grads[e].grads()
                                                   : grads_.experts[e].grads();
    kernels::swiglu_backward(params_.experts[e].weights(), s.expert_x.data() + begin * H, n,
                             s.expert_gate_pre.data() + begin * I,
                             s.expert_up_pre.data() + begin * I, grad_out.data() + begin * H,
                             grad_expert_x.data() + begin * H, target);
  }

  // Dispatch backward is a combine. Each row returns [grad_x (H) | grad_weight per slot (K)]; a
  // slot is served by one rank, so summing rows over ranks assembles every slot's gradient.
  const int64_t width = H + K;
  std::vector<T> back_rows(rows * width, T(0));
  for (int64_t j = 0; j < num_pairs; ++j) {
    T* row = back_rows.data() + s.pair_rows[j] * width;
    add_into(row, grad_expert_x.data() + j * H, H);
    row[H + s.pair_slots[j]] += grad_pair_weight[j];
  }
  experts_trace.reset();
  std::vector<T> back_tokens(tokens * width);
  {
    TraceSpan trace(tracer_, TracePhase::dispatch_bwd);
    LatencyTimer latency(metrics_, &Metrics::combine_backward);
    alltoall_->combine(s.layout, dtype_of<T>(), back_rows.data(), width, back_tokens.data());
    count_traffic(alltoall_->stats().combine);
    trace.all_to_all(s.layout, false, width * sizeof(T), alltoall_->stats().combine);
  }
  std::optional<TraceSpan> gate_trace(std::in_place, tracer_, TracePhase::gate_bwd);
  std::vector<T> grad_weights(tokens * K);
  for (int64_t t = 0; t < tokens; ++t) {
    add_into(grad_x + t * H, back_tokens.data() + t * width, H);
    std::copy_n(back_tokens.data() + t * width + H, K, grad_weights.data() + t * K);
  }

  // Router backward: weights -> scores (+ balance losses) -> logits (+ z-loss) -> x and gate.
  const kernels::RouterOptions router = config_.router_options();
  std::vector<T> grad_scores(tokens * E, T(0));
  kernels::routing_weights_backward(s.scores.data(), s.idx.data(), grad_weights.data(), tokens, E,
                                    router, grad_scores.data());
  if (config_.aux_expert_alpha > 0 || config_.aux_device_alpha > 0) {
    const auto coef =
        kernels::balance_score_grad(s.global_stats, K, device_of_expert_, comm_.size(),
                                    config_.aux_expert_alpha, config_.aux_device_alpha);
    kernels::add_balance_grad(coef.data(), tokens, E, grad_scores.data());
  }
  std::vector<T> grad_logits(tokens * E);
  kernels::scores_backward(s.scores.data(), grad_scores.data(), tokens, E, config_.scoring,
                           grad_logits.data());
  if (config_.z_loss_alpha > 0) {
    kernels::z_loss_backward(s.logits.data(), tokens, E, config_.z_loss_alpha,
                             s.global_stats.tokens(), grad_logits.data());
  }
  kernels::gemm<T>(false, false, tokens, H, E, T(1), grad_logits.data(), E,
                   params_.gate_weight.data(), H, T(1), grad_x, H);
  kernels::gemm<T>(true, false, E, H, tokens, T(1), grad_logits.data(), E, s.x.data(), H, T(0),
                   replicated_grad.gate_weight.data(), H);
  gate_trace.reset();

  {
    ScopedPhase phase(times_.grad_reduce);
    TraceSpan trace(tracer_, TracePhase::grad_reduce);
    auto local = replicated_grad.replicated_tensors();
    auto total_grads = grads_.replicated_tensors();
    size_t count = 0;
    for (auto t : local) count += t.size();
    std::vector<T> packed;
    packed.reserve(count);
    for (auto t : local) packed.insert(packed.end(), t.begin(), t.end());
    comm_.allreduce_sum(packed.data(), packed.size());
    trace.payload(static_cast<int64_t>(packed.size() * sizeof(T)));
    sum_replica_grads(replica_grads);
    size_t offset = 0;
    for (auto t : total_grads) {
      add_into(t.data(), packed.data() + offset, static_cast<int64_t>(t.size()));
      offset += t.size();
    }
    for (size_t e = 0; e < replica_grads.size(); ++e) {
      if (!replicated(static_cast<int>(e))) continue;
      auto& sum = replica_grads[e];
      auto& total_grad = grads_.experts[e];
      add_into(total_grad.gate_proj.data(), sum.gate_proj.data(), sum.gate_proj.size());
      add_into(total_grad.up_proj.data(), sum.up_proj.data(), sum.up_proj.size());
      add_into(total_grad.down_proj.data(), sum.down_proj.data(), sum.down_proj.size());
    }
  }
}

template <typename T>
void MoeLayer<T>::count_traffic(const comm::PhaseStats& phase) {
  traffic_.inter_node_bytes += phase.bytes_to_other_nodes;
  traffic_.intra_node_bytes += phase.bytes_sent - phase.bytes_to_other_nodes;
  if (metrics_ != nullptr) {
    metrics_->inter_node_bytes.fetch_add(phase.bytes_to_other_nodes, std::memory_order_relaxed);
    metrics_->intra_node_bytes.fetch_add(phase.bytes_sent - phase.bytes_to_other_nodes,
                                         std::memory_order_relaxed);
  }
}

template <typename T>
bool MoeLayer<T>::replicated(int local_expert) const {
  return placement_.replicas(params_.expert_ids[local_expert]).size() > 1;
}

namespace {

// Runtime point-to-point tags, apart from the all-to-all algorithms' own.
constexpr int kReplicaGradTag = 64;
constexpr int kMigrationTag = 65;

// Appends p's three tensors to out (the wire format of replica gradients and migrations).
template <typename T>
void append_swiglu(std::vector<T>& out, const SwigluParams<T>& p) {
  out.insert(out.end(), p.gate_proj.begin(), p.gate_proj.end());
  out.insert(out.end(), p.up_proj.begin(), p.up_proj.end());
  out.insert(out.end(), p.down_proj.begin(), p.down_proj.end());
}

// Copies the next three tensors' worth of `packed` (from `offset`) into p.
template <typename T>
void unpack_swiglu(const std::vector<T>& packed, size_t& offset, SwigluParams<T>& p) {
  for (auto* t : {&p.gate_proj, &p.up_proj, &p.down_proj}) {
    std::copy_n(packed.begin() + offset, t->size(), t->begin());
    offset += t->size();
  }
}

}  // namespace

template <typename T>
void MoeLayer<T>::sum_replica_grads(std::vector<SwigluParams<T>>& grads) {
  comm::Transport& transport = comm_.transport();
  const int me = comm_.rank();
  std::vector<std::vector<T>> mine(grads.size());
  std::vector<std::vector<std::vector<T>>> theirs(grads.size());
  std::vector<comm::Request> requests;
  try {
    for (size_t e = 0; e < grads.size(); ++e) {
      if (!replicated(static_cast<int>(e))) continue;
      const auto& holders = placement_.replicas(params_.expert_ids[e]);
      append_swiglu(mine[e], grads[e]);
      theirs[e].resize(holders.size());
      for (size_t i = 0; i < holders.size(); ++i) {
        if (holders[i] == me) continue;
        theirs[e][i].resize(mine[e].size());
        requests.push_back(transport.irecv(holders[i], theirs[e][i].data(),
                                           mine[e].size() * sizeof(T), kReplicaGradTag));
        requests.push_back(transport.isend(holders[i], mine[e].data(), mine[e].size() * sizeof(T),
                                           kReplicaGradTag));
      }
    }
  } catch (...) {
    for (auto& r : requests) transport.cancel(r);
    throw;
  }
  comm::wait_all(transport, requests, comm_.timeout(), "replica gradient exchange");
  for (size_t e = 0; e < grads.size(); ++e) {
    if (!replicated(static_cast<int>(e))) continue;
    const auto& holders = placement_.replicas(params_.expert_ids[e]);
    std::vector<T> sum(mine[e].size(), T(0));
    for (size_t i = 0; i < holders.size(); ++i) {
      add_into(sum.data(), holders[i] == me ? mine[e].data() : theirs[e][i].data(),
               static_cast<int64_t>(sum.size()));
    }
    size_t offset = 0;
    unpack_swiglu(sum, offset, grads[e]);
  }
}

template <typename T>
std::vector<double> MoeLayer<T>::measure_device_load() {
  std::vector<double> load(comm_.size(), 0.0);
  load[comm_.rank()] = static_cast<double>(last_local_pairs_);
  comm_.allreduce_sum(load.data(), load.size());
  if (metrics_ != nullptr) {
    double total = 0;
    for (double l : load) total += l;
    const double max = *std::max_element(load.begin(), load.end());
    metrics_->device_imbalance.store(total > 0 ? max * load.size() / total : 0.0,
                                     std::memory_order_relaxed);
  }
  return load;
}

template <typename T>
void MoeLayer<T>::apply_placement(const planner::ExpertPlacement& next,
                                  const std::vector<MoeParams<T>*>& companions) {
  require(next.num_experts() == config_.num_experts && next.num_devices() == comm_.size(),
          fmt::format("apply_placement: the placement is for {} experts on {} devices, the layer "
                      "has {} experts on {} ranks",
                      next.num_experts(), next.num_devices(), config_.num_experts, comm_.size()));
  for (const MoeParams<T>* c : companions) {
    require(c != nullptr && c->expert_ids == params_.expert_ids,
            "apply_placement: a companion state does not hold the same experts as the layer");
  }
  const int me = comm_.rank();
  const std::vector<int> next_ids = next.experts_of(me);

  // Every rank derives the same transfers from the two placements: a new holder receives an
  // expert from its lowest current holder.
  comm::Transport& transport = comm_.transport();
  TraceSpan trace(tracer_, TracePhase::migration);
  std::vector<std::vector<T>> outgoing, incoming(next_ids.size());
  std::vector<comm::Request> requests;
  int64_t migrated_bytes = 0;  // sent by this rank
  const size_t expert_elems = 3 * static_cast<size_t>(config_.hidden * config_.intermediate);
  try {
    for (int e = 0; e < config_.num_experts; ++e) {
      const int source = placement_.owner(e);
      for (int d : next.replicas(e)) {
        if (placement_.holds(d, e)) continue;
        if (me == source) {
          const int local = params_.local_index(e);
          std::vector<T> message;
          append_swiglu(message, params_.experts[local]);
          for (const MoeParams<T>* c : companions) append_swiglu(message, c->experts[local]);
          outgoing.push_back(std::move(message));
          trace.sent(d, static_cast<int64_t>(outgoing.back().size() * sizeof(T)));
          migrated_bytes += static_cast<int64_t>(outgoing.back().size() * sizeof(T));
          requests.push_back(transport.isend(d, outgoing.back().data(),
                                             outgoing.back().size() * sizeof(T), kMigrationTag));
        }
        if (me == d) {
          const size_t slot = std::lower_bound(next_ids.begin(), next_ids.end(), e) - next_ids.begin();
          incoming[slot].resize(expert_elems * (1 + companions.size()));
          trace.received(source, static_cast<int64_t>(incoming[slot].size() * sizeof(T)));
          requests.push_back(transport.irecv(source, incoming[slot].data(),
                                             incoming[slot].size() * sizeof(T), kMigrationTag));
        }
      }
    }
  } catch (...) {
    for (auto& r : requests) transport.cancel(r);
    throw;
  }
  comm::wait_all(transport, requests, comm_.timeout(), "expert migration");

  // Assemble the new expert sets, then commit: after the transfers nothing here can fail but
  // allocation, and that happens before any existing tensor is moved.
  const size_t num_sets = 1 + companions.size();
  std::vector<std::vector<SwigluParams<T>>> next_sets(num_sets);
  for (auto& set : next_sets) set.resize(next_ids.size());
  for (size_t i = 0; i < next_ids.size(); ++i) {
    if (incoming[i].empty()) continue;
    size_t offset = 0;
    for (size_t k = 0; k < num_sets; ++k) {
      next_sets[k][i] = SwigluParams<T>(config_.hidden, config_.intermediate);
      unpack_swiglu(incoming[i], offset, next_sets[k][i]);
    }
  }
  MoeParams<T> next_grads(config_, next_ids);
  for (size_t i = 0; i < next_ids.size(); ++i) {
    if (!incoming[i].empty()) continue;
    const int local = params_.local_index(next_ids[i]);
    next_sets[0][i] = std::move(params_.experts[local]);
    for (size_t k = 1; k < num_sets; ++k) {
      next_sets[k][i] = std::move(companions[k - 1]->experts[local]);
    }
  }
  params_.experts = std::move(next_sets[0]);
  params_.expert_ids = next_ids;
  for (size_t k = 1; k < num_sets; ++k) {
    companions[k - 1]->experts = std::move(next_sets[k]);
    companions[k - 1]->expert_ids = next_ids;
  }
  grads_ = std::move(next_grads);
  placement_ = next;
  device_of_expert_ = placement_.owners();
  if (metrics_ != nullptr) {
    metrics_->replans.fetch_add(1, std::memory_order_relaxed);
    metrics_->migrated_bytes.fetch_add(migrated_bytes, std::memory_order_relaxed);
  }
}

template <typename T>
void MoeLayer<T>::update_selection_bias() {
  if (!config_.selection_bias) return;
  const int E = config_.num_experts;
  double total = 0;
  for (double load : last_load_) total += load;
  const double mean = total / E;
  for (int e = 0; e < E; ++e) {
    const double diff = mean - last_load_[e];
    const double sign = diff > 0 ? 1.0 : (diff < 0 ? -1.0 : 0.0);
    bias_[e] += static_cast<T>(config_.bias_update_rate * sign);
  }
}

template class MoeLayer<float>;
template class MoeLayer<double>;

}  // namespace switchyard
