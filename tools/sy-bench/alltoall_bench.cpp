#include "tools/sy-bench/alltoall_bench.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <functional>
#include <memory>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "comm/alltoall.h"
#include "comm/bf16.h"
#include "comm/communicator.h"
#include "tools/sy-bench/mpi_baseline.h"

namespace switchyard::bench {

namespace {

struct Phase {
  std::vector<double> seconds;  // per iteration, the slowest rank's
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

template <typename F>
double timed(MPI_Comm comm, F&& body) {
  MPI_Barrier(comm);
  const double start = MPI_Wtime();
  body();
  double seconds = MPI_Wtime() - start;
  MPI_Allreduce(MPI_IN_PLACE, &seconds, 1, MPI_DOUBLE, MPI_MAX, comm);
  return seconds;
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

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

double minimum(const std::vector<double>& v) {
  return v.empty() ? 0.0 : *std::min_element(v.begin(), v.end());
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

// The table and the run's parameters as JSON (format switchyard-bench-alltoall/v1), one file per
// run: tools/sy-trace `bandwidth` plots several runs' busbw against message_bytes_per_rank.
void write_json(const AllToAllBenchOptions& o, const comm::Communicator& comm,
                const std::vector<Row>& rows, double logical_bytes) {
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
  const nlohmann::json doc = {
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
        {"intra", o.intra}}},
      {"message_bytes_per_rank", logical_bytes},
      {"bandwidth_definitions",
       "algbw = message_bytes_per_rank / median time; busbw = algbw * (ranks - 1) / ranks; "
       "times are the slowest rank's; speedup = mpi median / median"},
      {"results", results}};
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
  // The baseline always runs: every other figure is a ratio against it.
  std::vector<Runner> runners;
  runners.push_back(baseline_runner(w, o, mpi, comm.topology().node_of_rank));
  for (const char* name : {"flat", "hierarchical"}) {
    if (o.algo != name && o.algo != "all") continue;
    for (size_t i = 0; i < comms.size(); ++i) {
      const std::string label = o.intra.empty() ? name : fmt::format("{}/{}", name, o.intra[i]);
      runners.push_back(algorithm_runner(name, label, *comms[i], w, o, mpi));
    }
  }
  // Interleaved, so that a change in the machine's load hits every algorithm alike.
  for (int i = 0; i <= o.iters; ++i) {
    for (Runner& r : runners) {
      const double d = timed(mpi, r.dispatch);
      const double c = timed(mpi, r.combine);
      if (i == 0) continue;  // warm-up
      r.result.dispatch.seconds.push_back(d);
      r.result.combine.seconds.push_back(c);
    }
  }
  std::vector<Result> results;
  for (Runner& r : runners) {
    r.finish(r.result);
    results.push_back(std::move(r.result));
  }
  runners.clear();
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
  if (!o.json.empty()) write_json(o, comm, rows, logical_bytes);
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
  return rc;
}

}  // namespace switchyard::bench
