#include "tools/sy-bench/layer_bench.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <random>
#include <stdexcept>
#include <vector>

#include "comm/alltoall/alltoall.h"
#include "comm/communicator.h"
#include "comm/poll_pause.h"
#include "runtime/buffer_reuse.h"
#include "runtime/comm_queue.h"
#include "runtime/moe_layer.h"
#include "runtime/replanner.h"
#include "runtime/routing_skew.h"
#include "runtime/trace.h"
#include "runtime/wire_rows.h"
#include "tools/sy-bench/cpu_usage.h"
#include "tools/sy-bench/gemm_bench.h"
#include "tools/sy-bench/progress.h"
#include "tools/sy-bench/stats.h"

namespace switchyard::bench {

namespace {

// Steps before timing: enough for automatic overlap to probe both ways and settle.
constexpr int kWarmupSteps = 4;

// Per iteration, the slowest rank's figure.
struct Series {
  std::vector<double> forward, step;
};

struct LayerUnderTest {
  std::string label;
  std::unique_ptr<MoeLayer<float>> layer;
  Series wall;
  Series compute;  // wall minus time inside all-to-all calls and the gradient all-reduce
  Series grad_reduce;
  double experts_seconds = 0;           // this rank's forward expert FFNs over the timed iterations
  double experts_backward_seconds = 0;  // and their backward
  int64_t minor_faults = 0;             // this rank's, over the timed steps
  std::vector<float> y, grad_x;
  std::unique_ptr<MoeSaved<float>> last_saved;
};

// One forward + backward on every rank, started together.
void step(LayerUnderTest& l, const std::vector<float>& x, const std::vector<float>& grad_y,
          int64_t tokens, int64_t hidden, MPI_Comm comm, bool record) {
  PhaseTimes& t = l.layer->times();
  MPI_Barrier(comm);
  const int64_t faults0 = minor_page_faults();
  const double start = MPI_Wtime();
  const double busy0 = t.comm_busy;
  const double experts0 = t.experts;
  const double experts_backward0 = t.experts_backward;
  auto fwd = l.layer->forward(x.data(), tokens, hidden, l.y.data());
  const double forward_end = MPI_Wtime();
  const double busy1 = t.comm_busy;
  const double reduce0 = t.grad_reduce;
  l.layer->backward(*fwd.saved, grad_y.data(), l.grad_x.data());
  const double end = MPI_Wtime();
  const int64_t faults = minor_page_faults() - faults0;
  l.last_saved = std::move(fwd.saved);
  if (!record) return;
  l.minor_faults += faults;
  l.experts_seconds += t.experts - experts0;
  l.experts_backward_seconds += t.experts_backward - experts_backward0;
  const double reduce = t.grad_reduce - reduce0;
  double figures[5] = {forward_end - start, end - start, (forward_end - start) - (busy1 - busy0),
                       (end - start) - (t.comm_busy - busy0) - reduce, reduce};
  MPI_Allreduce(MPI_IN_PLACE, figures, 5, MPI_DOUBLE, MPI_MAX, comm);
  l.wall.forward.push_back(figures[0]);
  l.wall.step.push_back(figures[1]);
  l.compute.forward.push_back(figures[2]);
  l.compute.step.push_back(figures[3]);
  l.grad_reduce.step.push_back(figures[4]);
}

// The all-to-all calls of one serial step, alone: the counts exchange, dispatch of tokens with
// their routing side data, combine of hidden-size rows; backward's dispatch of the output
// gradient and combine of [grad_x | grad_weight per slot] rows.
void comm_alone(comm::Communicator& sy_comm, comm::AllToAll& alltoall, const MoeChunk<float>& chunk,
                int64_t hidden, int topk, WirePrecision wire, MPI_Comm comm, Series& series,
                CpuUsage& cpu) {
  comm::RouteLayout layout = chunk.layout;
  const int64_t tokens = layout.num_tokens, rows = layout.num_recv_rows();
  const size_t side_bytes = static_cast<size_t>(topk) * (sizeof(int32_t) + sizeof(float));
  const int64_t width = hidden + topk;
  std::vector<float> x(tokens * hidden, 1.0f), back_tokens(tokens * width);
  std::vector<std::byte> side(layout.num_send_rows() * side_bytes);
  std::vector<float> recv_x(rows * hidden);
  std::vector<std::byte> recv_side(rows * side_bytes);
  std::vector<float> back_rows(rows * width, 1.0f);
  // Waiting as the layer's calls do (runtime/comm_queue.h), which also leaves the CPU figure to
  // the transfers rather than to polling.
  comm::ScopedPollPause pause(CommQueue::kFirstPollPause, CommQueue::kLongestPollPause);
  MPI_Barrier(comm);
  cpu.begin();
  const double start = MPI_Wtime();
  alltoall.exchange_counts(layout);
  // The layer's four all-to-alls, with its conversions to and from the wire's precision.
  dispatch_rows(alltoall, wire, layout, x.data(), hidden, side.data(), side_bytes, recv_x.data(),
                recv_side.data());
  combine_rows(alltoall, wire, layout, recv_x.data(), hidden, x.data());
  const double forward_end = MPI_Wtime();
  dispatch_rows(alltoall, wire, layout, x.data(), hidden, nullptr, 0, recv_x.data(), nullptr);
  combine_rows(alltoall, wire, layout, back_rows.data(), width, back_tokens.data());
  double figures[2] = {forward_end - start, MPI_Wtime() - start};
  // Until the last rank is done, through a barrier whose waits sleep too: ranks done early would
  // otherwise poll in MPI's own wait and count as busy.
  sy_comm.barrier();
  cpu.end();
  MPI_Allreduce(MPI_IN_PLACE, figures, 2, MPI_DOUBLE, MPI_MAX, comm);
  series.forward.push_back(figures[0]);
  series.step.push_back(figures[1]);
}

double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    norm += double(want[i]) * want[i];
  }
  return norm == 0 ? std::sqrt(diff) : std::sqrt(diff / norm);
}

// The placement the timed layers use. "balanced": the balance planner's, from the expert loads
// of one forward of these tokens (routing does not depend on placement, so a probe layer with the
// contiguous placement measures them), with `redundant` extra replicas of hot experts.
planner::ExpertPlacement bench_placement(const LayerBenchOptions& o, const MoeConfig& config,
                                         comm::Communicator& comm, const RoutingSkew<float>& skew,
                                         const std::vector<float>& x) {
  const bool balanced = o.placement == "balanced";
  if (!balanced && o.placement != "contiguous") {
    throw std::invalid_argument(
        fmt::format("--placement '{}': expected contiguous or balanced", o.placement));
  }
  const int world = comm.size();
  if (balanced && (o.redundant < 0 || (o.experts + o.redundant) % world != 0)) {
    const int fewest = (world - o.experts % world) % world;
    throw std::invalid_argument(fmt::format(
        "--placement balanced places {} experts + {} redundant slots evenly over {} ranks, "
        "which does not divide; pass --redundant {} (or another count that makes it divide), or "
        "--placement contiguous",
        o.experts, o.redundant, world, fewest));
  }
  auto contiguous = planner::ExpertPlacement::contiguous(o.experts, world);
  MoeLayer<float> probe(config, comm, contiguous, o.alltoall, {OverlapMode::off, 1});
  init_params(probe.params(), 5);
  if (o.zipf > 0) skew.apply_to_gate(probe.params().gate_weight, o.hidden);
  std::vector<float> y(x.size());
  probe.forward(x.data(), o.tokens, o.hidden, y.data());
  std::vector<int64_t> load;
  for (double l : probe.last_expert_load()) load.push_back(static_cast<int64_t>(std::llround(l)));
  const double contiguous_imbalance = predicted_imbalance(contiguous, load);
  if (!balanced) {
    if (comm.rank() == 0) {
      fmt::print("placement: contiguous, device imbalance (max/mean token-expert pairs) {:.3f}\n",
                 contiguous_imbalance);
    }
    return contiguous;
  }
  Replanner replanner({.interval = 1, .redundant_slots = o.redundant, .min_gain = 0.0}, o.experts,
                      world, comm.topology().num_nodes);
  replanner.record(probe.last_expert_load());
  ReplanDecision decision;
  auto planned = replanner.replan(contiguous, &decision);
  if (comm.rank() == 0) {
    fmt::print(
        "placement: balanced by the planner ({} redundant slots), device imbalance (max/mean "
        "token-expert pairs) {:.3f} contiguous -> {:.3f}\n",
        o.redundant, decision.current_imbalance, decision.planned_imbalance);
  }
  return planned ? *planned : contiguous;
}

double eta(double off, double on, double comm_alone, double compute_alone) {
  const double hideable = std::min(comm_alone, compute_alone);
  return hideable > 0 ? (off - on) / hideable : 0.0;
}

}  // namespace

int run_layer_bench(const LayerBenchOptions& o, MPI_Comm mpi_comm) {
  comm::Communicator comm(mpi_comm);
  const int rank = comm.rank(), world = comm.size();
  MoeConfig config;
  config.hidden = o.hidden;
  config.num_experts = o.experts;
  config.num_shared = o.shared;
  config.top_k = o.topk;
  config.intermediate = o.inter;
  config.wire = parse_wire_precision(o.wire);
  config.validate();
  const int fixed_chunks = parse_overlap_chunks(o.chunks);
  const RoutingSkew<float> skew(o.zipf, o.hidden, o.experts, 17);
  std::mt19937_64 rng(1000 + rank);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(o.tokens * o.hidden), grad_y(o.tokens * o.hidden);
  for (auto& v : x) v = normal(rng);
  for (auto& v : grad_y) v = normal(rng) * 1e-2f;
  if (o.zipf > 0) skew.apply_to_tokens(x, o.hidden);
  if (rank == 0) {
    fmt::print(
        "sy-bench layer: {} ranks ({} nodes), {} tokens/rank, hidden {}, {} routed experts "
        "(inter {}) + {} shared, top-{}, zipf {}, fp32 with a {} wire, alltoall {}, {} timed "
        "iterations after {} warm-up steps\n{}\n",
        world, comm.topology().num_nodes, o.tokens, o.hidden, o.experts, o.inter, o.shared, o.topk,
        o.zipf, o.wire == "native" ? "fp32" : o.wire, o.alltoall, o.iters, kWarmupSteps,
        comm.describe());
  }
  const auto placement = bench_placement(o, config, comm, skew, x);
  const kernels::BackendOptions backend{o.backend, kernels::parse_compute_precision(o.compute)};

  std::vector<LayerUnderTest> layers(3);
  layers[0].label = "overlap off (1 chunk)";
  layers[1].label = "overlap on";
  layers[2].label = "overlap auto";
  const OverlapOptions modes[3] = {{OverlapMode::off, 1},
                                   {OverlapMode::on, fixed_chunks},
                                   {OverlapMode::automatic, fixed_chunks}};
  auto make_layer = [&](LayerUnderTest& l, const OverlapOptions& mode) {
    l.layer = std::make_unique<MoeLayer<float>>(config, comm, placement,
                                                LayerOptions{o.alltoall, mode, backend});
    init_params(l.layer->params(), 5);
    if (o.zipf > 0) skew.apply_to_gate(l.layer->params().gate_weight, o.hidden);
    l.y.resize(o.tokens * o.hidden);
    l.grad_x.resize(o.tokens * o.hidden);
  };
  for (int i = 0; i < 3; ++i) make_layer(layers[i], modes[i]);

  if (rank == 0) {
    fmt::print(
        "{}\ncommunication thread of the pipelined layers: {} priority "
        "(SWITCHYARD_COMM_THREAD_PRIORITY=normal|realtime)\nkernels: {}\n",
        buffer_reuse_description(), thread_priority_name(layers[1].layer->comm_thread_priority()),
        layers[0].layer->backend().describe());
  }
  for (int s = 0; s < kWarmupSteps; ++s) {
    for (auto& l : layers) step(l, x, grad_y, o.tokens, o.hidden, mpi_comm, false);
    if (rank == 0) fmt::print("warm-up step {}/{} done\n", s + 1, kWarmupSteps);
  }
  const std::string on_decision = layers[1].layer->overlap_decision();
  const std::string auto_decision = layers[2].layer->overlap_decision();
  // The serial layer in the pipelined one's chunks: what chunking alone costs or saves.
  const int chunks = static_cast<int>(layers[1].last_saved->chunks.size());
  layers.emplace_back();
  layers[3].label = fmt::format("overlap off ({} chunk{})", chunks, chunks == 1 ? "" : "s");
  make_layer(layers[3], {OverlapMode::off, chunks});
  step(layers[3], x, grad_y, o.tokens, o.hidden, mpi_comm, false);
  auto alltoall = comm::make_alltoall(o.alltoall, comm);
  // Attached after the warm-up, so the trace holds the timed iterations only.
  std::unique_ptr<Tracer> tracer;
  if (!o.trace.empty()) {
    tracer = std::make_unique<Tracer>(comm);
    layers[1].layer->set_tracer(tracer.get());
  }
  Series comm_only;
  CpuUsage comm_cpu;  // rank 0's machine
  Progress progress("sy-bench layer", o.iters, rank == 0);
  for (int i = 0; i < o.iters; ++i) {
    if (tracer) tracer->set_step(i);
    for (auto& l : layers) step(l, x, grad_y, o.tokens, o.hidden, mpi_comm, true);
    comm_alone(comm, *alltoall, layers[0].last_saved->chunks.at(0), o.hidden, o.topk, config.wire,
               mpi_comm, comm_only, comm_cpu);
    progress.step();
  }
  if (tracer) {
    layers[1].layer->set_tracer(nullptr);
    tracer->write(o.trace);
    if (rank == 0) {
      fmt::print(
          "trace: the pipelined layer's {} timed iterations written to {}; see "
          "tools/sy-trace\n",
          o.iters, o.trace);
    }
  }
  // Labelled by what the timed iterations ran (the layers have settled by then).
  for (int i = 1; i < 3; ++i) {
    const MoeSaved<float>& saved = *layers[i].last_saved;
    const bool pipelined = layers[i].layer->overlap_schedule().pipelined;
    layers[i].label = fmt::format("overlap {} ({}, {} chunk{})", i == 1 ? "on" : "auto",
                                  pipelined ? "pipelined" : "serial", saved.chunks.size(),
                                  saved.chunks.size() == 1 ? "" : "s");
  }

  // The pipelined results against the serial layer's (different chunk counts: within fp32
  // tolerance, see runtime/overlap.h).
  double errors[2] = {
      std::max(rel_error(layers[1].y, layers[0].y), rel_error(layers[2].y, layers[0].y)),
      std::max(rel_error(layers[1].grad_x, layers[0].grad_x),
               rel_error(layers[2].grad_x, layers[0].grad_x))};
  MPI_Allreduce(MPI_IN_PLACE, errors, 2, MPI_DOUBLE, MPI_MAX, mpi_comm);
  const bool agree = errors[0] <= 1e-5 && errors[1] <= 1e-5;

  double experts_ms[4];
  for (int i = 0; i < 4; ++i) experts_ms[i] = layers[i].experts_seconds * 1e3 / o.iters;
  MPI_Allreduce(MPI_IN_PLACE, experts_ms, 4, MPI_DOUBLE, MPI_MAX, mpi_comm);
  // The serial layer's routed-expert rate: 3 GEMMs of 2*H*I flops per (token, expert) pair
  // forward, twice that backward, over the time of the expert phases (which also hold their
  // permutes: the GEMMs alone run a little faster), summed over ranks.
  const std::vector<double> pairs = layers[0].layer->measure_device_load();
  const double pair_flops = 6.0 * o.hidden * o.inter;
  double expert_work[3] = {pairs[rank] * pair_flops * o.iters, layers[0].experts_seconds,
                           layers[0].experts_backward_seconds};
  MPI_Allreduce(MPI_IN_PLACE, expert_work, 3, MPI_DOUBLE, MPI_SUM, mpi_comm);
  const double expert_gflops[2] = {expert_work[0] / expert_work[1] / 1e9,
                                   2 * expert_work[0] / expert_work[2] / 1e9};
  const MachinePeak peak = machine_gemm_peak(backend.compute, 1024, 0.5, mpi_comm);
  double faults[2] = {double(layers[0].minor_faults) / o.iters,
                      double(layers[1].minor_faults) / o.iters};
  MPI_Allreduce(MPI_IN_PLACE, faults, 2, MPI_DOUBLE, MPI_MAX, mpi_comm);
  const LayerUnderTest& off = layers[0];
  const LayerUnderTest& on = layers[1];
  const double t_comm[2] = {median(comm_only.forward), median(comm_only.step)};
  const double t_compute[2] = {median(off.compute.forward), median(off.compute.step)};
  const double t_off[2] = {median(off.wall.forward), median(off.wall.step)};
  const double t_on[2] = {median(on.wall.forward), median(on.wall.step)};
  // Forward + backward communication also holds the gradient all-reduce, of which the shared
  // experts' part can be hidden (the gate's cannot: it is counted anyway, which lowers eta).
  const double t_reduce = median(off.grad_reduce.step);
  const double etas[2] = {eta(t_off[0], t_on[0], t_comm[0], t_compute[0]),
                          eta(t_off[1], t_on[1], t_comm[1] + t_reduce, t_compute[1])};
  if (rank == 0) {
    fmt::print("overlap on: {}\noverlap auto: {}\n\n", on_decision, auto_decision);
    fmt::print("times in ms, the slowest rank's per iteration\n");
    fmt::print("{:<34} {:>11} {:>9} {:>13} {:>9}\n", "", "fwd median", "fwd min", "fwd+bwd med",
               "min");
    auto row = [](const std::string& label, const Series& s) {
      fmt::print("{:<34} {:>11.1f} {:>9.1f} {:>13.1f} {:>9.1f}\n", label, median(s.forward) * 1e3,
                 minimum(s.forward) * 1e3, median(s.step) * 1e3, minimum(s.step) * 1e3);
    };
    for (const auto& l : layers) row(l.label, l.wall);
    row("comm alone (all-to-all calls)", comm_only);
    row("compute alone (serial, no comm)", off.compute);
    fmt::print("{:<34} {:>11} {:>9} {:>13.1f} {:>9.1f}   (serial step; comm of fwd+bwd below)\n",
               "gradient all-reduce", "", "", median(off.grad_reduce.step) * 1e3,
               minimum(off.grad_reduce.step) * 1e3);
    fmt::print("{:<34} {:>11} {:>9} {:>13.2f}   of rank 0's machine's {} (/proc/stat)\n",
               "cores busy during comm alone", "", "", comm_cpu.busy_cores(), comm_cpu.cores());
    fmt::print("{:<34}", "expert FFNs in the forward");
    for (const auto& l : layers) fmt::print(" {:.1f}", experts_ms[&l - layers.data()]);
    fmt::print("   (per row above: compute slowed by pipelining shows here)\n");
    fmt::print("\n{:<34} {:>11.2f} {:>23.2f}\n", "eta = (T_off - T_on) / min(comm, compute)",
               etas[0], etas[1]);
    fmt::print("{:<34} {:>11.2f} {:>23.2f}\n", "speed-up T_off / T_on",
               t_on[0] > 0 ? t_off[0] / t_on[0] : 0.0, t_on[1] > 0 ? t_off[1] / t_on[1] : 0.0);
    fmt::print("{:<34} {:>10.0f}% {:>22.0f}%\n", "comm share of the serial step",
               100 * t_comm[0] / t_off[0], 100 * (t_comm[1] + t_reduce) / t_off[1]);
    fmt::print("{:<34} {:>10.0f}% {:>22.0f}%\n", "compute share of the serial step",
               100 * t_compute[0] / t_off[0], 100 * t_compute[1] / t_off[1]);
    fmt::print("{:<34} {:>10.0f}% {:>22.0f}%\n", "auto vs off (median)",
               100 * (median(layers[2].wall.forward) / t_off[0] - 1),
               100 * (median(layers[2].wall.step) / t_off[1] - 1));
    fmt::print("\npipelined vs serial results: output rel. error {:.2e}, grad x {:.2e} ({})\n",
               errors[0], errors[1], agree ? "agree within fp32 1e-5" : "DISAGREE");
    const double global_tokens = double(o.tokens) * world;
    fmt::print(
        "\nwhole layer (forward + backward + gradient all-reduce): {:.0f} tokens/s serial, {:.0f} "
        "pipelined (global tokens / median step)\n",
        global_tokens / t_off[1], global_tokens / t_on[1]);
    fmt::print(
        "routed-expert FFNs (serial layer): forward {:.1f}, backward {:.1f} GFLOP/s per rank = "
        "{:.0f}% / {:.0f}% of the machine's measured {} GEMM peak, {:.1f} GFLOP/s per rank "
        "({} on 1024^3, all ranks at once)\n",
        expert_gflops[0], expert_gflops[1], 100 * expert_gflops[0] / peak.gflops,
        100 * expert_gflops[1] / peak.gflops,
        backend.compute == kernels::ComputePrecision::bf16 ? "bf16" : "fp32", peak.gflops,
        peak.backend);
    fmt::print("backward / forward (serial, median): {:.2f}\n", (t_off[1] - t_off[0]) / t_off[0]);
    fmt::print(
        "minor page faults per timed step (the most on any rank): serial {:.0f}, pipelined "
        "{:.0f}\n",
        faults[0], faults[1]);
  }
  if (rank == 0 && !o.json.empty()) {
    nlohmann::json rows = nlohmann::json::array();
    auto add = [&](const std::string& label, const Series& s) {
      rows.push_back({{"label", label},
                      {"forward_median_ms", median(s.forward) * 1e3},
                      {"forward_min_ms", minimum(s.forward) * 1e3},
                      {"step_median_ms", median(s.step) * 1e3},
                      {"step_min_ms", minimum(s.step) * 1e3}});
    };
    for (const auto& l : layers) add(l.label, l.wall);
    add("comm alone", comm_only);
    add("compute alone", off.compute);
    const nlohmann::json doc = {
        {"format", "switchyard-bench-layer/v1"},
        {"ranks", world},
        {"nodes", comm.topology().num_nodes},
        {"tokens_per_rank", o.tokens},
        {"hidden", o.hidden},
        {"experts", o.experts},
        {"shared", o.shared},
        {"topk", o.topk},
        {"inter", o.inter},
        {"zipf", o.zipf},
        {"placement", o.placement},
        {"redundant", o.redundant},
        {"wire", o.wire},
        {"comm_thread_priority", thread_priority_name(layers[1].layer->comm_thread_priority())},
        {"alltoall", o.alltoall},
        {"iters", o.iters},
        {"overlap_on", on_decision},
        {"overlap_auto", auto_decision},
        {"rows", rows},
        {"comm_alone_busy_cores", comm_cpu.busy_cores()},
        {"cores", comm_cpu.cores()},
        {"eta_forward", etas[0]},
        {"eta_forward_backward", etas[1]},
        {"backend", layers[0].layer->backend().describe()},
        {"tokens_per_second_serial", double(o.tokens) * world / t_off[1]},
        {"tokens_per_second_pipelined", double(o.tokens) * world / t_on[1]},
        {"expert_gflops_forward", expert_gflops[0]},
        {"expert_gflops_backward", expert_gflops[1]},
        {"machine_gemm_peak_gflops", peak.gflops},
        {"minor_faults_per_step_serial", faults[0]},
        {"minor_faults_per_step_pipelined", faults[1]},
        {"output_rel_error", errors[0]},
        {"grad_x_rel_error", errors[1]},
        {"definitions",
         "times are the slowest rank's per iteration; compute alone = serial step minus its time "
         "in all-to-all calls and the gradient all-reduce; eta = (T_off - T_on) / min(comm "
         "alone, compute alone), where fwd+bwd comm = all-to-all calls alone + the serial step's "
         "gradient all-reduce"}};
    std::ofstream out(o.json);
    out << doc.dump(2) << "\n";
    if (!out) throw std::runtime_error(fmt::format("--json: cannot write '{}'", o.json));
  }
  return agree ? 0 : 1;
}

}  // namespace switchyard::bench
