#include "runtime/trace.h"

#include <fmt/format.h>

#include <cstdlib>
#include <fstream>
#include <limits>

#include "base/error.h"
#include "comm/tags.h"
#include "runtime/environment.h"

namespace switchyard {

namespace {

using comm::kClockTag;  // every message tag: comm/tags.h
using comm::kGatherTag;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct PhaseInfo {
  const char* name;
  TraceTrack track;
  bool backward;
};

constexpr PhaseInfo kPhases[] = {
    {"gate", TraceTrack::compute, false},
    {"dispatch", TraceTrack::dispatch, false},
    {"experts", TraceTrack::compute, false},
    {"combine", TraceTrack::combine, false},
    {"shared", TraceTrack::compute, false},
    {"shared_bwd", TraceTrack::compute, true},
    // Combine backward moves output gradients outward like a dispatch; dispatch backward brings
    // input gradients back like a combine: each is drawn on the track of the direction it moves.
    {"combine_bwd", TraceTrack::dispatch, true},
    {"experts_bwd", TraceTrack::compute, true},
    {"dispatch_bwd", TraceTrack::combine, true},
    {"gate_bwd", TraceTrack::compute, true},
    {"grad_reduce", TraceTrack::collective, true},
    {"replan", TraceTrack::compute, false},
    {"migration", TraceTrack::collective, false},
};

const PhaseInfo& info(TracePhase phase) { return kPhases[static_cast<size_t>(phase)]; }

bool is_all_to_all(TracePhase phase) {
  const TraceTrack t = info(phase).track;
  return t == TraceTrack::dispatch || t == TraceTrack::combine;
}

template <typename Int>
std::string json_list(const Int* v, int n) {
  std::string out = "[";
  for (int i = 0; i < n; ++i) out += fmt::format("{}{}", i ? "," : "", v[i]);
  return out + "]";
}

void wait(comm::Communicator& comm, std::vector<comm::Request>& requests, const char* what) {
  comm::wait_all(comm.transport(), requests, comm.timeout(), what);
  requests.clear();
}

}  // namespace

const char* trace_phase_name(TracePhase phase) { return info(phase).name; }
TraceTrack trace_track(TracePhase phase) { return info(phase).track; }

Tracer::Tracer(comm::Communicator& comm, int rounds) : comm_(comm), world_(comm.size()) {
  require(rounds > 0, fmt::format("Tracer: clock alignment needs at least one round, got {}", rounds));
  events_.reserve(1 << 14);
  align_clocks(rounds);
}

std::string Tracer::path_from_env() {
  return environment::trace_path();
}

void Tracer::align_clocks(int rounds) {
  clock_.rounds = rounds;
  comm::Transport& t = comm_.transport();
  std::vector<comm::Request> requests;
  if (comm_.rank() == 0) {
    clock_.origin_ns = now_ns();
    // Serves one rank at a time so that no other exchange inflates a round trip.
    for (int peer = 1; peer < world_; ++peer) {
      for (int i = 0; i < rounds; ++i) {
        int64_t ping = 0;
        requests.push_back(t.irecv(peer, &ping, sizeof ping, kClockTag));
        wait(comm_, requests, "trace clock alignment");
        const int64_t reply[2] = {now_ns(), clock_.origin_ns};
        requests.push_back(t.isend(peer, reply, sizeof reply, kClockTag));
        wait(comm_, requests, "trace clock alignment");
      }
    }
    return;
  }
  int64_t best_rtt = std::numeric_limits<int64_t>::max();
  for (int i = 0; i < rounds; ++i) {
    int64_t reply[2] = {0, 0};
    const int64_t sent = now_ns();
    requests.push_back(t.irecv(0, reply, sizeof reply, kClockTag));
    requests.push_back(t.isend(0, &sent, sizeof sent, kClockTag));
    wait(comm_, requests, "trace clock alignment");
    const int64_t received = now_ns();
    if (received - sent < best_rtt) {
      best_rtt = received - sent;
      clock_.offset_ns = sent + best_rtt / 2 - reply[0];
      clock_.residual_ns = (best_rtt + 1) / 2;
    }
    clock_.origin_ns = reply[1];
  }
}

// This rank's part of the merged file: Chrome metadata naming its process and tracks, then one
// complete ("X") event per recorded event, in microseconds since rank 0's origin.
std::string Tracer::rank_events_json() const {
  const int me = comm_.rank();
  const auto& node_of = comm_.topology().node_of_rank;
  std::string out = fmt::format(
      R"({{"name":"process_name","ph":"M","pid":{0},"args":{{"name":"rank {0}, node {1}"}}}},)"
      R"({{"name":"process_sort_index","ph":"M","pid":{0},"args":{{"sort_index":{0}}}}})",
      me, node_of[me]);
  for (auto [track, name] : {std::pair{TraceTrack::compute, "compute"},
                             {TraceTrack::dispatch, "dispatch"},
                             {TraceTrack::combine, "combine"},
                             {TraceTrack::collective, "collectives"}}) {
    out += fmt::format(
        R"(,{{"name":"thread_name","ph":"M","pid":{},"tid":{},"args":{{"name":"{}"}}}})", me,
        static_cast<int>(track), name);
  }
  const int64_t shift = clock_.offset_ns + clock_.origin_ns;
  for (const TraceEvent& e : events_) {
    const PhaseInfo& p = info(e.phase);
    std::string args = fmt::format(R"("phase":"{}","pass":"{}","step":{})", p.name,
                                   p.backward ? "bwd" : "fwd", e.step);
    if (e.call >= 0) args += fmt::format(R"(,"call":{})", e.call);
    if (e.peers_at >= 0) {
      const int64_t* send = peer_bytes_.data() + e.peers_at;
      const int64_t* recv = send + world_;
      int64_t sent = 0, received = 0, intra = 0, inter = 0;
      std::string peers = "[";
      for (int r = 0; r < world_; ++r) {
        if (r != me && (send[r] > 0 || recv[r] > 0)) {
          peers += fmt::format("{}{}", peers.size() > 1 ? "," : "", r);
        }
        if (r == me) continue;  // a rank's rows to itself are a local copy, not traffic
        sent += send[r];
        received += recv[r];
        (node_of[r] == node_of[me] ? intra : inter) += send[r];
      }
      args += fmt::format(
          R"(,"bytes_sent":{},"bytes_recv":{},"intra_node_bytes":{},"inter_node_bytes":{},)"
          R"("self_bytes":{},"peers":{}],"send_bytes":{},"recv_bytes":{},"wire_bytes":{},)"
          R"("wire_inter_node_bytes":{})",
          sent, received, intra, inter, send[me], peers, json_list(send, world_),
          json_list(recv, world_), e.wire_bytes, e.wire_inter_node_bytes);
    } else if (e.wire_bytes > 0) {
      args += fmt::format(R"(,"payload_bytes":{})", e.wire_bytes);
    }
    out += fmt::format(
        R"(,{{"name":"{}","cat":"{}","ph":"X","pid":{},"tid":{},"ts":{:.3f},"dur":{:.3f},)"
        R"("args":{{{}}}}})",
        p.name, p.track == TraceTrack::compute ? "compute" : "comm", me,
        static_cast<int>(p.track), (e.start_ns - shift) / 1e3, (e.end_ns - e.start_ns) / 1e3,
        args);
  }
  return out;
}

void Tracer::write(const std::string& path) {
  const int me = comm_.rank();
  const std::string mine = rank_events_json();
  comm::Transport& t = comm_.transport();
  std::vector<comm::Request> requests;
  // Header per rank: event text length, clock offset, residual.
  const int64_t header[3] = {static_cast<int64_t>(mine.size()), clock_.offset_ns,
                             clock_.residual_ns};
  if (me != 0) {
    requests.push_back(t.isend(0, header, sizeof header, kGatherTag));
    requests.push_back(t.isend(0, mine.data(), mine.size(), kGatherTag));
    wait(comm_, requests, "trace gather");
    return;
  }
  std::vector<std::string> texts(world_);
  std::vector<int64_t> offsets(world_, 0), residuals(world_, 0);
  texts[0] = mine;
  for (int r = 1; r < world_; ++r) {
    int64_t h[3];
    requests.push_back(t.irecv(r, h, sizeof h, kGatherTag));
    wait(comm_, requests, "trace gather");
    texts[r].resize(static_cast<size_t>(h[0]));
    offsets[r] = h[1];
    residuals[r] = h[2];
    requests.push_back(t.irecv(r, texts[r].data(), texts[r].size(), kGatherTag));
    wait(comm_, requests, "trace gather");
  }
  std::ofstream out(path);
  out << R"({"displayTimeUnit":"ms","otherData":{"format":"switchyard-trace/v1",)"
      << fmt::format(R"("ranks":{},"nodes":{},"node_of_rank":{},)", world_,
                     comm_.topology().num_nodes,
                     json_list(comm_.topology().node_of_rank.data(), world_))
      << fmt::format(
             R"("clock":{{"method":"ping-pong against rank 0, minimum round trip of {} rounds",)"
             R"("rounds":{},"offset_ns":{},"residual_ns":{}}}}},"traceEvents":[)",
             clock_.rounds, clock_.rounds, json_list(offsets.data(), world_),
             json_list(residuals.data(), world_));
  for (int r = 0; r < world_; ++r) out << (r ? "," : "") << texts[r];
  out << "]}\n";
  out.close();
  require(static_cast<bool>(out), fmt::format("trace: cannot write '{}'", path));
}

TraceSpan::TraceSpan(Tracer* tracer, TracePhase phase) : tracer_(tracer) {
  if (!tracer_) return;
  event_.phase = phase;
  event_.step = tracer_->step_;
  if (is_all_to_all(phase)) {
    std::lock_guard<std::mutex> lock(tracer_->mutex_);
    event_.call = tracer_->next_call_++;
  }
  event_.start_ns = now_ns();
}

TraceSpan::~TraceSpan() {
  if (!tracer_) return;
  event_.end_ns = now_ns();
  std::lock_guard<std::mutex> lock(tracer_->mutex_);
  if (!peers_.empty()) {
    event_.peers_at = static_cast<int64_t>(tracer_->peer_bytes_.size());
    tracer_->peer_bytes_.insert(tracer_->peer_bytes_.end(), peers_.begin(), peers_.end());
  }
  tracer_->events_.push_back(event_);
}

int64_t* TraceSpan::peers() {
  if (peers_.empty()) peers_.assign(2 * tracer_->world_, 0);
  return peers_.data();
}

void TraceSpan::all_to_all(const comm::RouteLayout& layout, bool outbound, size_t row_bytes,
                           const comm::PhaseStats& wire) {
  if (!tracer_) return;
  int64_t* send = peers();
  int64_t* recv = send + tracer_->world_;
  const auto& out_rows = outbound ? layout.send_offsets : layout.recv_offsets;
  const auto& in_rows = outbound ? layout.recv_offsets : layout.send_offsets;
  const auto bytes = static_cast<int64_t>(row_bytes);
  for (int r = 0; r < tracer_->world_; ++r) {
    send[r] = (out_rows[r + 1] - out_rows[r]) * bytes;
    recv[r] = (in_rows[r + 1] - in_rows[r]) * bytes;
  }
  event_.wire_bytes = wire.bytes_sent;
  event_.wire_inter_node_bytes = wire.bytes_to_other_nodes;
}

void TraceSpan::sent(int peer, int64_t bytes) {
  if (tracer_) peers()[peer] += bytes;
}

void TraceSpan::received(int peer, int64_t bytes) {
  if (tracer_) peers()[tracer_->world_ + peer] += bytes;
}

void TraceSpan::payload(int64_t bytes) {
  if (tracer_) event_.wire_bytes = bytes;
}

}  // namespace switchyard
