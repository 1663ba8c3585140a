// The layer's data flow, forward and backward: route, dispatch, experts, combine, with the shared
// experts and the gradient all-reduce beside them. The parts it calls live in files of their own:
// moe_layer_router.cpp, moe_layer_experts.cpp, moe_layer_replicas.cpp, moe_layer_migration.cpp.
#include "runtime/moe_layer.h"

#include <algorithm>
#include <chrono>
#include <initializer_list>
#include <optional>

#include <fmt/format.h>

#include "base/error.h"
#include "kernels/blas.h"
#include "kernels/gating.h"
#include "kernels/permute.h"
#include "kernels/swiglu.h"
#include "runtime/agreement.h"
#include "runtime/buffer_reuse.h"
#include "runtime/fault_injection.h"
#include "runtime/swiglu_packing.h"
#include "runtime/token_routes.h"
#include "runtime/wire_rows.h"

namespace switchyard {

template <typename T>
MoeLayer<T>::MoeLayer(const MoeConfig& config, comm::Communicator& comm,
                      planner::ExpertPlacement placement, const std::string& alltoall,
                      const OverlapOptions& overlap)
    : MoeLayer(config, comm, std::move(placement), LayerOptions{alltoall, overlap, {}}) {}

template <typename T>
MoeLayer<T>::MoeLayer(const MoeConfig& config, comm::Communicator& comm,
                      planner::ExpertPlacement placement, const LayerOptions& options,
                      const LocalStatus& caller_status)
    : config_(config),
      comm_(comm),
      placement_(std::move(placement)),
      thread_allowed_(comm_thread_allowed()),
      overlap_(OverlapOptions{}, thread_allowed_) {
  // Every local check first, then one collective in which every rank learns whether all could
  // build the layer and whether all build the same one: a rank that goes on alone, or with another
  // shape, would corrupt the exchanges that follow.
  LocalStatus status = caller_status;
  status.capture([&] {
    config_.validate();
    comm_thread_priority_ = comm_thread_priority_from_env();
    overlap_ = OverlapController(options.overlap, thread_allowed_);
    require_comm_thread_priority(options.overlap);
    require(placement_.num_experts() == config_.num_experts,
            fmt::format("the placement places {} experts but MoeConfig.num_experts is {}",
                        placement_.num_experts(), config_.num_experts));
    require(placement_.num_devices() == comm_.size(),
            fmt::format("the placement is for {} devices but the communicator has {} ranks",
                        placement_.num_devices(), comm_.size()));
    backend_ = kernels::make_backend<T>(options.backend);
  });
  std::vector<AgreedField> fields = config_.fields();
  fields.emplace_back("element type", sizeof(T) == 4 ? "fp32" : "fp64");
  fields.emplace_back("LayerOptions.alltoall", options.alltoall);
  fields.emplace_back("LayerOptions.overlap.mode",
                      std::to_string(static_cast<int>(options.overlap.mode)));
  fields.emplace_back("LayerOptions.overlap.chunks", std::to_string(options.overlap.chunks));
  fields.emplace_back("backend", backend_ ? backend_->name() : "(none)");
  fields.emplace_back("LayerOptions.backend.compute",
                      std::to_string(static_cast<int>(options.backend.compute)));
  append_placement_fields(placement_, fields);
  agree(comm_, "MoeLayer creation", status, fields,
        "Every rank must create the layer with the same MoeConfig, LayerOptions (backend included: "
        "check SWITCHYARD_BACKEND on each rank) and placement.");

  reuse_freed_buffers();
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
void MoeLayer<T>::require_usable() const {
  if (broken_.empty()) return;
  throw Error(ErrorCode::aborted,
              fmt::format("this layer refuses every call since an earlier one failed half-way "
                          "({}); its peers may be anywhere in that call, so no exchange can be "
                          "matched again. Destroy the layer and its communicator, and resume "
                          "from the last checkpoint",
                          broken_));
}

template <typename T>
MoeForward<T> MoeLayer<T>::forward(const T* x, int64_t tokens, int64_t hidden, T* y,
                                   const LocalStatus& caller_status) {
  return guard_call([&] { return forward_call(x, tokens, hidden, y, caller_status); });
}

template <typename T>
void MoeLayer<T>::backward(const MoeSaved<T>& saved, const T* grad_y, T* grad_x,
                           const LocalStatus& caller_status) {
  guard_call([&] { backward_call(saved, grad_y, grad_x, caller_status); });
}

template <typename T>
MoeForward<T> MoeLayer<T>::forward_call(const T* x, int64_t tokens, int64_t hidden, T* y,
                                        const LocalStatus& caller_status) {
  const auto call_start = std::chrono::steady_clock::now();
  const double waited_before = times_.dispatch + times_.combine;
  const double busy_before = times_.comm_busy;
  const int64_t H = config_.hidden;
  const int K = config_.top_k;
  const CallSchedule schedule = overlap_.next_forward();

  MoeForward<T> result;
  result.saved = std::make_unique<MoeSaved<T>>();
  MoeSaved<T>& s = *result.saved;
  std::vector<T> weights;
  // This rank's own checks; their outcome travels with the router statistics (route), so that a
  // failure here is an error on every rank of this call and none runs ahead into the exchange.
  LocalStatus status = caller_status;
  status.capture([&] {
    require(hidden == config_.hidden,
            fmt::format("forward: the input's hidden size {} does not match MoeConfig.hidden = {}",
                        hidden, config_.hidden));
    require(
        tokens >= 0 && tokens <= kMaxTokensPerCall,
        fmt::format("forward: token count must be in [0, {}], got {}", kMaxTokensPerCall, tokens));
    require(tokens == 0 || (x != nullptr && y != nullptr),
            "forward: x and y must be non-null when tokens > 0");
    s.tokens = tokens;
    s.x.assign(x, x + tokens * H);
    weights.resize(tokens * K);
  });
  result.aux = route(x, s, weights.data(), status);

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
        inject_fault(FaultPhase::dispatch, comm_.rank());
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
        inject_fault(FaultPhase::experts, comm_.rank());
        experts_forward(s.chunks[c], recv_side[c], recv_x[c], recv_y[c]);
      }
      ScopedPhase phase(times_.combine);
      queue.submit([&, c] {
        const MoeChunk<T>& chunk = s.chunks[c];
        ScopedPhase busy(times_.comm_busy);
        TraceSpan trace(tracer_, TracePhase::combine);
        LatencyTimer latency(metrics_, &Metrics::combine_forward);
        inject_fault(FaultPhase::combine, comm_.rank());
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
void MoeLayer<T>::backward_call(const MoeSaved<T>& s, const T* grad_y, T* grad_x,
                                const LocalStatus& caller_status) {
  LocalStatus status = caller_status;
  status.capture([&] {
    require(s.tokens == 0 || (grad_y != nullptr && grad_x != nullptr),
            "backward: grad_y and grad_x must be non-null when the forward had tokens");
    require(s.x.size() == static_cast<size_t>(s.tokens * config_.hidden) && !s.chunks.empty(),
            "backward: the saved state is not one of this layer's forwards");
  });
  // Backward's exchanges start from state every rank already holds, so nothing in them can
  // carry a status: one all-reduce of a single value (tens of microseconds), at the start of the
  // first exchange (so that a trace counts a late rank's delay as waiting in that exchange), makes
  // a rank's failed checks an error on every rank before any of them sends.
  auto agree_on_status = [&] {
    int64_t failed = status.failed() ? 1 : 0;
    inject_fault(FaultPhase::backward, comm_.rank());
    comm_.allreduce_sum(&failed, 1);
    if (failed != 0) raise_collective_failure(comm_, "backward", status);
  };
  // A rank whose checks failed touches none of its buffers (they may be null, the saved state
  // empty): it joins that all-reduce here, and the failure is raised on every rank.
  if (status.failed()) agree_on_status();
  ScopedPhase total(times_.backward);
  const auto call_start = std::chrono::steady_clock::now();
  const double busy_before = times_.comm_busy;
  const int64_t H = config_.hidden;
  const int K = config_.top_k;
  const int64_t tokens = s.tokens;
  const int C = static_cast<int>(s.chunks.size());
  const bool pipelined = overlap_.backward_pipelined();
  std::fill(grad_x, grad_x + tokens * H, T(0));

  // This rank's contributions to the replicated gradients (gate, shared experts, replicated
  // routed experts) go to buffers of their own until they are summed over ranks; the others
  // accumulate directly.
  reset_replicated_grad_buffers();
  const int64_t shared_size = params_.shared.inter * H;
  const kernels::SwigluGrads<T> shared_grads{shared_grad_sum_.data(),
                                             shared_grad_sum_.data() + shared_size,
                                             shared_grad_sum_.data() + 2 * shared_size};

  // Combine backward is a dispatch of the output gradient to the ranks that computed each token;
  // dispatch backward is a combine of [grad_x | grad_weight per slot] rows.
  const int64_t width = H + K;
  std::vector<std::vector<T>> grad_recv(C), back_rows(C);
  std::vector<T> back_tokens(tokens * width);
  std::vector<comm::PhaseStats> dispatch_stats(C), combine_stats(C);
  std::vector<uint64_t> dispatched(C);
  double waited = 0;  // for the caller's communication
  // The shared experts' gradient all-reduce when the layer is not pipelined: started as soon as
  // they are known, advanced between the routed experts' GEMMs, finished at the end.
  comm::PendingSum shared_reduce;
  auto advance_reduce = [&] { shared_reduce.progress(); };
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
        if (c == 0) agree_on_status();
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
                                  shared_grad_x.data(), shared_grads);
        backend_->add(grad_x, shared_grad_x.data(), tokens * H);
      }
      // The shared experts' gradients are summed over ranks while the routed experts' backward
      // runs (the gate's are known only at the end): on the communication thread when pipelined,
      // else as a nonblocking all-reduce.
      inject_fault(FaultPhase::grad_reduce, comm_.rank());
      if (pipelined) {
        ScopedPhase wait(waited);
        queue.submit([&] {
          ScopedPhase phase(times_.grad_reduce);
          TraceSpan trace(tracer_, TracePhase::grad_reduce);
          comm_.allreduce_sum(shared_grad_sum_.data(), shared_grad_sum_.size());
          trace.payload(static_cast<int64_t>(shared_grad_sum_.size() * sizeof(T)));
        });
      } else {
        // The trace shows where it starts (its bytes); its wait is in the last grad_reduce span.
        TraceSpan trace(tracer_, TracePhase::grad_reduce);
        // Made at the first start, which every rank reaches in the same call (past the call's
        // agreement: persistent sums are made collectively). The buffer's size is the config's,
        // so it never moves afterwards.
        if (shared_sum_ == nullptr) {
          shared_sum_ = comm_.persistent_sum(shared_grad_sum_.data(), shared_grad_sum_.size());
        }
        SY_ENFORCE(shared_sum_->covers(shared_grad_sum_.data(), shared_grad_sum_.size()),
                   ErrorCode::internal, "backward: the shared experts' gradient buffer moved");
        shared_reduce = shared_sum_->start();
        trace.payload(static_cast<int64_t>(shared_grad_sum_.size() * sizeof(T)));
      }
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
        advance_reduce();
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
      experts_backward_weights(s.chunks[c], grad_out, grad_gate_pre, grad_up_pre, replica_grads_,
                               advance_reduce);
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

  router_backward(s, grad_weights.data(), grad_x, gate_grad_sum_.data());
  gate_trace.reset();

  const double compute_end =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - call_start).count();
  {
    ScopedPhase phase(times_.grad_reduce);
    TraceSpan trace(tracer_, TracePhase::grad_reduce);
    auto& gate = gate_grad_sum_;
    inject_fault(FaultPhase::grad_reduce, comm_.rank());
    comm_.allreduce_sum(gate.data(), gate.size());
    shared_reduce.finish();
    trace.payload(static_cast<int64_t>(gate.size() * sizeof(T)));
    sum_replica_grads(replica_grads_);
    // Gradients bound fresh that the routed experts' GEMMs did not write (the gate, the shared and
    // replicated experts, experts without tokens in this batch) start from zeros.
    grads_.zero_fresh();
    backend_->add(grads_.gate_weight.data(), gate.data(), static_cast<int64_t>(gate.size()));
    if (config_.num_shared > 0) add_packed_swiglu(*backend_, shared_grad_sum_, grads_.shared);
    for (size_t e = 0; e < replica_grads_.size(); ++e) {
      if (!replicated(static_cast<int>(e))) continue;
      auto& sum = replica_grads_[e];
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
void MoeLayer<T>::reset_replicated_grad_buffers() {
  const int64_t H = config_.hidden;
  // assign() keeps the capacity: no allocation, no page faults after the first call.
  shared_grad_sum_.assign(3 * params_.shared.inter * H, T(0));
  gate_grad_sum_.assign(static_cast<size_t>(config_.num_experts) * H, T(0));
  replica_grads_.resize(params_.experts.size());
  for (size_t e = 0; e < replica_grads_.size(); ++e) {
    SwigluParams<T>& g = replica_grads_[e];
    if (!replicated(static_cast<int>(e))) {
      g = SwigluParams<T>();
    } else if (g.hidden != H || g.inter != config_.intermediate) {
      g = SwigluParams<T>(H, config_.intermediate);
    } else {
      for (auto* t : {&g.gate_proj, &g.up_proj, &g.down_proj})
        std::fill(t->begin(), t->end(), T(0));
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

template class MoeLayer<float>;
template class MoeLayer<double>;

}  // namespace switchyard
