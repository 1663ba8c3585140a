#include "tools/sy-bench/step_bench.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#include "comm/communicator.h"
#include "runtime/moe_layer.h"
#include "runtime/routing_skew.h"
#include "tools/sy-bench/cpu_usage.h"
#include "tools/sy-bench/gemm_bench.h"
#include "tools/sy-bench/progress.h"
#include "tools/sy-bench/stats.h"

namespace switchyard::bench {

namespace {

MoeConfig config_of(const StepBenchOptions& o) {
  MoeConfig c;
  if (o.preset == "dsmoe16b") {
    c.hidden = 2048, c.num_experts = 64, c.num_shared = 2, c.top_k = 6, c.intermediate = 1408;
  } else if (o.preset == "tiny") {
    c.hidden = 256, c.num_experts = 16, c.num_shared = 1, c.top_k = 2, c.intermediate = 512;
  } else {
    throw std::invalid_argument(fmt::format("--preset '{}': expected dsmoe16b or tiny", o.preset));
  }
  if (o.hidden > 0) c.hidden = o.hidden;
  if (o.experts > 0) c.num_experts = o.experts;
  if (o.shared >= 0) c.num_shared = o.shared;
  if (o.topk > 0) c.top_k = o.topk;
  if (o.inter > 0) c.intermediate = o.inter;
  c.wire = parse_wire_precision(o.wire);
  c.validate();
  return c;
}

}  // namespace

int run_step_bench(const StepBenchOptions& o, MPI_Comm mpi_comm) {
  if (o.iters < 1 || o.warmup < 0 || o.tokens < 0) {
    throw std::invalid_argument("--iters must be >= 1, --warmup >= 0 and --tokens >= 0");
  }
  comm::Communicator comm(mpi_comm);
  const int rank = comm.rank(), world = comm.size();
  const MoeConfig config = config_of(o);
  const int64_t H = config.hidden;
  const kernels::BackendOptions backend{o.backend, kernels::parse_compute_precision(o.compute)};
  // Contiguous blocks of experts, as Megatron-Core places them (and the PyTorch baseline does).
  MoeLayer<float> layer(config, comm,
                        planner::ExpertPlacement::contiguous(config.num_experts, world),
                        LayerOptions{o.alltoall, {OverlapMode::off, 1}, backend});
  init_params(layer.params(), 5);
  const RoutingSkew<float> skew(o.zipf, H, config.num_experts, 17);
  if (o.zipf > 0) skew.apply_to_gate(layer.params().gate_weight, H);
  std::mt19937_64 rng(1000 + rank);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(o.tokens * H), grad_y(o.tokens * H), y(o.tokens * H), grad_x(o.tokens * H);
  for (auto& v : x) v = normal(rng);
  for (auto& v : grad_y) v = normal(rng) * 1e-2f;
  if (o.zipf > 0) skew.apply_to_tokens(x, H);
  if (rank == 0) {
    fmt::print(
        "sy-bench step: {} ranks, {} tokens/rank, H {}, {} routed experts (I {}) + {} shared, "
        "top-{}, zipf {}, all-to-all {}, {} wire, overlap off; {} warm-up + {} timed steps\n"
        "kernels: {}\n",
        world, o.tokens, H, config.num_experts, config.intermediate, config.num_shared,
        config.top_k, o.zipf, o.alltoall, o.wire, o.warmup, o.iters, layer.backend().describe());
  }

  std::vector<double> forward, step;
  std::vector<double> faults;  // per timed step, this rank's (the most on any rank after the loop)
  double experts_fwd = 0, experts_bwd = 0, reduce = 0, shared = 0;
  Progress progress("sy-bench step", o.warmup + o.iters, rank == 0);
  for (int i = 0; i < o.warmup + o.iters; ++i) {
    const bool timed = i >= o.warmup;
    PhaseTimes& t = layer.times();
    const double e0 = t.experts, eb0 = t.experts_backward, r0 = t.grad_reduce, s0 = t.shared;
    MPI_Barrier(mpi_comm);
    const int64_t faults0 = minor_page_faults();
    const double start = MPI_Wtime();
    auto fwd = layer.forward(x.data(), o.tokens, H, y.data());
    const double mid = MPI_Wtime();
    layer.backward(*fwd.saved, grad_y.data(), grad_x.data());
    const double end = MPI_Wtime();
    // The gradients accumulate as a trainer's do between optimizer steps; zeroing them is the
    // optimizer's business, outside the step.
    fwd.saved.reset();
    const int64_t step_faults = minor_page_faults() - faults0;
    double figures[2] = {mid - start, end - start};
    MPI_Allreduce(MPI_IN_PLACE, figures, 2, MPI_DOUBLE, MPI_MAX, mpi_comm);
    if (timed) {
      forward.push_back(figures[0]);
      step.push_back(figures[1]);
      faults.push_back(static_cast<double>(step_faults));
      experts_fwd += t.experts - e0;
      experts_bwd += t.experts_backward - eb0;
      reduce += t.grad_reduce - r0;
      shared += t.shared - s0;
    }
    progress.step(timed ? "" : "warm-up");
  }

  const std::vector<double> pairs = layer.measure_device_load();
  double work[3] = {pairs[rank] * 6.0 * H * config.intermediate * o.iters, experts_fwd,
                    experts_bwd};
  MPI_Allreduce(MPI_IN_PLACE, work, 3, MPI_DOUBLE, MPI_SUM, mpi_comm);
  MPI_Allreduce(MPI_IN_PLACE, faults.data(), static_cast<int>(faults.size()), MPI_DOUBLE, MPI_MAX,
                mpi_comm);
  // Rank 0's phases per step, ms: where the step's time goes.
  const double phases[4] = {1e3 * experts_fwd / o.iters, 1e3 * shared / o.iters,
                            1e3 * experts_bwd / o.iters, 1e3 * reduce / o.iters};
  const MachinePeak peak = machine_gemm_peak(backend.compute, 1024, 0.5, mpi_comm);
  if (rank == 0) {
    const double t_fwd = median(forward), t_step = median(step);
    const double fwd_rate = work[0] / work[1] / 1e9, bwd_rate = 2 * work[0] / work[2] / 1e9;
    fmt::print(
        "\nmedian of the slowest rank per step, ms: forward {:.1f}, backward {:.1f}, step {:.1f}\n",
        1e3 * t_fwd, 1e3 * (t_step - t_fwd), 1e3 * t_step);
    fmt::print(
        "rank 0, ms per step: routed experts forward {:.1f}, shared experts forward {:.1f}, routed "
        "experts backward {:.1f}, gradient all-reduce {:.1f}\n",
        phases[0], phases[1], phases[2], phases[3]);
    fmt::print("tokens/s (global tokens / step): {:.1f}\n", double(o.tokens) * world / t_step);
    fmt::print("backward / forward: {:.2f}\n", (t_step - t_fwd) / t_fwd);
    fmt::print(
        "routed-expert FFNs: forward {:.1f}, backward {:.1f} GFLOP/s per rank = {:.0f}% / {:.0f}% "
        "of the machine's {} GEMM peak measured now, {:.1f} GFLOP/s per rank ({} on 1024^3, all "
        "ranks at once)\n",
        fwd_rate, bwd_rate, 100 * fwd_rate / peak.gflops, 100 * bwd_rate / peak.gflops,
        kernels::compute_precision_name(backend.compute), peak.gflops, peak.backend);
    // Step by step too: the heap can take a few steps to settle (glibc keeps freed buffers, but
    // a new one may first have to grow the heap), which the mean alone would not show.
    fmt::print("minor page faults per step (most on any rank): {:.0f}; step by step: {}\n",
               std::accumulate(faults.begin(), faults.end(), 0.0) / o.iters,
               fmt::join(faults, " "));
  }
  return 0;
}

}  // namespace switchyard::bench
