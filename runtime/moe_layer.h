// The expert-parallel DeepSeekMoE layer. Every rank holds its own tokens and the routed experts the
// placement gives it; forward and backward move tokens to their experts and back through the
// communicator's all-to-all. Semantics: ../shared/DESIGN.md "Routing semantics".
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "comm/alltoall/alltoall.h"
#include "comm/communicator.h"
#include "kernels/aux_loss.h"
#include "kernels/backend.h"
#include "planner/placement.h"
#include "runtime/agreement.h"
#include "runtime/comm_queue.h"
#include "runtime/metrics.h"
#include "runtime/moe_config.h"
#include "runtime/moe_params.h"
#include "runtime/overlap.h"
#include "runtime/phase_times.h"
#include "runtime/thread_priority.h"
#include "runtime/trace.h"

namespace switchyard {

// What backward needs of one token chunk of a forward call (a call has one chunk unless it is
// pipelined or chunked, see overlap.h).
template <typename T>
struct MoeChunk {
  int64_t begin = 0;  // the chunk's tokens are [begin, end) of the call's
  int64_t end = 0;
  comm::RouteLayout layout;
  // Received (row, slot) pairs for this rank's experts, grouped by local expert.
  std::vector<int64_t> pair_rows;
  std::vector<int32_t> pair_slots;
  std::vector<T> pair_weights;
  std::vector<int64_t> expert_offsets;  // [local experts + 1]
  std::vector<T> expert_x;              // [pairs, H]
  std::vector<T> expert_gate_pre;       // [pairs, I]
  std::vector<T> expert_up_pre;         // [pairs, I]
  std::vector<T> expert_out;            // [pairs, H] before weighting
};

// Everything backward needs from one forward call. Independent of the layer's later calls, so
// several forwards may be outstanding (e.g. gradient accumulation).
template <typename T>
struct MoeSaved {
  int64_t tokens = 0;
  std::vector<T> x;          // [tokens, H] input
  std::vector<T> logits;     // [tokens, E]
  std::vector<T> scores;     // [tokens, E] unbiased
  std::vector<int32_t> idx;  // [tokens, K]
  std::vector<MoeChunk<T>> chunks;
  std::vector<T> shared_gate_pre;  // [tokens, S*I]
  std::vector<T> shared_up_pre;    // [tokens, S*I]
  kernels::RouterStats global_stats{0};
};

template <typename T>
struct MoeForward {
  std::unique_ptr<MoeSaved<T>> saved;
  kernels::AuxLosses aux;  // unweighted; over the global batch
};

// How a layer runs, apart from what it computes (MoeConfig): the all-to-all algorithm, overlap,
// and the kernel backend. Every rank passes the same options.
struct LayerOptions {
  std::string alltoall = "flat";  // comm::make_alltoall's names
  OverlapOptions overlap;
  kernels::BackendOptions backend;  // name "" = SWITCHYARD_BACKEND, else openblas
};

template <typename T>
class MoeLayer {
 public:
  // Validates config; throws Error(invalid_argument) naming a bad field. Parameters start at zero.
  // overlap: whether forward and backward pipeline their all-to-all with expert compute
  // (overlap.h); Error(unsupported) for mode on when MPI's thread level does not allow it.
  // Error(invalid_argument) for a backend this build lacks or that cannot compute in the asked
  // precision.
  // Collective: every rank's checks and its config, options and placement are compared in one
  // collective first; a failed check on any rank (caller_status: the caller's own) or any
  // difference throws CollectiveFailure on every rank naming the ranks and fields.
  MoeLayer(const MoeConfig& config, comm::Communicator& comm, planner::ExpertPlacement placement,
           const LayerOptions& options, const LocalStatus& caller_status = {});
  MoeLayer(const MoeConfig& config, comm::Communicator& comm, planner::ExpertPlacement placement,
           const std::string& alltoall = "flat", const OverlapOptions& overlap = {});
  ~MoeLayer();

  const MoeConfig& config() const { return config_; }
  const planner::ExpertPlacement& placement() const { return placement_; }
  // Mutable access may change parameters: the backend drops what it derived from them.
  MoeParams<T>& params() {
    backend_->parameters_changed();
    return params_;
  }
  const MoeParams<T>& params() const { return params_; }
  // Parameters were changed in place through memory the caller kept: tell the backend.
  void parameters_changed() { backend_->parameters_changed(); }
  kernels::Backend<T>& backend() { return *backend_; }
  MoeParams<T>& grads() { return grads_; }
  std::vector<T>& selection_bias() { return bias_; }

  // The most tokens one rank may pass to one forward call.
  static constexpr int64_t kMaxTokensPerCall = int64_t(1) << 31;

  // Errors. Every rank makes the same calls in the same order. A call whose checks fail on any
  // rank (hidden != config().hidden, a token count outside [0, kMaxTokensPerCall], null buffers,
  // no memory for the saved state, a caller_status that failed) throws CollectiveFailure on every
  // rank, naming each failing rank and its message, before any rank has changed or sent anything:
  // the layer stays usable. Any other failure (a peer that timed out or died mid-exchange, memory
  // running out half-way) leaves the peers somewhere inside the call: the layer then refuses every
  // later call with Error(aborted) saying why.

  // x: [tokens, hidden] -> y: [tokens, hidden]. tokens may differ per rank and may be 0; every rank
  // must call forward together. caller_status: the caller's own checks of this call, made
  // collective.
  MoeForward<T> forward(const T* x, int64_t tokens, int64_t hidden, T* y,
                        const LocalStatus& caller_status = {});

  // grad_y: [tokens, hidden] -> grad_x (overwritten). Adds the parameter gradients of this batch
  // (replicated ones summed over ranks) and of the weighted aux losses to grads(). caller_status:
  // the caller's own checks of this call (e.g. the C API's: saved already used), made collective.
  void backward(const MoeSaved<T>& saved, const T* grad_y, T* grad_x,
                const LocalStatus& caller_status = {});

  // Aux-loss-free balancing: bias[e] += rate * sign(mean_load - load[e]) with the global loads of
  // the last forward. No-op unless config().selection_bias.
  void update_selection_bias();

  // Tokens per expert (globally reduced) of the last forward.
  const std::vector<double>& last_expert_load() const { return last_load_; }

  // (token, expert) pairs each rank computed in the last forward. Collective.
  std::vector<double> measure_device_load();

  // Moves to another placement (e.g. a re-plan with replicas of hot experts). Experts this rank
  // newly holds arrive, point to point, from their lowest current holder together with the
  // matching tensors of every companion (optimizer moments laid out like params()); experts it no
  // longer holds are dropped. Gradients are reset to zero. Collective; every rank passes the same
  // placement: the placements are compared first (one small collective) and a difference, or a
  // check failing on any rank, is an error on every rank naming it. caller_status carries the
  // caller's own checks of next (e.g. parsing it), made collective the same way. On a failure
  // during the transfers (e.g. a peer timed out) this rank's experts and companions are unchanged
  // but the layer refuses later calls (its peers may have moved on).
  void apply_placement(const planner::ExpertPlacement& next,
                       const std::vector<MoeParams<T>*>& companions = {},
                       const LocalStatus& caller_status = {});

  // Replaces the overlap options (the measurements of automatic mode start over). Every rank
  // must make the same change between the same calls.
  void set_overlap(const OverlapOptions& overlap);
  // The overlap decisions so far, one line for logs.
  const std::string& overlap_decision() const { return overlap_.decision(); }
  // What the next forward will run (pipelined or not, and its chunk count).
  CallSchedule overlap_schedule() const { return overlap_.next_forward(); }
  // The pipelined steps' communication thread's priority (runtime/thread_priority.h).
  ThreadPriority comm_thread_priority() const { return comm_thread_priority_; }

  // With overlap, dispatch and combine are the time the caller waited for them (what was not
  // hidden); the full time of the all-to-all calls, waited for or not, is in comm_busy.
  PhaseTimes& times() { return times_; }
  TrafficCounters& traffic() { return traffic_; }
  // Records every phase of later calls into tracer (null: tracing off, the default). The tracer
  // must outlive the layer's calls; several layers may share one.
  void set_tracer(Tracer* tracer) { tracer_ = tracer; }
  // Adds this layer's traffic, all-to-all latencies, device imbalance and migrations of later calls
  // to metrics (null: off, the default); same lifetime and sharing rules as the tracer.
  void set_metrics(Metrics* metrics) { metrics_ = metrics; }

 private:
  MoeForward<T> forward_call(const T* x, int64_t tokens, int64_t hidden, T* y,
                             const LocalStatus& caller_status);
  void backward_call(const MoeSaved<T>& saved, const T* grad_y, T* grad_x,
                     const LocalStatus& caller_status);
  void apply_placement_call(const planner::ExpertPlacement& next,
                            const std::vector<MoeParams<T>*>& companions,
                            const LocalStatus& caller_status);
  // Runs one public call: refused when the layer is broken; breaks it when the call fails other
  // than collectively.
  template <typename Body>
  auto guard_call(Body&& body) {
    require_usable();
    try {
      return body();
    } catch (const CollectiveFailure&) {
      throw;  // raised on every rank before anything changed: the layer stays usable
    } catch (const std::exception& e) {
      broken_ = e.what();
      throw;
    }
  }
  void require_usable() const;

  // The router (moe_layer_router.cpp): fills s's logits, scores, idx and global statistics and
  // weights [tokens, K] from x; returns the aux losses. status: this rank's checks of the call;
  // the router statistics' all-reduce carries it, and a failure on any rank throws
  // CollectiveFailure on all. Its backward adds the router's part of
  // grad_x and writes the gate's gradient of this batch (before the all-reduce) to gate_grad.
  kernels::AuxLosses route(const T* x, MoeSaved<T>& s, T* weights, const LocalStatus& status);
  void router_backward(const MoeSaved<T>& s, const T* grad_weights, T* grad_x, T* gate_grad);
  // The routed experts on received rows (moe_layer_experts.cpp).
  void experts_forward(MoeChunk<T>& chunk, const std::vector<std::byte>& recv_side,
                       const std::vector<T>& recv_x, std::vector<T>& recv_y);
  // The expert backward of one chunk: from the output gradient rows it received, the rows to
  // send back ([grad_x | grad_weight per slot] per received row) now, and the expert weight
  // gradients (into grads_ or, for replicated experts, replica_grads) after back_rows is on its way
  // (weights_later runs that part).
  void experts_backward_data(const MoeChunk<T>& chunk, const std::vector<T>& grad_recv,
                             std::vector<T>& grad_out, std::vector<T>& grad_gate_pre,
                             std::vector<T>& grad_up_pre, std::vector<T>& back_rows);
  // between_experts runs after each expert's GEMMs (the backward advances a started all-reduce).
  void experts_backward_weights(const MoeChunk<T>& chunk, const std::vector<T>& grad_out,
                                const std::vector<T>& grad_gate_pre,
                                const std::vector<T>& grad_up_pre,
                                std::vector<SwigluParams<T>>& replica_grads,
                                const std::function<void()>& between_experts);
  // Zeroes the buffers one backward's replicated gradients go to before they are summed over
  // ranks, allocating only for shapes not seen before.
  void reset_replicated_grad_buffers();
  // Where the overlap options may start a communication thread: that its priority is granted.
  void require_comm_thread_priority(const OverlapOptions& overlap) const;
  // The queue this call's all-to-all ops go through: the layer's communication thread when
  // pipelined, else one that runs them at once.
  CommQueue& queue_for(bool pipelined, std::optional<CommQueue>& inline_queue);
  // Sums, over the ranks holding each replicated expert, that expert's gradient of this backward
  // (grads[i] for params_.experts[i]; others are untouched), adding in ascending rank order on
  // every holder so that the replicas stay bit-identical.
  void sum_replica_grads(std::vector<SwigluParams<T>>& grads);
  bool replicated(int local_expert) const;
  void count_traffic(const comm::PhaseStats& phase);

  MoeConfig config_;
  comm::Communicator& comm_;
  planner::ExpertPlacement placement_;
  std::unique_ptr<comm::AllToAll> alltoall_;
  std::unique_ptr<kernels::Backend<T>> backend_;
  MoeParams<T> params_;
  MoeParams<T> grads_;
  std::vector<T> bias_;
  std::vector<int> device_of_expert_;  // primary owner: what device-level losses group by
  std::vector<int> node_of_rank_;
  std::vector<double> last_load_;
  int64_t last_local_pairs_ = 0;
  PhaseTimes times_;
  TrafficCounters traffic_;
  Tracer* tracer_ = nullptr;
  Metrics* metrics_ = nullptr;
  bool thread_allowed_ = false;          // comm_thread_allowed() at construction
  ThreadPriority comm_thread_priority_;  // SWITCHYARD_COMM_THREAD_PRIORITY at construction
  OverlapController overlap_;
  std::unique_ptr<CommQueue> comm_thread_;  // started by the first pipelined call
  StepTiming step_;                         // of the step in progress, for overlap_
  // One backward's contributions to the replicated gradients, kept until they are summed over
  // ranks and added to grads_ (so that a gradient accumulated over several backwards is never
  // summed twice). Kept between calls: a step allocates nothing once its shapes have been seen.
  std::vector<T> shared_grad_sum_;              // the shared experts' [gate | up | down]
  std::vector<T> gate_grad_sum_;                // [E, H]
  std::vector<SwigluParams<T>> replica_grads_;  // per local expert; empty unless replicated
  // shared_grad_sum_'s sum when the backward is not pipelined, set up once (comm/communicator.h).
  std::unique_ptr<comm::PersistentSum> shared_sum_;
  std::string broken_;  // why every call is refused ("" while the layer is usable)
};

}  // namespace switchyard
