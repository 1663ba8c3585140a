// Communication profiling: a per-rank, in-memory record of every phase of the MoE layer (gate,
// dispatch, experts, combine, shared experts, their backward counterparts, gradient reduction,
// re-plan, migration) with steady-clock start/end and, for data movement, the bytes this rank sends
// to and receives from every peer. Off unless a Tracer is attached (MoeLayer::set_tracer); nothing
// is communicated while tracing, so the cost per event is two clock reads and a few stores.
// Tracer::write gathers all ranks to rank 0 and writes one Chrome trace-event JSON file (opens in
// ui.perfetto.dev; read by tools/sy-trace), timestamps aligned to rank 0's clock.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "comm/alltoall/alltoall.h"
#include "comm/communicator.h"

namespace switchyard {

enum class TracePhase : uint8_t {
  gate, dispatch, experts, combine, shared,                            // forward
  shared_bwd, combine_bwd, experts_bwd, dispatch_bwd, gate_bwd, grad_reduce,  // backward
  replan, migration,                                                   // placement changes
};

// The Chrome "thread" an event is drawn on inside its rank's process: the two all-to-all
// directions get their own tracks so that overlap with compute would show as parallel bars.
enum class TraceTrack : uint8_t { compute = 1, dispatch = 2, combine = 3, collective = 4 };

const char* trace_phase_name(TracePhase phase);
TraceTrack trace_track(TracePhase phase);

struct TraceEvent {
  TracePhase phase;
  int64_t step = 0;
  int64_t call = -1;          // all-to-all call number, the same on every rank; -1: not one
  int64_t start_ns = 0;       // this rank's steady clock
  int64_t end_ns = 0;
  int64_t peers_at = -1;      // index into Tracer::peer_bytes(): [send per peer | recv per peer]
  int64_t wire_bytes = 0;     // what the algorithm put on the wire (relays included), or the
                              // all-reduce payload of grad_reduce
  int64_t wire_inter_node_bytes = 0;
};

// This rank's clock against rank 0's, from ping-pong rounds: the round with the smallest round
// trip gives offset = (t_send + t_recv) / 2 - t_rank0, uncertain by at most half that round trip.
struct ClockSync {
  int rounds = 0;
  int64_t offset_ns = 0;    // local - rank 0; 0 on rank 0
  int64_t residual_ns = 0;  // half the minimum round trip; 0 on rank 0
  int64_t origin_ns = 0;    // rank 0's clock when it started the alignment: trace time zero
};

// Spans may be recorded from several threads at once (a pipelined layer's communication thread);
// events(), peer_bytes() and write() are for when no span is open.
class Tracer {
 public:
  // Collective over comm: aligns this rank's clock against rank 0 with `rounds` ping-pongs per rank.
  explicit Tracer(comm::Communicator& comm, int rounds = 16);

  // The SWITCHYARD_TRACE environment variable: where to write the trace, empty when unset.
  static std::string path_from_env();

  // Training step stamped on the events recorded from now on.
  void set_step(int64_t step) { step_ = step; }

  const ClockSync& clock() const { return clock_; }
  const std::vector<TraceEvent>& events() const { return events_; }
  const std::vector<int64_t>& peer_bytes() const { return peer_bytes_; }
  int world() const { return world_; }

  // Collective: gathers every rank's events to rank 0, which writes the merged trace to path.
  // Events stay recorded (a later write includes them again). Throws Error(invalid_argument) on
  // rank 0 when the file cannot be written.
  void write(const std::string& path);

 private:
  friend class TraceSpan;
  void align_clocks(int rounds);
  std::string rank_events_json() const;

  comm::Communicator& comm_;
  int world_;
  ClockSync clock_;
  std::mutex mutex_;  // guards next_call_, events_, peer_bytes_ while spans are recorded
  int64_t step_ = 0;
  int64_t next_call_ = 0;
  std::vector<TraceEvent> events_;
  std::vector<int64_t> peer_bytes_;
};

// Records one event from construction to destruction; does nothing when tracer is null, so the
// layer's hooks cost one branch with tracing off.
class TraceSpan {
 public:
  TraceSpan(Tracer* tracer, TracePhase phase);
  ~TraceSpan();
  TraceSpan(const TraceSpan&) = delete;
  TraceSpan& operator=(const TraceSpan&) = delete;

  // An all-to-all over layout: outbound (a dispatch) sends layout's send rows and receives its
  // recv rows; the return direction (a combine) the reverse. row_bytes: bytes of one row.
  void all_to_all(const comm::RouteLayout& layout, bool outbound, size_t row_bytes,
                  const comm::PhaseStats& wire);
  // Point-to-point transfers (migration): bytes to / from one peer.
  void sent(int peer, int64_t bytes);
  void received(int peer, int64_t bytes);
  // A collective's payload (grad_reduce).
  void payload(int64_t bytes);

 private:
  int64_t* peers();

  Tracer* tracer_;
  TraceEvent event_;
  std::vector<int64_t> peers_;  // [send per peer | recv per peer], copied to the tracer at the end
};

}  // namespace switchyard
