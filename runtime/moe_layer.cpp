#include "runtime/moe_layer.h"

#include <algorithm>
#include <chrono>
#include <initializer_list>
#include <optional>

#include <fmt/format.h>

#include "kernels/blas.h"
#include "kernels/gating.h"
#include "kernels/permute.h"
#include "kernels/swiglu.h"
#include "runtime/buffer_reuse.h"
#include "runtime/error.h"
#include "runtime/token_routes.h"
#include "runtime/wire_rows.h"

namespace switchyard {

namespace {

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

// Adds the three tensors packed at the start of `packed` (append_swiglu's layout) into p.
template <typename T>
void add_packed_swiglu(kernels::Backend<T>& backend, const std::vector<T>& packed,
                       SwigluParams<T>& p) {
  size_t offset = 0;
  for (auto* t : {&p.gate_proj, &p.up_proj, &p.down_proj}) {
    backend.add(t->data(), packed.data() + offset, static_cast<int64_t>(t->size()));
    offset += t->size();
  }
}

}  // namespace

template <typename T>
MoeLayer<T>::MoeLayer(const MoeConfig& config, comm::Communicator& comm,
                      planner::ExpertPlacement placement, const std::string& alltoall,
                      const OverlapOptions& overlap)
    : MoeLayer(config, comm, std::move(placement), LayerOptions{alltoall, overlap, {}}) {}

template <typename T>
MoeLayer<T>::MoeLayer(const MoeConfig& config, comm::Communicator& comm,
                      planner::ExpertPlacement placement, const LayerOptions& options)
    : config_(config),
      comm_(comm),
      placement_(std::move(placement)),
      thread_allowed_(comm_thread_allowed()),
      comm_thread_priority_(comm_thread_priority_from_env()),
      overlap_(options.overlap, thread_allowed_) {
  config_.validate();
  require_comm_thread_priority(options.overlap);
  reuse_freed_buffers();
  require(placement_.num_experts() == config_.num_experts,
          fmt::format("the placement places {} experts but MoeConfig.num_experts is {}",
                      placement_.num_experts(), config_.num_experts));
  require(placement_.num_devices() == comm_.size(),
          fmt::format("the placement is for {} devices but the communicator has {} ranks",
                      placement_.num_devices(), comm_.size()));
  try {
    backend_ = kernels::make_backend<T>(options.backend);
  } catch (const std::invalid_argument& e) {
    throw Error(ErrorCode::invalid_argument, e.what());
  }
  alltoall_ = comm::make_alltoall(options.alltoall, comm_);
  params_ = MoeParams<T>(config_, placement_.experts_of(comm_.rank()));
  grads_ = MoeParams<T>(config_, params_.expert_ids);
  bias_.assign(config_.num_experts, T(0));
  device_of_expert_ = placement_.owners();
  node_of_rank_ = comm_.topology().node_of_rank;
  last_load_.assign(config_.num_experts, 0.0);
}

template <typename T>
MoeLayer<T>::~MoeLayer() = default;

template <typename T>
void MoeLayer<T>::set_overlap(const OverlapOptions& overlap) {
  require_comm_thread_priority(overlap);
  overlap_ = OverlapController(overlap, thread_allowed_);
  step_ = {};
}

template <typename T>
void MoeLayer<T>::require_comm_thread_priority(const OverlapOptions& overlap) const {
  if (overlap.mode != OverlapMode::off && thread_allowed_) {
    require_thread_priority(comm_thread_priority_);
  }
}

template <typename T>
CommQueue& MoeLayer<T>::queue_for(bool pipelined, std::optional<CommQueue>& inline_queue) {
  if (!pipelined) return inline_queue.emplace(comm_, CommQueue::Mode::inline_on_caller);
  if (!comm_thread_) {
    comm_thread_ = std::make_unique<CommQueue>(comm_, CommQueue::Mode::background_thread,
                                               comm_thread_priority_);
  }
  return *comm_thread_;
}

template <typename T>
MoeForward<T> MoeLayer<T>::forward(const T* x, int64_t tokens, int64_t hidden, T* y) {
  require(hidden == config_.hidden,
          fmt::format("forward: the input's hidden size {} does not match MoeConfig.hidden = {}",
                      hidden, config_.hidden));
  require(tokens >= 0, fmt::format("forward: token count must be >= 0, got {}", tokens));
  const auto call_start = std::chrono::steady_clock::now();
  const double waited_before = times_.dispatch + times_.combine;
  const double busy_before = times_.comm_busy;
  const int64_t H = config_.hidden;
  const int E = config_.num_experts;
  const int K = config_.top_k;
  const kernels::RouterOptions router = config_.router_options();
  const CallSchedule schedule = overlap_.next_forward();

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
    backend_->gemm(false, true, tokens, E, H, T(1), x, H, params_.gate_weight.data(), H, T(0),
                   s.logits.data(), E, kernels::ParamOperand::b, kernels::GemmPrecision::native);
    s.scores.resize(tokens * E);
    backend_->compute_scores(s.logits.data(), tokens, E, config_.scoring, s.scores.data());
    s.idx.resize(tokens * K);
    backend_->select_experts(s.scores.data(), config_.selection_bias ? bias_.data() : nullptr,
                             tokens, E, router, s.idx.data());
    backend_->routing_weights(s.scores.data(), s.idx.data(), tokens, E, router, weights.data());

    kernels::RouterStats stats(E);
    backend_->accumulate_router_stats(s.logits.data(), s.scores.data(), s.idx.data(), tokens, E, K,
                                      stats);
    comm_.allreduce_sum(stats.flat().data(), stats.flat().size());
    result.aux = kernels::aux_losses(stats, K, device_of_expert_, comm_.size());
    last_load_.assign(stats.counts(), stats.counts() + E);
    s.global_stats = std::move(stats);
  }

  // Chunks may be empty, and are on some ranks whenever C exceeds their token count.
  const int C = schedule.chunks;
  s.chunks.resize(C);
  std::vector<TokenRoutes<T>> routes(C);
  for (int c = 0; c < C; ++c) {
    MoeChunk<T>& chunk = s.chunks[c];
    chunk.begin = chunk_begin(tokens, C, c);
    chunk.end = chunk_begin(tokens, C, c + 1);
    routes[c] = build_token_routes(s.idx.data() + chunk.begin * K, weights.data() + chunk.begin * K,
                                   chunk.end - chunk.begin, K, placement_, comm_.rank(),
                                   node_of_rank_, chunk.begin);
    chunk.layout = std::move(routes[c].layout);
  }
  last_local_pairs_ = 0;

  std::vector<std::vector<T>> recv_x(C), recv_y(C);
  std::vector<std::vector<std::byte>> recv_side(C);
  std::vector<comm::PhaseStats> dispatch_stats(C), combine_stats(C);
  std::vector<uint64_t> dispatched(C);
  std::vector<T> shared_y;
  std::optional<CommQueue> inline_queue;
  CommQueue& queue = queue_for(schedule.pipelined, inline_queue);
  try {
    for (int c = 0; c < C; ++c) {
      ScopedPhase phase(times_.dispatch);
      dispatched[c] = queue.submit([&, c] {
        MoeChunk<T>& chunk = s.chunks[c];
        ScopedPhase busy(times_.comm_busy);
        TraceSpan trace(tracer_, TracePhase::dispatch);
        LatencyTimer latency(metrics_, &Metrics::dispatch_forward);
        {
          ScopedPhase round(step_.round_seconds);
          alltoall_->exchange_counts(chunk.layout);
        }
        ++step_.rounds;
        const int64_t rows = chunk.layout.num_recv_rows();
        recv_x[c].resize(rows * H);
        recv_side[c].resize(rows * routes[c].side_bytes);
        const size_t row_bytes = dispatch_rows(
            *alltoall_, config_.wire, chunk.layout, x + chunk.begin * H, H, routes[c].side.data(),
            routes[c].side_bytes, recv_x[c].data(), recv_side[c].data());
        dispatch_stats[c] = alltoall_->stats().dispatch;
        trace.all_to_all(chunk.layout, true, row_bytes + routes[c].side_bytes, dispatch_stats[c]);
      });
    }
    // The shared experts need no communication: they run while the first chunk's dispatch is in
    // flight and, of a chunked call, the last chunk's combine (the pipeline's fill and drain).
    const int64_t I = params_.shared.inter;
    const int64_t shared_split = C == 1 ? tokens : tokens / 2;
    auto shared_forward = [&](int64_t begin, int64_t end) {
      if (config_.num_shared == 0 || begin == end) return;
      ScopedPhase phase(times_.shared);
      TraceSpan trace(tracer_, TracePhase::shared);
      backend_->swiglu_forward(params_.shared.weights(), x + begin * H, end - begin,
                               s.shared_gate_pre.data() + begin * I,
                               s.shared_up_pre.data() + begin * I, shared_y.data() + begin * H);
    };
    if (config_.num_shared > 0) {
      s.shared_gate_pre.resize(tokens * I);
      s.shared_up_pre.resize(tokens * I);
      shared_y.resize(tokens * H);
    }
    shared_forward(0, shared_split);
    for (int c = 0; c < C; ++c) {
      {
        ScopedPhase phase(times_.dispatch);
        queue.wait(dispatched[c]);
      }
      count_traffic(dispatch_stats[c]);
      {
        ScopedPhase phase(times_.experts);
        TraceSpan trace(tracer_, TracePhase::experts);
        experts_forward(s.chunks[c], recv_side[c], recv_x[c], recv_y[c]);
      }
      ScopedPhase phase(times_.combine);
      queue.submit([&, c] {
        const MoeChunk<T>& chunk = s.chunks[c];
        ScopedPhase busy(times_.comm_busy);
        TraceSpan trace(tracer_, TracePhase::combine);
        LatencyTimer latency(metrics_, &Metrics::combine_forward);
        const size_t row_bytes = combine_rows(*alltoall_, config_.wire, chunk.layout,
                                              recv_y[c].data(), H, y + chunk.begin * H);
        combine_stats[c] = alltoall_->stats().combine;
        trace.all_to_all(chunk.layout, false, row_bytes, combine_stats[c]);
      });
    }
    shared_forward(shared_split, tokens);
    ScopedPhase phase(times_.combine);
    queue.wait_all();
  } catch (...) {
    queue.cancel();
    throw;
  }
  for (int c = 0; c < C; ++c) count_traffic(combine_stats[c]);
  if (config_.num_shared > 0) backend_->add(y, shared_y.data(), tokens * H);

  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - call_start).count();
  step_.seconds += elapsed;
  step_.comm_seconds += times_.comm_busy - busy_before;
  step_.compute_seconds += elapsed - (times_.dispatch + times_.combine - waited_before);
  step_.pipelined = step_.pipelined || schedule.pipelined;
  if (!params_.experts.empty()) {
    step_.rows_per_expert = std::max(
        step_.rows_per_expert, static_cast<double>(last_local_pairs_) / params_.experts.size());
  }
  return result;
}

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
    if (local_expert[p] < 0) {
      throw Error(ErrorCode::internal,
                  fmt::format("rank {} received a token for expert {}, which it does not hold: the "
                              "ranks disagree on the expert placement",
                              comm_.rank(), pairs[p].expert));
    }
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
                                           std::vector<SwigluParams<T>>& replica_grads) {
  const int64_t H = config_.hidden;
  const int64_t I = config_.intermediate;
  for (size_t e = 0; e + 1 < chunk.expert_offsets.size(); ++e) {
    const int64_t begin = chunk.expert_offsets[e];
    const int64_t n = chunk.expert_offsets[e + 1] - begin;
    if (n == 0) continue;
    auto target =
        replicated(static_cast<int>(e)) ? replica_grads[e].grads() : grads_.experts[e].grads();
    backend_->swiglu_backward_weights(
        params_.experts[e].weights(), chunk.expert_x.data() + begin * H, n,
        chunk.expert_gate_pre.data() + begin * I, chunk.expert_up_pre.data() + begin * I,
        grad_out.data() + begin * H, grad_gate_pre.data() + begin * I,
        grad_up_pre.data() + begin * I, target);
  }
}

template <typename T>
void MoeLayer<T>::backward(const MoeSaved<T>& s, const T* grad_y, T* grad_x) {
  ScopedPhase total(times_.backward);
  const auto call_start = std::chrono::steady_clock::now();
  const double busy_before = times_.comm_busy;
  const int64_t H = config_.hidden;
  const int E = config_.num_experts;
  const int K = config_.top_k;
  const int64_t tokens = s.tokens;
  const int C = static_cast<int>(s.chunks.size());
  const bool pipelined = overlap_.backward_pipelined();
  std::fill(grad_x, grad_x + tokens * H, T(0));

  // This rank's contributions to the replicated gradients (gate, shared experts), packed so that
  // one all-reduce sums them over ranks.
  MoeParams<T> replicated_grad(config_, {});
  // A replicated expert's gradient of this batch is kept apart until it is summed over its
  // replicas; the others accumulate directly.
  std::vector<SwigluParams<T>> replica_grads(params_.experts.size());
  for (size_t e = 0; e < replica_grads.size(); ++e) {
    if (replicated(static_cast<int>(e))) {
      replica_grads[e] = SwigluParams<T>(H, config_.intermediate);
    }
  }

  // Combine backward is a dispatch of the output gradient to the ranks that computed each token;
  // dispatch backward is a combine of [grad_x | grad_weight per slot] rows.
  const int64_t width = H + K;
  std::vector<std::vector<T>> grad_recv(C), back_rows(C);
  std::vector<T> back_tokens(tokens * width);
  std::vector<comm::PhaseStats> dispatch_stats(C), combine_stats(C);
  std::vector<uint64_t> dispatched(C);
  double waited = 0;          // for the caller's communication
  std::vector<T> shared_sum;  // the shared experts' gradients, summed over ranks
  std::optional<CommQueue> inline_queue;
  CommQueue& queue = queue_for(pipelined, inline_queue);
  try {
    for (int c = 0; c < C; ++c) {
      ScopedPhase wait(waited);
      dispatched[c] = queue.submit([&, c] {
        const MoeChunk<T>& chunk = s.chunks[c];
        ScopedPhase busy(times_.comm_busy);
        TraceSpan trace(tracer_, TracePhase::combine_bwd);
        LatencyTimer latency(metrics_, &Metrics::dispatch_backward);
        grad_recv[c].resize(chunk.layout.num_recv_rows() * H);
        const size_t row_bytes =
            dispatch_rows(*alltoall_, config_.wire, chunk.layout, grad_y + chunk.begin * H, H,
                          nullptr, 0, grad_recv[c].data(), nullptr);
        dispatch_stats[c] = alltoall_->stats().dispatch;
        trace.all_to_all(chunk.layout, true, row_bytes, dispatch_stats[c]);
      });
    }
    if (config_.num_shared > 0) {
      {
        TraceSpan trace(tracer_, TracePhase::shared_bwd);
        std::vector<T> shared_grad_x(tokens * H);
        backend_->swiglu_backward(params_.shared.weights(), s.x.data(), tokens,
                                  s.shared_gate_pre.data(), s.shared_up_pre.data(), grad_y,
                                  shared_grad_x.data(), replicated_grad.shared.grads());
        backend_->add(grad_x, shared_grad_x.data(), tokens * H);
      }
      // The shared experts' gradients are summed over ranks while the routed experts' backward
      // runs (the gate's are known only at the end).
      append_swiglu(shared_sum, replicated_grad.shared);
      ScopedPhase wait(waited);
      queue.submit([&] {
        ScopedPhase phase(times_.grad_reduce);
        TraceSpan trace(tracer_, TracePhase::grad_reduce);
        comm_.allreduce_sum(shared_sum.data(), shared_sum.size());
        trace.payload(static_cast<int64_t>(shared_sum.size() * sizeof(T)));
      });
    }
    std::vector<T> grad_out, grad_gate_pre, grad_up_pre;
    for (int c = 0; c < C; ++c) {
      {
        ScopedPhase wait(waited);
        queue.wait(dispatched[c]);
      }
      count_traffic(dispatch_stats[c]);
      {
        ScopedPhase phase(times_.experts_backward);
        TraceSpan trace(tracer_, TracePhase::experts_bwd);
        experts_backward_data(s.chunks[c], grad_recv[c], grad_out, grad_gate_pre, grad_up_pre,
                              back_rows[c]);
      }
      {
        ScopedPhase wait(waited);
        queue.submit([&, c] {
          const MoeChunk<T>& chunk = s.chunks[c];
          ScopedPhase busy(times_.comm_busy);
          TraceSpan trace(tracer_, TracePhase::dispatch_bwd);
          LatencyTimer latency(metrics_, &Metrics::combine_backward);
          const size_t row_bytes =
              combine_rows(*alltoall_, config_.wire, chunk.layout, back_rows[c].data(), width,
                           back_tokens.data() + chunk.begin * width);
          combine_stats[c] = alltoall_->stats().combine;
          trace.all_to_all(chunk.layout, false, row_bytes, combine_stats[c]);
        });
      }
      // The weight gradients fill the time the rows above spend on the wire.
      ScopedPhase phase(times_.experts_backward);
      TraceSpan trace(tracer_, TracePhase::experts_bwd);
      experts_backward_weights(s.chunks[c], grad_out, grad_gate_pre, grad_up_pre, replica_grads);
    }
    ScopedPhase wait(waited);
    queue.wait_all();
  } catch (...) {
    queue.cancel();
    throw;
  }
  for (int c = 0; c < C; ++c) count_traffic(combine_stats[c]);

  std::optional<TraceSpan> gate_trace(std::in_place, tracer_, TracePhase::gate_bwd);
  std::vector<T> grad_weights(tokens * K);
  backend_->unpack_backward_rows(back_tokens.data(), tokens, H, K, grad_x, grad_weights.data());

  // Router backward: weights -> scores (+ balance losses) -> logits (+ z-loss) -> x and gate.
  const kernels::RouterOptions router = config_.router_options();
  std::vector<T> grad_scores(tokens * E, T(0));
  backend_->routing_weights_backward(s.scores.data(), s.idx.data(), grad_weights.data(), tokens, E,
                                     router, grad_scores.data());
  if (config_.aux_expert_alpha > 0 || config_.aux_device_alpha > 0) {
    const auto coef =
        kernels::balance_score_grad(s.global_stats, K, device_of_expert_, comm_.size(),
                                    config_.aux_expert_alpha, config_.aux_device_alpha);
    backend_->add_balance_grad(coef.data(), tokens, E, grad_scores.data());
  }
  std::vector<T> grad_logits(tokens * E);
  backend_->scores_backward(s.scores.data(), grad_scores.data(), tokens, E, config_.scoring,
                            grad_logits.data());
  if (config_.z_loss_alpha > 0) {
    backend_->z_loss_backward(s.logits.data(), tokens, E, config_.z_loss_alpha,
                              s.global_stats.tokens(), grad_logits.data());
  }
  backend_->gemm(false, false, tokens, H, E, T(1), grad_logits.data(), E,
                 params_.gate_weight.data(), H, T(1), grad_x, H, kernels::ParamOperand::b,
                 kernels::GemmPrecision::native);
  backend_->gemm(true, false, E, H, tokens, T(1), grad_logits.data(), E, s.x.data(), H, T(0),
                 replicated_grad.gate_weight.data(), H, kernels::ParamOperand::none,
                 kernels::GemmPrecision::native);
  gate_trace.reset();

  const double compute_end =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - call_start).count();
  {
    ScopedPhase phase(times_.grad_reduce);
    TraceSpan trace(tracer_, TracePhase::grad_reduce);
    auto& gate = replicated_grad.gate_weight;
    comm_.allreduce_sum(gate.data(), gate.size());
    trace.payload(static_cast<int64_t>(gate.size() * sizeof(T)));
    sum_replica_grads(replica_grads);
    backend_->add(grads_.gate_weight.data(), gate.data(), static_cast<int64_t>(gate.size()));
    if (!shared_sum.empty()) add_packed_swiglu(*backend_, shared_sum, grads_.shared);
    for (size_t e = 0; e < replica_grads.size(); ++e) {
      if (!replicated(static_cast<int>(e))) continue;
      auto& sum = replica_grads[e];
      auto& total_grad = grads_.experts[e];
      backend_->add(total_grad.gate_proj.data(), sum.gate_proj.data(), sum.gate_proj.size());
      backend_->add(total_grad.up_proj.data(), sum.up_proj.data(), sum.up_proj.size());
      backend_->add(total_grad.down_proj.data(), sum.down_proj.data(), sum.down_proj.size());
    }
  }
  // The step's timing for the overlap decision; the gradient reduction cannot be overlapped and
  // is left out of it.
  step_.seconds += compute_end;
  step_.comm_seconds += times_.comm_busy - busy_before;
  step_.compute_seconds += compute_end - waited;
  step_.pipelined = step_.pipelined || pipelined;
  overlap_.end_step(comm_, step_);
  step_ = {};
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
      backend_->add(sum.data(), holders[i] == me ? mine[e].data() : theirs[e][i].data(),
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
          const size_t slot =
              std::lower_bound(next_ids.begin(), next_ids.end(), e) - next_ids.begin();
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
  // Expert tensors moved, arrived or left: nothing the backend derived from them holds.
  backend_->parameters_changed();
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
