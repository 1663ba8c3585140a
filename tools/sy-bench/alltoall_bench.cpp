#include "tools/sy-bench/alltoall_bench.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "comm/alltoall/alltoall.h"
#include "comm/alltoall/bf16.h"
#include "comm/communicator.h"
#include "tools/sy-bench/link_monitor.h"
#include "tools/sy-bench/link_timeline.h"
#include "tools/sy-bench/mpi_baseline.h"
#include "tools/sy-bench/progress.h"
#include "tools/sy-bench/stats.h"

namespace switchyard::bench {

namespace {

struct Phase {
  std::vector<std::pair<double, double>> windows;  // per iteration: Timing begin, end
  std::vector<double> seconds;                     // per iteration, the slowest rank's
  int64_t max_bytes_per_rank = 0;
  int64_t bytes_to_other_nodes = 0;  // all ranks together
};

struct Result {
  std::string algo;   // mpi, flat or hierarchical
  std::string label;  // as printed: the algorithm, with its intra-node transport under --intra
  Phase dispatch;
  Phase combine;
  int64_t errors = 0;  // all ranks together
};

// One timed call: the slowest rank's time, and the window from the first rank's start to the last
// rank's end on the monotonic clock (for the link counters).
struct Timing {
  double seconds, begin, end;
};

template <typename F>
Timing timed(MPI_Comm comm, F&& body) {
  MPI_Barrier(comm);
  const double start = monotonic_seconds();
  body();
  const double end = monotonic_seconds();
  double v[3] = {end - start, -start, end};
  MPI_Allreduce(MPI_IN_PLACE, v, 3, MPI_DOUBLE, MPI_MAX, comm);
  return {v[0], -v[1], v[2]};
}

void totals(MPI_Comm comm, Phase& phase, int64_t bytes, int64_t crossing) {
  MPI_Allreduce(&bytes, &phase.max_bytes_per_rank, 1, MPI_INT64_T, MPI_MAX, comm);
  MPI_Allreduce(&crossing, &phase.bytes_to_other_nodes, 1, MPI_INT64_T, MPI_SUM, comm);
}

// One algorithm under test: its calls, timed in turn with every other runner's (iteration i of
// every runner before iteration i + 1 of any), and what it reports once the iterations are over.
struct Runner {
  Result result;
  std::function<void()> dispatch, combine;
  std::function<void(Result&)> finish;  // byte totals and errors (collective)
};

Runner baseline_runner(const Workload& w, const AllToAllBenchOptions& o, MPI_Comm comm,
                       const std::vector<int>& node_of_rank) {
  auto baseline = std::make_shared<MpiBaseline>(w, o.workload, comm);
  Runner r;
  r.result.algo = r.result.label = "mpi";
  r.dispatch = [baseline] { baseline->dispatch(); };
  r.combine = [baseline] { baseline->combine(); };
  r.finish = [baseline, comm, node_of_rank](Result& result) {
    const int64_t bytes = baseline->bytes_sent();
    const int64_t crossing = baseline->bytes_to_other_nodes(node_of_rank);
    totals(comm, result.dispatch, bytes, crossing);
    totals(comm, result.combine, bytes, crossing);
    const int64_t errors = baseline->errors();
    MPI_Allreduce(&errors, &result.errors, 1, MPI_INT64_T, MPI_SUM, comm);
  };
  return r;
}

// Received rows must carry the payload of their (source, token); each token's combined sum is its
// payload times the number of ranks it went to (the results are the received rows themselves).
// Element j of a row of elements as the wire carries them (fp32, or bf16 bit patterns).
float element_at(const std::vector<std::byte>& rows, bool bf16, size_t index) {
  if (bf16) return comm::bf16_to_float(reinterpret_cast<const uint16_t*>(rows.data())[index]);
  return reinterpret_cast<const float*>(rows.data())[index];
}

int64_t count_errors(const Workload& w, const comm::RouteLayout& layout, int64_t hidden, bool bf16,
                     const std::vector<std::byte>& recv_x, const std::vector<int32_t>& recv_side,
                     const std::vector<std::byte>& out) {
  int64_t wrong = 0;
  for (int s = 0; s < layout.world; ++s) {
    for (int64_t i = layout.recv_offsets[static_cast<size_t>(s)];
         i < layout.recv_offsets[static_cast<size_t>(s) + 1]; ++i) {
      const int source = recv_side[static_cast<size_t>(2 * i)];
      const int64_t t = recv_side[static_cast<size_t>(2 * i + 1)];
      wrong += source != s;
      for (int64_t j = 0; j < hidden; ++j) {
        wrong += element_at(recv_x, bf16, static_cast<size_t>(i * hidden + j)) !=
                 payload(s, t, j, w.modulus);
      }
    }
  }
  // Every sum is an integer below 256 (bf16) or 2^24 (fp32): exact, whatever the rounding.
  std::vector<int> copies(static_cast<size_t>(layout.num_tokens), 0);
  for (int64_t t : layout.send_tokens) ++copies[static_cast<size_t>(t)];
  for (int64_t t = 0; t < layout.num_tokens; ++t) {
    for (int64_t j = 0; j < hidden; ++j) {
      const auto k = static_cast<size_t>(t * hidden + j);
      wrong +=
          element_at(out, bf16, k) != static_cast<float>(copies[static_cast<size_t>(t)]) * w.x[k];
    }
  }
  return wrong;
}

Runner algorithm_runner(const std::string& name, const std::string& label, comm::Communicator& comm,
                        const Workload& w, const AllToAllBenchOptions& o, MPI_Comm mpi) {
  struct State {
    std::unique_ptr<comm::AllToAll> a2a;
    comm::RouteLayout layout;
    std::vector<std::byte> recv_x;
    std::vector<int32_t> recv_side;
    std::vector<std::byte> out;
  };
  auto s = std::make_shared<State>();
  s->a2a = comm::make_alltoall(name, comm);
  s->layout = w.layout;
  s->a2a->exchange_counts(s->layout);
  const int64_t h = o.workload.hidden;
  const auto rows = static_cast<size_t>(s->layout.num_recv_rows());
  const bool bf16 = o.workload.bf16;
  const size_t token_bytes = static_cast<size_t>(h) * element_bytes(o.workload);
  s->recv_x.resize(rows * token_bytes);
  s->recv_side.resize(rows * 2);
  s->out.resize(static_cast<size_t>(o.workload.tokens) * token_bytes);
  Runner r;
  r.result.algo = name;
  r.result.label = label;
  const void* x = bf16 ? static_cast<const void*>(w.x_bf16.data()) : w.x.data();
  r.dispatch = [s, &w, x, token_bytes] {
    s->a2a->dispatch(s->layout, x, token_bytes, w.side.data(), 2 * sizeof(int32_t),
                     s->recv_x.data(), s->recv_side.data());
  };
  const comm::DataType dtype = bf16 ? comm::DataType::bf16 : comm::DataType::fp32;
  r.combine = [s, h, dtype] {
    s->a2a->combine(s->layout, dtype, s->recv_x.data(), h, s->out.data());
  };
  r.finish = [s, &w, h, bf16, mpi](Result& result) {
    const comm::AllToAllStats& stats = s->a2a->stats();
    totals(mpi, result.dispatch, stats.dispatch.bytes_sent, stats.dispatch.bytes_to_other_nodes);
    totals(mpi, result.combine, stats.combine.bytes_sent, stats.combine.bytes_to_other_nodes);
    const int64_t errors = count_errors(w, s->layout, h, bf16, s->recv_x, s->recv_side, s->out);
    MPI_Allreduce(&errors, &result.errors, 1, MPI_INT64_T, MPI_SUM, mpi);
  };
  return r;
}

// Bytes each node sends each other node in one call, [from * nodes + to], summed over all ranks,
// as each algorithm moves them: mpi one row (hidden + 1 floats) per (token, expert), flat one row
// (token + side) per (token, destination rank), hierarchical one token per (token, destination
// node) plus the side data of every row; combine moves results back the other way (no side data).
struct NodeTraffic {
  std::vector<double> dispatch, combine;
};

NodeTraffic node_traffic(const std::string& algo, const Workload& w, const AllToAllBenchOptions& o,
                         const comm::Topology& topo, MPI_Comm mpi) {
  const int nodes = topo.num_nodes;
  const int me = topo.node;
  const double token =
      static_cast<double>(o.workload.hidden) * static_cast<double>(element_bytes(o.workload));
  const double side = 2 * sizeof(int32_t);
  NodeTraffic t{std::vector<double>(static_cast<size_t>(nodes * nodes), 0.0),
                std::vector<double>(static_cast<size_t>(nodes * nodes), 0.0)};
  auto add = [&](int to, double dispatch_bytes, double combine_bytes) {
    if (to == me) return;
    t.dispatch[static_cast<size_t>(me * nodes + to)] += dispatch_bytes;
    t.combine[static_cast<size_t>(to * nodes + me)] += combine_bytes;
  };
  const comm::RouteLayout& l = w.layout;
  if (algo == "mpi") {
    for (size_t i = 0; i < w.experts.size(); ++i) {
      const int d = owner_of(w.experts[i], o.workload.experts, topo.size);
      // The baseline's rows carry the token index (4 bytes) after the elements.
      add(topo.node_of_rank[static_cast<size_t>(d)], token + sizeof(int32_t),
          token + sizeof(int32_t));
    }
  } else {
    std::vector<std::vector<bool>> seen(static_cast<size_t>(nodes),
                                        std::vector<bool>(static_cast<size_t>(l.num_tokens)));
    for (int d = 0; d < l.world; ++d) {
      const int node = topo.node_of_rank[static_cast<size_t>(d)];
      for (int64_t r = l.send_offsets[static_cast<size_t>(d)];
           r < l.send_offsets[static_cast<size_t>(d) + 1]; ++r) {
        if (algo == "flat") {
          add(node, token + side, token);
          continue;
        }
        auto&& first = seen[static_cast<size_t>(node)]
                           [static_cast<size_t>(l.send_tokens[static_cast<size_t>(r)])];
        add(node, side + (first ? 0.0 : token), first ? 0.0 : token);
        first = true;
      }
    }
  }
  MPI_Allreduce(MPI_IN_PLACE, t.dispatch.data(), nodes * nodes, MPI_DOUBLE, MPI_SUM, mpi);
  MPI_Allreduce(MPI_IN_PLACE, t.combine.data(), nodes * nodes, MPI_DOUBLE, MPI_SUM, mpi);
  return t;
}

// The most bytes one node's link carries in one direction (sent or received), and which.
std::pair<double, std::string> busiest_link(const std::vector<double>& m, int nodes) {
  double best = 0.0;
  std::string which = "-";
  for (int a = 0; a < nodes; ++a) {
    double tx = 0.0, rx = 0.0;
    for (int b = 0; b < nodes; ++b) {
      tx += m[static_cast<size_t>(a * nodes + b)];
      rx += m[static_cast<size_t>(b * nodes + a)];
    }
    if (tx > best) best = tx, which = fmt::format("node {} tx", a);
    if (rx > best) best = rx, which = fmt::format("node {} rx", a);
  }
  return {best, which};
}

// One line of the table: an algorithm's phase, with the figures derived from its times.
struct Row {
  std::string algo;
  const char* phase;
  const Phase* phase_result;
  double median_s, min_s, algbw, busbw, speedup;
  int64_t errors;
};

std::vector<Row> table_rows(const std::vector<Result>& results, double logical_bytes, int n) {
  std::vector<Row> rows;
  for (const Result& r : results) {
    for (const auto& [phase, p, base] :
         {std::tuple{"dispatch", &r.dispatch, &results.front().dispatch},
          std::tuple{"combine", &r.combine, &results.front().combine}}) {
      const double t = median(p->seconds);
      const double algbw = t > 0 ? logical_bytes / t / 1e9 : 0.0;
      rows.push_back({r.label, phase, p, t, minimum(p->seconds), algbw, algbw * (n - 1) / n,
                      t > 0 ? median(base->seconds) / t : 0.0, r.errors});
    }
  }
  return rows;
}

// How busy the busiest inter-node link was during one algorithm's phase, from the links' own
// counters (LinkMonitor; bytes include TCP/IP headers, as the shaper counts them). Medians over
// the iterations.
struct LinkUse {
  std::string algo;
  const char* phase;
  std::string link;       // the link (node, direction) that carried the most, in most iterations
  double wire_mb = 0;     // what it carried
  double call_ms = 0;     // the call, first rank's start to last rank's end
  double active_ms = 0;   // from its first byte to its last
  double call_use = 0;    // wire bytes / (rate x call)
  double active_use = 0;  // wire bytes / (rate x active): the inter-node phase's own rate
};

constexpr double kLinkSampleSeconds = 200e-6;

// Collective: every rank's `mine` (the same size on all), in rank order, on rank 0; empty
// elsewhere. The link figures are measured on each node's first rank and read on rank 0.
std::vector<double> gather_on_rank0(const std::vector<double>& mine, int rank, int size,
                                    MPI_Comm mpi) {
  std::vector<double> all(rank == 0 ? mine.size() * static_cast<size_t>(size) : 0);
  MPI_Gather(mine.data(), static_cast<int>(mine.size()), MPI_DOUBLE, all.data(),
             static_cast<int>(mine.size()), MPI_DOUBLE, 0, mpi);
  return all;
}

// Collective. Every node's first rank measures its link in each call's window; rank 0 picks the
// busiest link per call. Returns the figures on rank 0, nothing elsewhere.
std::vector<LinkUse> measured_link_use(const std::vector<Result>& results,
                                       const LinkMonitor* monitor, const AllToAllBenchOptions& o,
                                       const comm::Communicator& comm, MPI_Comm mpi) {
  std::vector<const Phase*> phases;
  for (const Result& r : results) phases.insert(phases.end(), {&r.dispatch, &r.combine});
  const size_t iters = static_cast<size_t>(o.iters);
  std::vector<double> mine(phases.size() * iters * 4, -1.0);  // -1: not a node's sampler
  for (size_t p = 0; p < phases.size() && monitor != nullptr; ++p) {
    for (size_t i = 0; i < iters; ++i) {
      const auto [begin, end] = phases[p]->windows[i];
      const LinkWindow w = monitor->window(begin, end);
      double* v = &mine[(p * iters + i) * 4];
      v[0] = w.tx.bytes, v[1] = w.tx.active_s, v[2] = w.rx.bytes, v[3] = w.rx.active_s;
    }
  }
  const int n = comm.size();
  const std::vector<double> all = gather_on_rank0(mine, comm.rank(), n, mpi);
  if (comm.rank() != 0) return {};
  const double rate = o.link_gbit * 1e9 / 8;
  std::vector<LinkUse> uses;
  for (size_t p = 0; p < phases.size(); ++p) {
    std::vector<double> wire, call, active, call_use, active_use;
    std::map<std::string, int> busiest;
    for (size_t i = 0; i < iters; ++i) {
      double bytes = 0, active_s = 0;
      std::string link = "-";
      for (int r = 0; r < n; ++r) {
        const double* v = &all[static_cast<size_t>(r) * mine.size() + (p * iters + i) * 4];
        if (v[0] < 0) continue;
        for (int dir = 0; dir < 2; ++dir) {
          if (v[2 * dir] <= bytes) continue;
          bytes = v[2 * dir], active_s = v[2 * dir + 1];
          link = fmt::format("node {} {}", comm.topology().node_of_rank[static_cast<size_t>(r)],
                             dir == 0 ? "tx" : "rx");
        }
      }
      const double call_s = phases[p]->windows[i].second - phases[p]->windows[i].first;
      ++busiest[link];
      wire.push_back(bytes / 1e6);
      call.push_back(call_s * 1e3);
      active.push_back(active_s * 1e3);
      call_use.push_back(call_s > 0 ? bytes / (rate * call_s) : 0.0);
      active_use.push_back(active_s > 0 ? bytes / (rate * active_s) : 0.0);
    }
    const auto most = std::max_element(busiest.begin(), busiest.end(),
                                       [](auto& a, auto& b) { return a.second < b.second; });
    const Result& r = results[p / 2];
    uses.push_back({r.label, p % 2 == 0 ? "dispatch" : "combine", most->first, median(wire),
                    median(call), median(active), median(call_use), median(active_use)});
  }
  return uses;
}

// Collective. For each algorithm, the iteration whose dispatch + combine took the median time:
// every node's link from the dispatch's start to the combine's end in bins of at least 5 ms (a
// 64 KB packet takes 0.5 ms at 1 Gbit/s: finer bins show the shaper's packets, not the rate), at
// most 250 per iteration; the windows are the same on every rank. Gathered to rank 0, which draws.
void draw_link_timeline(const std::vector<Result>& results, const LinkMonitor* monitor,
                        const AllToAllBenchOptions& o, const comm::Communicator& comm,
                        MPI_Comm mpi) {
  constexpr double kMinBinSeconds = 5e-3;
  constexpr double kMaxBins = 250;
  std::vector<LinkPanel> panels;
  std::vector<size_t> panel_bins;
  std::vector<double> mine;  // per panel and bin: tx, rx bytes (-1: not a node's sampler)
  for (const Result& r : results) {
    std::vector<size_t> order(r.dispatch.seconds.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    auto total = [&](size_t i) { return r.dispatch.seconds[i] + r.combine.seconds[i]; };
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return total(a) < total(b); });
    if (order.empty()) continue;
    const size_t it = order[order.size() / 2];
    const double begin = r.dispatch.windows[it].first, middle = r.combine.windows[it].first,
                 end = r.combine.windows[it].second;
    LinkPanel panel;
    panel.title = fmt::format(
        "{}: iteration {} of {} (the median), dispatch {:.1f} ms + combine "
        "{:.1f} ms",
        r.label, it + 1, order.size(), r.dispatch.seconds[it] * 1e3, r.combine.seconds[it] * 1e3);
    const double bin_s = std::max(kMinBinSeconds, (end - begin) / kMaxBins);
    panel.bin_ms = bin_s * 1e3;
    panel.dispatch_ms = (middle - begin) * 1e3;
    panel.total_ms = (end - begin) * 1e3;
    const size_t bins = static_cast<size_t>(std::ceil((end - begin) / bin_s));
    for (size_t b = 0; b < bins; ++b) {
      if (monitor == nullptr) {
        mine.insert(mine.end(), {-1.0, -1.0});
        continue;
      }
      const double t0 = begin + b * bin_s;
      const LinkWindow w = monitor->window(t0, std::min(t0 + bin_s, end));
      mine.insert(mine.end(), {w.tx.bytes, w.rx.bytes});
    }
    panels.push_back(std::move(panel));
    panel_bins.push_back(bins);
  }
  const int n = comm.size();
  const std::vector<double> all = gather_on_rank0(mine, comm.rank(), n, mpi);
  if (comm.rank() != 0) return;
  for (int r = 0; r < n; ++r) {
    const double* v = &all[static_cast<size_t>(r) * mine.size()];
    if (!mine.empty() && v[0] < 0) continue;  // not its node's sampler
    const int node = comm.topology().node_of_rank[static_cast<size_t>(r)];
    size_t at = 0;
    for (size_t p = 0; p < panels.size(); ++p) {
      LinkPanel& panel = panels[p];
      const size_t bins = panel_bins[p];
      LinkSeries tx{node, false, {}}, rx{node, true, {}};
      for (size_t b = 0; b < bins; ++b, at += 2) {
        const double seconds = std::min(panel.bin_ms, panel.total_ms - b * panel.bin_ms) * 1e-3;
        tx.gbit.push_back(seconds > 0 ? v[at] * 8 / seconds / 1e9 : 0.0);
        rx.gbit.push_back(seconds > 0 ? v[at + 1] * 8 / seconds / 1e9 : 0.0);
      }
      panel.series.push_back(std::move(tx));
      panel.series.push_back(std::move(rx));
    }
  }
  write_link_timeline_svg(
      o.link_svg, panels, o.link_gbit,
      fmt::format("{} ranks on {} nodes; {} tokens/rank, hidden {}, top-{}; {} byte counters "
                  "sampled every {:.1f} ms, incl. TCP/IP headers",
                  n, comm.topology().num_nodes, o.workload.tokens, o.workload.hidden,
                  o.workload.topk, o.link_dev, kLinkSampleSeconds * 1e3));
  fmt::print("link timeline: {}\n", o.link_svg);
}

void print_link_use(const std::vector<LinkUse>& uses, const AllToAllBenchOptions& o,
                    bool realtime) {
  fmt::print(
      "\nmeasured on the links ({} byte counters, sampled every {:.1f} ms on each node{}; bytes "
      "incl. TCP/IP headers, as the {} Gbit/s shaper counts them): the busiest link per call, "
      "its use over the whole call and over its own active span (first to last byte: the "
      "inter-node phase); medians over iterations\n",
      o.link_dev, kLinkSampleSeconds * 1e3,
      realtime ? "" : " at normal priority, so intervals may stretch under load", o.link_gbit);
  fmt::print("{:<16} {:<9} {:>13} {:>12} {:>9} {:>10} {:>9} {:>11}\n", "algorithm", "phase",
             "busiest link", "MB on wire", "call ms", "active ms", "call use", "active use");
  for (const LinkUse& u : uses) {
    fmt::print("{:<16} {:<9} {:>13} {:>12.2f} {:>9.1f} {:>10.1f} {:>8.0f}% {:>10.0f}%\n", u.algo,
               u.phase, u.link, u.wire_mb, u.call_ms, u.active_ms, 100 * u.call_use,
               100 * u.active_use);
  }
}

// The table and the run's parameters as JSON (format switchyard-bench-alltoall/v1), one file per
// run: tools/sy-trace `bandwidth` plots several runs' busbw against message_bytes_per_rank.
void write_json(const AllToAllBenchOptions& o, const comm::Communicator& comm,
                const std::vector<Row>& rows, double logical_bytes,
                const std::vector<LinkUse>& link_use) {
  nlohmann::json results = nlohmann::json::array();
  for (const Row& r : rows) {
    std::vector<double> ms;
    for (double s : r.phase_result->seconds) ms.push_back(s * 1e3);
    results.push_back({{"algorithm", r.algo},
                       {"phase", r.phase},
                       {"median_ms", r.median_s * 1e3},
                       {"min_ms", r.min_s * 1e3},
                       {"iteration_ms", ms},
                       {"bytes_sent_per_rank", r.phase_result->max_bytes_per_rank},
                       {"bytes_across_nodes", r.phase_result->bytes_to_other_nodes},
                       {"algbw_gb_per_s", r.algbw},
                       {"busbw_gb_per_s", r.busbw},
                       {"speedup", r.speedup},
                       {"errors", r.errors}});
  }
  const comm::Topology& topo = comm.topology();
  nlohmann::json doc = {
      {"format", "switchyard-bench-alltoall/v1"},
      {"ranks", comm.size()},
      {"nodes", topo.num_nodes},
      {"ranks_per_node", topo.local_size},
      {"nodes_simulated", o.ranks_per_node > 0},
      {"communicator", comm.describe()},
      {"params",
       {{"algo", o.algo},
        {"tokens", o.workload.tokens},
        {"hidden", o.workload.hidden},
        {"experts", o.workload.experts},
        {"topk", o.workload.topk},
        {"zipf", o.workload.zipf},
        {"seed", o.workload.seed},
        {"dtype", o.dtype},
        {"iters", o.iters},
        {"ranks_per_node", o.ranks_per_node},
        {"link_gbit", o.link_gbit},
        {"link_dev", o.link_dev},
        {"intra", o.intra}}},
      {"message_bytes_per_rank", logical_bytes},
      {"bandwidth_definitions",
       "algbw = message_bytes_per_rank / median time; busbw = algbw * (ranks - 1) / ranks; "
       "times are the slowest rank's; speedup = mpi median / median"},
      {"results", results}};
  nlohmann::json measured = nlohmann::json::array();
  for (const LinkUse& u : link_use) {
    measured.push_back({{"algorithm", u.algo},
                        {"phase", u.phase},
                        {"busiest_link", u.link},
                        {"wire_mb", u.wire_mb},
                        {"call_ms", u.call_ms},
                        {"active_ms", u.active_ms},
                        {"call_link_use", u.call_use},
                        {"active_link_use", u.active_use}});
  }
  if (!link_use.empty()) doc["measured_link_use"] = measured;
  std::ofstream out(o.json);
  out << doc.dump(2) << "\n";
  if (!out) throw std::runtime_error(fmt::format("--json: cannot write '{}'", o.json));
}

}  // namespace

int run_alltoall_bench(const AllToAllBenchOptions& given, MPI_Comm mpi) {
  AllToAllBenchOptions o = given;
  o.workload.bf16 = o.dtype == "bf16";
  // One communicator per intra-node transport compared (--intra), else one as configured.
  std::vector<std::unique_ptr<comm::Communicator>> comms;
  for (size_t i = 0; i < std::max<size_t>(1, o.intra.size()); ++i) {
    comm::CommOptions options;
    if (!o.intra.empty()) options.intra_transport = o.intra[i];
    comms.push_back(std::make_unique<comm::Communicator>(mpi, options));
    if (o.ranks_per_node > 0) {
      comms.back()->override_topology(
          comm::Topology::blocked(comms.back()->rank(), comms.back()->size(), o.ranks_per_node));
    }
  }
  const comm::Communicator& comm = *comms.front();
  const Workload w = make_workload(o.workload, comm.rank(), comm.size());
  std::vector<Runner> runners;
  for (const char* name : {"flat", "hierarchical"}) {
    if (o.algo != name && o.algo != "all") continue;
    for (size_t i = 0; i < comms.size(); ++i) {
      const std::string label = o.intra.empty() ? name : fmt::format("{}/{}", name, o.intra[i]);
      runners.push_back(algorithm_runner(name, label, *comms[i], w, o, mpi));
    }
  }
  // The baseline always runs: every other figure is a ratio against it. It is set up last, since
  // on this machine whatever was set up last ran up to 8% faster (tools/sy-bench/intra_pairs.sh),
  // and that advantage must not go to us; it is listed first.
  runners.insert(runners.begin(), baseline_runner(w, o, mpi, comm.topology().node_of_rank));
  // One sampler per node (on its first rank) reads the node's link counters.
  std::unique_ptr<LinkMonitor> monitor;
  if (!o.link_dev.empty() && comm.topology().local_rank == 0) {
    monitor = std::make_unique<LinkMonitor>(o.link_dev, kLinkSampleSeconds);
  }
  // Interleaved, so that a change in the machine's load hits every algorithm alike.
  Progress progress("sy-bench alltoall", o.iters + 1, comm.rank() == 0);
  for (int i = 0; i <= o.iters; ++i) {
    for (Runner& r : runners) {
      const Timing d = timed(mpi, r.dispatch);
      const Timing c = timed(mpi, r.combine);
      if (i == 0) continue;  // warm-up
      r.result.dispatch.seconds.push_back(d.seconds);
      r.result.dispatch.windows.emplace_back(d.begin, d.end);
      r.result.combine.seconds.push_back(c.seconds);
      r.result.combine.windows.emplace_back(c.begin, c.end);
    }
    progress.step(i == 0 ? "warm-up" : "");
  }
  std::vector<Result> results;
  for (Runner& r : runners) {
    r.finish(r.result);
    results.push_back(std::move(r.result));
  }
  runners.clear();
  std::vector<LinkUse> link_use;
  if (!o.link_dev.empty()) link_use = measured_link_use(results, monitor.get(), o, comm, mpi);
  if (!o.link_svg.empty()) draw_link_timeline(results, monitor.get(), o, comm, mpi);
  const bool realtime_sampler = monitor != nullptr && monitor->realtime();
  monitor.reset();
  std::vector<NodeTraffic> traffic;
  if (o.link_gbit > 0) {
    for (const Result& r : results)
      traffic.push_back(node_traffic(r.algo, w, o, comm.topology(), mpi));
  }
  // Error counts are totals over all ranks, so every rank returns the same status.
  int rc = 0;
  for (const Result& r : results) rc |= r.errors != 0 ? 1 : 0;
  if (comm.rank() != 0) return rc;

  const int n = comm.size();
  // The data a layer must deliver per rank: one hidden vector per (token, expert) pair.
  const double logical_bytes = static_cast<double>(o.workload.tokens) * o.workload.topk *
                               static_cast<double>(o.workload.hidden) *
                               static_cast<double>(element_bytes(o.workload));
  fmt::print("sy-bench alltoall: {} ranks, {} nodes ({}); {}\n", n, comm.topology().num_nodes,
             o.ranks_per_node > 0 ? fmt::format("simulated, {} ranks per node", o.ranks_per_node)
                                  : "as launched",
             comm.describe());
  for (size_t i = 1; i < comms.size(); ++i) fmt::print("  also: {}\n", comms[i]->describe());
  fmt::print(
      "tokens/rank {}, hidden {}, experts {}, top-k {}, zipf {}, {}, {} iterations after one "
      "warm-up\n",
      o.workload.tokens, o.workload.hidden, o.workload.experts, o.workload.topk, o.workload.zipf,
      o.dtype, o.iters);
  fmt::print(
      "algbw = S / median time with S = tokens x top-k x hidden x {} = {:.1f} MB per rank, "
      "busbw = algbw x (n-1)/n (nccl-tests' all-to-all definitions); times are the slowest "
      "rank's; speed-up = mpi median / median\n\n",
      element_bytes(o.workload), logical_bytes / 1e6);
  fmt::print("{:<16} {:<9} {:>10} {:>10} {:>13} {:>17} {:>11} {:>11} {:>9} {:>7}\n", "algorithm",
             "phase", "median ms", "min ms", "MB sent/rank", "MB across nodes", "algbw GB/s",
             "busbw GB/s", "speed-up", "errors");
  const std::vector<Row> rows = table_rows(results, logical_bytes, n);
  for (const Row& r : rows) {
    fmt::print(
        "{:<16} {:<9} {:>10.3f} {:>10.3f} {:>13.2f} {:>17.2f} {:>11.2f} {:>11.2f} "
        "{:>8.2f}x {:>7}\n",
        r.algo, r.phase, r.median_s * 1e3, r.min_s * 1e3, r.phase_result->max_bytes_per_rank / 1e6,
        r.phase_result->bytes_to_other_nodes / 1e6, r.algbw, r.busbw, r.speedup, r.errors);
  }
  if (!o.json.empty()) write_json(o, comm, rows, logical_bytes, link_use);
  if (o.link_gbit > 0) {
    const int nodes = comm.topology().num_nodes;
    const double rate = o.link_gbit * 1e9 / 8;  // bytes per second per direction
    fmt::print(
        "\ninter-node links at {} Gbit/s per direction: a phase cannot end before its busiest "
        "link has carried its payload (headers excluded); link use = link-bound time / median "
        "time\n",
        o.link_gbit);
    fmt::print("{:<16} {:<9} {:>17} {:>13} {:>16} {:>14} {:>10}\n", "algorithm", "phase",
               "MB across nodes", "busiest link", "busiest link MB", "link-bound ms", "link use");
    for (size_t i = 0; i < results.size(); ++i) {
      for (const auto& [phase, m, p] :
           {std::tuple{"dispatch", &traffic[i].dispatch, &results[i].dispatch},
            std::tuple{"combine", &traffic[i].combine, &results[i].combine}}) {
        double total = 0.0;
        for (double b : *m) total += b;
        const auto [bytes, which] = busiest_link(*m, nodes);
        const double bound = bytes / rate;
        const double t = median(p->seconds);
        fmt::print("{:<16} {:<9} {:>17.2f} {:>13} {:>16.2f} {:>14.1f} {:>9.0f}%\n",
                   results[i].label, phase, total / 1e6, which, bytes / 1e6, bound * 1e3,
                   t > 0 ? 100.0 * bound / t : 0.0);
      }
    }
  }
  if (!link_use.empty()) print_link_use(link_use, o, realtime_sampler);
  return rc;
}

}  // namespace switchyard::bench
