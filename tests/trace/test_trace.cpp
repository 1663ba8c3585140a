// Tracing of the MoE layer: the events of one forward and backward carry exactly the bytes each
// RouteLayout says must move (and every sender's count is its receiver's), the clock estimate is
// within its stated residual, and the merged file holds every rank's events with link classes
// taken from the topology.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "runtime/moe_layer.h"
#include "runtime/token_routes.h"
#include "runtime/trace.h"

namespace sy = switchyard;

namespace {

sy::MoeConfig config() {
  sy::MoeConfig c;
  c.hidden = 16;
  c.num_experts = 8;
  c.num_shared = 1;
  c.top_k = 3;
  c.intermediate = 8;
  return c;
}

// One traced forward and backward on a two-ranks-per-node topology, with uneven token counts.
struct TracedStep {
  sy::comm::Communicator comm{MPI_COMM_WORLD};
  std::unique_ptr<sy::MoeLayer<float>> owned;
  std::unique_ptr<sy::Tracer> tracer;
  sy::MoeForward<float> fwd;
  size_t side_bytes = 0;

  TracedStep() {
    comm.override_topology(sy::comm::Topology::blocked(comm.rank(), comm.size(), 2));
    const auto c = config();
    const auto placement = sy::planner::ExpertPlacement::contiguous(c.num_experts, comm.size());
    owned = std::make_unique<sy::MoeLayer<float>>(c, comm, placement);
    sy::init_params(owned->params(), 11);
    tracer = std::make_unique<sy::Tracer>(comm, 4);
    owned->set_tracer(tracer.get());
    tracer->set_step(3);
    const int64_t tokens = 10 + 3 * comm.rank();
    std::vector<float> x(tokens * c.hidden), y(x.size()), grad_x(x.size());
    std::mt19937 rng(100 + comm.rank());
    std::normal_distribution<float> normal;
    for (auto& v : x) v = normal(rng);
    fwd = owned->forward(x.data(), tokens, c.hidden, y.data());
    const std::vector<float> grad_y(x.size(), 1.0f);
    owned->backward(*fwd.saved, grad_y.data(), grad_x.data());
    side_bytes = sy::build_token_routes<float>(nullptr, nullptr, 0, c.top_k, placement,
                                               comm.rank(), comm.topology().node_of_rank)
                     .side_bytes;
  }

  const sy::TraceEvent& event(sy::TracePhase phase) const {
    for (const auto& e : tracer->events()) {
      if (e.phase == phase) return e;
    }
    throw std::runtime_error(std::string("no event for ") + sy::trace_phase_name(phase));
  }
  std::vector<int64_t> send(const sy::TraceEvent& e) const {
    const int64_t* p = tracer->peer_bytes().data() + e.peers_at;
    return {p, p + comm.size()};
  }
  std::vector<int64_t> recv(const sy::TraceEvent& e) const {
    const int64_t* p = tracer->peer_bytes().data() + e.peers_at + comm.size();
    return {p, p + comm.size()};
  }
};

std::vector<int64_t> rows_times(const std::vector<int64_t>& offsets, int64_t row_bytes) {
  std::vector<int64_t> out;
  for (size_t r = 0; r + 1 < offsets.size(); ++r) out.push_back((offsets[r + 1] - offsets[r]) * row_bytes);
  return out;
}

TEST(Trace, EveryPhaseIsRecordedInOrderWithItsStep) {
  TracedStep s;
  // Serial (overlap off): the shared experts follow the dispatch (they would run while it is in
  // flight), their gradients' all-reduce starts before the routed experts' backward (and is
  // finished in the last grad_reduce, beside the gate's), and the expert backward records its
  // data half before the dispatch backward and its weight half after it (the weight gradients
  // fill the time the rows spend on the wire).
  const std::vector<sy::TracePhase> expected = {
      sy::TracePhase::gate,         sy::TracePhase::dispatch,    sy::TracePhase::shared,
      sy::TracePhase::experts,      sy::TracePhase::combine,     sy::TracePhase::combine_bwd,
      sy::TracePhase::shared_bwd,   sy::TracePhase::grad_reduce, sy::TracePhase::experts_bwd,
      sy::TracePhase::dispatch_bwd, sy::TracePhase::experts_bwd, sy::TracePhase::gate_bwd,
      sy::TracePhase::grad_reduce};
  const auto& events = s.tracer->events();
  ASSERT_EQ(events.size(), expected.size());
  int64_t call = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].phase, expected[i]) << i;
    EXPECT_EQ(events[i].step, 3);
    EXPECT_LE(events[i].start_ns, events[i].end_ns);
    if (i > 0) {
      EXPECT_GE(events[i].start_ns, events[i - 1].end_ns);
    }
    const auto track = sy::trace_track(events[i].phase);
    const bool all_to_all = track == sy::TraceTrack::dispatch || track == sy::TraceTrack::combine;
    EXPECT_EQ(events[i].call, all_to_all ? call++ : -1);
    EXPECT_EQ(events[i].peers_at >= 0, all_to_all);
  }
  EXPECT_GT(s.event(sy::TracePhase::grad_reduce).wire_bytes, 0);
}

TEST(Trace, AllToAllBytesAreTheLayoutsRowsTimesRowBytes) {
  TracedStep s;
  const auto& layout = s.fwd.saved->chunks.at(0).layout;
  const int64_t H = config().hidden, K = config().top_k;
  const int64_t token = H * sizeof(float);
  struct Case {
    sy::TracePhase phase;
    bool outbound;
    int64_t row_bytes;
  };
  for (const Case& c : {Case{sy::TracePhase::dispatch, true, token + int64_t(s.side_bytes)},
                        Case{sy::TracePhase::combine, false, token},
                        Case{sy::TracePhase::combine_bwd, true, token},
                        Case{sy::TracePhase::dispatch_bwd, false, (H + K) * int64_t(sizeof(float))}}) {
    SCOPED_TRACE(sy::trace_phase_name(c.phase));
    const auto& e = s.event(c.phase);
    const auto& out = c.outbound ? layout.send_offsets : layout.recv_offsets;
    const auto& in = c.outbound ? layout.recv_offsets : layout.send_offsets;
    EXPECT_EQ(s.send(e), rows_times(out, c.row_bytes));
    EXPECT_EQ(s.recv(e), rows_times(in, c.row_bytes));
    // Flat all-to-all puts exactly the logical bytes to other ranks on the wire.
    int64_t to_others = 0;
    for (int r = 0; r < s.comm.size(); ++r) to_others += r == s.comm.rank() ? 0 : s.send(e)[r];
    EXPECT_EQ(e.wire_bytes, to_others);

    // What each rank says it sent to d is what d says it received from it.
    const int n = s.comm.size();
    std::vector<int64_t> sends(n * n), recvs(n * n);
    MPI_Allgather(s.send(e).data(), n, MPI_INT64_T, sends.data(), n, MPI_INT64_T, MPI_COMM_WORLD);
    MPI_Allgather(s.recv(e).data(), n, MPI_INT64_T, recvs.data(), n, MPI_INT64_T, MPI_COMM_WORLD);
    for (int src = 0; src < n; ++src) {
      for (int dst = 0; dst < n; ++dst) EXPECT_EQ(sends[src * n + dst], recvs[dst * n + src]);
    }
  }
}

TEST(Trace, ClockOffsetIsWithinItsResidual) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  sy::Tracer tracer(comm, 8);
  const auto& clock = tracer.clock();
  EXPECT_EQ(clock.rounds, 8);
  if (comm.rank() == 0) {
    EXPECT_EQ(clock.offset_ns, 0);
    EXPECT_EQ(clock.residual_ns, 0);
  } else {
    // All ranks of this test share one machine, hence one steady clock: the true offset is 0, and
    // the estimate can be off by at most half the round trip it came from.
    EXPECT_GT(clock.residual_ns, 0);
    EXPECT_LE(std::abs(clock.offset_ns), clock.residual_ns);
  }
  int64_t origin = clock.origin_ns, lowest = 0;
  MPI_Allreduce(&origin, &lowest, 1, MPI_INT64_T, MPI_MIN, MPI_COMM_WORLD);
  EXPECT_EQ(origin, lowest);  // every rank has rank 0's time zero
}

TEST(Trace, MergedFileHoldsEveryRankWithLinkClasses) {
  TracedStep s;
  const std::string path = "trace_test_merged.json";
  s.tracer->write(path);
  if (s.comm.rank() != 0) return;
  std::ifstream in(path);
  const auto doc = nlohmann::json::parse(in);
  const int n = s.comm.size();
  EXPECT_EQ(doc["otherData"]["format"], "switchyard-trace/v1");
  EXPECT_EQ(doc["otherData"]["ranks"], n);
  EXPECT_EQ(doc["otherData"]["clock"]["residual_ns"].size(), size_t(n));
  std::vector<int> complete(n, 0), named(n, 0);
  for (const auto& e : doc["traceEvents"]) {
    const int pid = e["pid"];
    if (e["ph"] == "M" && e["name"] == "process_name") ++named[pid];
    if (e["ph"] != "X") continue;
    ++complete[pid];
    const auto& args = e["args"];
    if (!args.contains("send_bytes")) continue;
    int64_t intra = 0, inter = 0;
    for (int p = 0; p < n; ++p) {
      if (p == pid) continue;
      (p / 2 == pid / 2 ? intra : inter) += args["send_bytes"][p].get<int64_t>();
    }
    EXPECT_EQ(args["intra_node_bytes"], intra);
    EXPECT_EQ(args["inter_node_bytes"], inter);
  }
  for (int r = 0; r < n; ++r) {
    EXPECT_EQ(named[r], 1) << "rank " << r;
    EXPECT_EQ(complete[r], 13) << "rank " << r;
  }
  std::remove(path.c_str());
}

TEST(Trace, OffByDefault) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  const auto c = config();
  sy::MoeLayer<float> layer(c, comm, sy::planner::ExpertPlacement::contiguous(8, comm.size()));
  sy::Tracer tracer(comm, 1);  // exists, but no layer was given it
  std::vector<float> x(4 * c.hidden, 0.5f), y(x.size());
  layer.forward(x.data(), 4, c.hidden, y.data());
  EXPECT_TRUE(tracer.events().empty());
}

}  // namespace
