// Teacher-student training of one expert-parallel DeepSeekMoE layer, launched with mpirun.
// A fixed random teacher layer produces targets; a student layer of the same shape learns them
// with Adam. Every rank draws its own tokens; the experts are split across ranks.
#include <mpi.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "comm/communicator.h"
#include "kernels/blas.h"
#include "runtime/adam.h"
#include "runtime/checkpoint.h"
#include "runtime/metrics_server.h"
#include "runtime/moe_layer.h"
#include "runtime/replanner.h"
#include "runtime/routing_skew.h"
#include "runtime/trace.h"

namespace sy = switchyard;

namespace {

struct Options {
  std::string preset = "tiny";
  std::string dtype = "fp32";
  std::string scoring;
  std::string alltoall = "flat";
  std::string overlap = "auto";    // communication/compute overlap of the student: off, on, auto
  std::string chunks = "auto";     // token chunks of a pipelined step, or auto
  std::string wire = "native";     // precision of the rows on the wire: native or bf16
  std::string backend;             // kernel backend; "" = SWITCHYARD_BACKEND, else openblas
  std::string compute = "native";  // GEMM input precision: native or bf16 (onednn)
  int steps = 0;
  int64_t tokens_per_rank = 0;
  double lr = 0;
  uint64_t seed = 1;
  bool selection_bias = false;
  double aux_alpha = 0.001;
  double require_loss_drop = 0;  // 0 = off; else fail unless last loss <= factor * first loss
  double skew = 0;               // routing skew: expert popularity ~ Zipf with this exponent
  int replan_every = 0;          // steps per re-planning window; 0 = fixed placement
  int redundant = 0;             // extra expert slots for replicas of hot experts
  std::string json;              // write a machine-readable summary here (rank 0)
  int experts = 0;               // override the preset's routed experts (0 = keep)
  int top_k = 0;                 // override the preset's top-k (0 = keep)
  std::string trace;             // write a merged trace here (default: $SWITCHYARD_TRACE)
  int metrics_port = 0;          // 0 = off; else rank r serves Prometheus metrics on this + r
  std::string metrics_address = "127.0.0.1";
  std::string save_dir;          // checkpoints into DIR/step-N (docs/checkpoints.md)
  int save_every = 0;            // steps between checkpoints; 0 = only after the last step
  int keep_checkpoints = 2;      // complete checkpoints kept in save_dir
  std::string resume;            // continue from this checkpoint (a DIR or DIR/step-N)
  int64_t global_tokens = 0;     // 0 = --tokens-per-rank; else one global batch split over ranks
  std::string loss_log;          // rank 0 writes "step loss" per step (%.17g) here
  double timeout = 0;            // seconds every wait for a peer may take; 0 = SWITCHYARD_TIMEOUT
  int log_every = 0;             // a step line every N steps (and the first and last); 0 = ~20 lines
};

// Test-only straggler: SWITCHYARD_TEST_DELAY_RANK=r:ms makes rank r sleep ms before every backward
// pass, whose first collective is the gradient dispatch, so that tests/trace can check that
// sy-trace names r as the rank the others waited on. Returns the sleep for this rank (0: none).
std::chrono::milliseconds test_delay_for(int rank) {
  const char* spec = std::getenv("SWITCHYARD_TEST_DELAY_RANK");
  int delayed = -1, ms = 0;
  if (spec == nullptr || std::sscanf(spec, "%d:%d", &delayed, &ms) != 2 || delayed != rank) {
    return std::chrono::milliseconds(0);
  }
  return std::chrono::milliseconds(ms);
}

sy::OverlapOptions overlap_options(const Options& o) {
  return {sy::parse_overlap_mode(o.overlap), sy::parse_overlap_chunks(o.chunks)};
}

// Presets: a tiny layer that trains in about a minute on 2 cores, and DeepSeekMoE-16B's layer
// shape (H 2048, 64 routed + 2 shared experts, top-6, I 1408) with few tokens per rank.
sy::MoeConfig preset_config(const Options& o, int* steps, int64_t* tokens, double* lr) {
  sy::MoeConfig c;
  if (o.preset == "tiny") {
    c.hidden = 128;
    c.num_experts = 16;
    c.num_shared = 2;
    c.top_k = 4;
    c.intermediate = 64;
    c.n_group = 4;
    c.topk_group = 2;
    *steps = 1000;
    *tokens = 256;
    *lr = 3e-3;
  } else if (o.preset == "dsmoe16b") {
    c.hidden = 2048;
    c.num_experts = 64;
    c.num_shared = 2;
    c.top_k = 6;
    c.intermediate = 1408;
    *steps = 6;
    *tokens = 128;
    *lr = 1e-4;
  } else {
    throw sy::Error(sy::ErrorCode::invalid_argument,
                    fmt::format("--preset '{}' is unknown; use tiny or dsmoe16b", o.preset));
  }
  if (o.experts > 0) c.num_experts = o.experts;
  if (o.top_k > 0) c.top_k = o.top_k;
  if (c.num_experts % c.n_group != 0 || c.top_k > c.topk_group * (c.num_experts / c.n_group)) {
    c.n_group = c.topk_group = 1;  // an override the preset's groups do not fit: route ungrouped
  }
  c.scoring = sy::parse_score_func(o.scoring.empty() ? "softmax" : o.scoring);
  c.selection_bias = o.selection_bias;
  c.aux_expert_alpha = o.aux_alpha;
  c.z_loss_alpha = o.aux_alpha > 0 ? 1e-4 : 0;
  c.wire = sy::parse_wire_precision(o.wire);
  return c;
}

template <typename T>
void fill_tokens(std::vector<T>& x, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (auto& v : x) v = static_cast<T>(normal(rng));
}

// --global-tokens: rows [first, first + rows) of a global batch whose row g is drawn from its own
// stream, so that the batch is the same whatever the number of ranks and how it is split.
template <typename T>
void fill_global_tokens(std::vector<T>& x, int64_t hidden, int64_t first, uint64_t seed) {
  std::normal_distribution<double> normal(0.0, 1.0);
  for (size_t row = 0; row * hidden < x.size(); ++row) {
    std::mt19937_64 rng(seed ^ (0x9E3779B97F4A7C15ull * (uint64_t(first) + row + 1)));
    normal.reset();
    for (int64_t j = 0; j < hidden; ++j) x[row * hidden + j] = static_cast<T>(normal(rng));
  }
}

// The backend's own rate on one expert's gate_proj GEMM shape ([tokens per expert, H] x [H, I]),
// repeated for a fixed time on every rank at once so that it shares the cores as the layer does.
template <typename T>
double blas_gflops_per_rank(sy::kernels::Backend<T>& backend, sy::comm::Communicator& comm,
                            int64_t rows, int64_t hidden, int64_t inter) {
  rows = std::max<int64_t>(rows, 1);
  std::vector<T> a(rows * hidden, T(0.5)), b(inter * hidden, T(0.25)), c(rows * inter);
  comm.barrier();
  const auto start = std::chrono::steady_clock::now();
  double seconds = 0;
  int64_t reps = 0;
  while (seconds < 1.0) {
    backend.gemm(false, true, rows, inter, hidden, T(1), a.data(), hidden, b.data(), hidden, T(0),
                 c.data(), inter, sy::kernels::ParamOperand::b);
    ++reps;
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  double rate = 2.0 * rows * hidden * inter * reps / seconds / 1e9;
  comm.allreduce_sum(&rate, 1);
  return rate / comm.size();
}

// Seconds per phase of one training step: the layer's own phases, then the optimizer.
constexpr const char* kPhaseNames[] = {"gate",   "dispatch", "experts",     "combine",
                                       "shared", "backward", "grad-reduce", "optimizer"};
constexpr size_t kExpertsPhase = 2;
using Split = std::array<double, std::size(kPhaseNames)>;

Split split_of(const sy::PhaseTimes& t, double optimizer) {
  return {t.gate, t.dispatch, t.experts, t.combine, t.shared, t.backward, t.grad_reduce, optimizer};
}

// " gate 0.31 dispatch 1.20 ..." in milliseconds, each value divided by `per`.
std::string format_split(const Split& split, double per) {
  std::string out;
  for (size_t i = 0; i < split.size(); ++i) {
    out += fmt::format(" {} {:.2f}", kPhaseNames[i], 1e3 * split[i] / per);
  }
  return out;
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * double(v.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - double(lo)) * (v[hi] - v[lo]);
}

// The run's figures as JSON (format switchyard-train/v1), for sweeps and comparisons.
void write_summary(const std::string& path, const Options& o, const sy::MoeConfig& c,
                   sy::comm::Communicator& comm, int64_t tokens, int steps,
                   const std::vector<double>& step_seconds,
                   const std::vector<double>& step_imbalance, const Split& split_sum,
                   const double traffic[2], double first_loss, double last_loss,
                   const std::string& overlap_decision) {
  const double n = double(step_seconds.size());
  const double total_seconds = std::accumulate(step_seconds.begin(), step_seconds.end(), 0.0);
  const double global_tokens = double(tokens) * comm.size();
  nlohmann::json split;
  for (size_t i = 0; i < split_sum.size(); ++i) split[kPhaseNames[i]] = 1e3 * split_sum[i] / n;
  nlohmann::json doc = {
      {"format", "switchyard-train/v1"},
      {"preset", o.preset},
      {"dtype", o.dtype},
      {"alltoall", o.alltoall},
      {"overlap", o.overlap},
      {"wire", o.wire},
      {"backend", o.backend.empty() ? "default" : o.backend},
      {"compute", o.compute},
      {"overlap_decision", overlap_decision},
      {"ranks", comm.size()},
      {"nodes", comm.topology().num_nodes},
      {"ranks_per_node", comm.topology().local_size},
      {"tokens_per_rank", tokens},
      {"global_tokens", global_tokens},
      {"layer",
       {{"hidden", c.hidden},
        {"num_experts", c.num_experts},
        {"num_shared", c.num_shared},
        {"top_k", c.top_k},
        {"intermediate", c.intermediate}}},
      {"skew", o.skew},
      {"replan_every", o.replan_every},
      {"redundant", o.redundant},
      {"steps", steps},
      {"timed_steps", step_seconds.size()},
      {"step_ms",
       {{"median", 1e3 * percentile(step_seconds, 0.5)},
        {"p10", 1e3 * percentile(step_seconds, 0.1)},
        {"p90", 1e3 * percentile(step_seconds, 0.9)},
        {"min", 1e3 * percentile(step_seconds, 0.0)},
        {"max", 1e3 * percentile(step_seconds, 1.0)}}},
      {"tokens_per_s", global_tokens * n / total_seconds},
      {"tokens_per_s_per_rank", double(tokens) * n / total_seconds},
      {"split_ms", split},
      {"bytes_per_step", {{"intra_node", traffic[0] / n}, {"inter_node", traffic[1] / n}}},
      {"device_imbalance", std::accumulate(step_imbalance.begin(), step_imbalance.end(), 0.0) / n},
      {"loss_first", first_loss},
      {"loss_last", last_loss}};
  std::ofstream out(path);
  out << doc.dump(2) << "\n";
  if (!out) {
    throw sy::Error(sy::ErrorCode::invalid_argument,
                    fmt::format("--json: cannot write '{}'", path));
  }
}

// The largest v over ranks, through the communicator so that the wait is bounded by its timeout
// (a blocking MPI_Allreduce would wait for a dead rank forever).
double allreduce_max(sy::comm::Communicator& comm, double v) {
  std::vector<double> all(comm.size(), 0.0);
  all[comm.rank()] = v;
  comm.allreduce_sum(all.data(), all.size());
  return *std::max_element(all.begin(), all.end());
}

template <typename T>
int train(const Options& o, sy::MoeConfig config, int steps, int64_t tokens, double lr) {
  sy::comm::CommOptions comm_options;
  if (o.timeout > 0) {
    comm_options.timeout = std::chrono::milliseconds(static_cast<int64_t>(o.timeout * 1000));
  }
  sy::comm::Communicator comm(MPI_COMM_WORLD, comm_options);
  const int rank = comm.rank(), world = comm.size();
  auto placement = sy::planner::ExpertPlacement::contiguous(config.num_experts, world);

  sy::MoeConfig teacher_config = config;
  teacher_config.selection_bias = false;
  teacher_config.wire = sy::WirePrecision::native;  // the targets are exact
  sy::MoeLayer<T> teacher(teacher_config, comm, placement, o.alltoall);
  const sy::kernels::BackendOptions backend{o.backend,
                                            sy::kernels::parse_compute_precision(o.compute)};
  sy::MoeLayer<T> student(config, comm, placement,
                          sy::LayerOptions{o.alltoall, overlap_options(o), backend});
  sy::init_params(teacher.params(), o.seed * 1000 + 1);
  sy::init_params(student.params(), o.seed * 1000 + 2);
  const sy::RoutingSkew<T> skew(o.skew, config.hidden, config.num_experts, o.seed * 1000 + 3);
  if (o.skew > 0) {
    skew.apply_to_gate(teacher.params().gate_weight, config.hidden);
    skew.apply_to_gate(student.params().gate_weight, config.hidden);
  }
  sy::MoeAdam<T> adam({.lr = lr}, config, student.params().expert_ids);
  sy::Replanner replanner({.interval = o.replan_every, .redundant_slots = o.redundant},
                          config.num_experts, world, comm.topology().num_nodes);
  // --global-tokens: this rank's contiguous slice of the global batch (uneven splits are fine).
  int64_t first_token = 0;
  if (o.global_tokens > 0) {
    first_token = o.global_tokens * rank / world;
    tokens = o.global_tokens * (rank + 1) / world - first_token;
  }
  // --resume: weights, Adam state, selection bias, placement (on the saved number of ranks) and
  // the re-planner's window; the data of a step depends only on (seed, step).
  int start_step = 1;
  if (!o.resume.empty()) {
    const auto info = sy::checkpoint::load(comm, o.resume, student, &adam);
    const auto& st = info.state;
    sy::require(st.value("seed", uint64_t(0)) == o.seed,
                fmt::format("--resume {}: saved with --seed {}, this run has --seed {}; the data "
                            "would differ",
                            info.path, st.value("seed", uint64_t(0)), o.seed));
    sy::require(st.value("global_tokens", int64_t(0)) == o.global_tokens,
                fmt::format("--resume {}: saved with --global-tokens {}, this run has {}",
                            info.path, st.value("global_tokens", int64_t(0)), o.global_tokens));
    start_step = static_cast<int>(st.value("step", int64_t(0))) + 1;
    if (info.saved_world_size == world && st.contains("replanner")) {
      sy::ReplannerState rs;
      st["replanner"]["window_load"].get_to(rs.window_load);
      st["replanner"]["current_row"].get_to(rs.current_row);
      replanner.restore(rs);
    }
    if (rank == 0) {
      std::printf("resumed from %s: step %d, saved on %d ranks, placement %s\n",
                  info.path.c_str(), start_step - 1, info.saved_world_size,
                  info.placement_restored ? "restored" : "kept (resharded)");
    }
    if (rank == 0 && info.saved_world_size != world && o.global_tokens == 0) {
      std::printf("warning: resumed on %d ranks from a checkpoint saved on %d, each rank drawing "
                  "its own tokens: the global batch is not the saved run's. Give both runs "
                  "--global-tokens G to continue the same trajectory\n",
                  world, info.saved_world_size);
    }
  }
  auto save_checkpoint = [&](int step) {
    const auto rs = replanner.state();
    const nlohmann::json state = {
        {"step", step},
        {"seed", o.seed},
        {"global_tokens", o.global_tokens},
        {"tokens_per_rank", o.global_tokens > 0 ? int64_t(0) : tokens},
        {"replanner", {{"window_load", rs.window_load}, {"current_row", rs.current_row}}}};
    // Weights and Adam's two moments: a few GB for DeepSeekMoE-16B, so say it has started.
    if (rank == 0) {
      std::printf("checkpoint: writing step %d into %s ...\n", step, o.save_dir.c_str());
      std::fflush(stdout);
    }
    const auto start = std::chrono::steady_clock::now();
    const std::string path = sy::checkpoint::save(comm, o.save_dir, step, student, &adam, state,
                                                  {.keep = o.keep_checkpoints, .crash_hook = {}});
    if (rank == 0) {
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      uintmax_t bytes = 0;
      std::error_code ec;
      for (const auto& f : std::filesystem::recursive_directory_iterator(path, ec)) {
        if (f.is_regular_file(ec)) bytes += f.file_size(ec);
      }
      std::printf("checkpoint: %s (%.1f MB from %d rank%s in %.2f s, %.0f MB/s)\n", path.c_str(),
                  double(bytes) / 1e6, world, world == 1 ? "" : "s", seconds,
                  double(bytes) / 1e6 / std::max(seconds, 1e-9));
      std::fflush(stdout);
    }
  };
  FILE* loss_log = nullptr;
  if (rank == 0 && !o.loss_log.empty()) {
    loss_log = std::fopen(o.loss_log.c_str(), "w");
    sy::require(loss_log != nullptr, fmt::format("--loss-log: cannot write '{}'", o.loss_log));
  }

  // Only the student is traced: the teacher's forward is data generation, not the measured step.
  std::unique_ptr<sy::Tracer> tracer;
  if (!o.trace.empty()) {
    tracer = std::make_unique<sy::Tracer>(comm);
    student.set_tracer(tracer.get());
  }
  const auto delay = test_delay_for(rank);
  // Live metrics of the student, one endpoint per rank so that a scrape never needs the others.
  sy::Metrics metrics;
  std::optional<sy::MetricsServer> metrics_server;
  if (o.metrics_port > 0) {
    sy::require(o.metrics_port + world - 1 <= 65535,
                fmt::format("--metrics-port {}: rank {} would need port {}; use a lower port",
                            o.metrics_port, world - 1, o.metrics_port + world - 1));
    student.set_metrics(&metrics);
    metrics_server.emplace(
        metrics, sy::MetricsServerOptions{.address = o.metrics_address,
                                          .port = static_cast<uint16_t>(o.metrics_port + rank),
                                          .rank = rank});
    if (rank == 0) {
      std::printf("metrics: rank r serves http://%s:%d+r/metrics (Prometheus text)\n",
                  o.metrics_address.c_str(), o.metrics_port);
    }
  }

  const int64_t H = config.hidden;
  const double global_tokens = o.global_tokens > 0 ? double(o.global_tokens) : double(tokens) * world;
  if (rank == 0) {
    std::printf("switchyard train_moe: preset %s, %s, %d ranks, %s\n", o.preset.c_str(),
                o.dtype.c_str(), world, comm.topology().describe().c_str());
    std::printf(
        "layer: H %lld, %d routed experts (top-%d, %s scoring) + %d shared, I %lld; "
        "%lld tokens/rank; all-to-all %s with %s rows; overlap %s (chunks %s); Adam lr %g; %d "
        "steps\n"
        "times are means over ranks in ms; backward includes grad-reduce\n",
        (long long)H, config.num_experts, config.top_k,
        config.scoring == sy::kernels::ScoreFunc::softmax ? "softmax" : "sigmoid",
        config.num_shared, (long long)config.intermediate, (long long)tokens, o.alltoall.c_str(),
        sy::wire_precision_name(config.wire), o.overlap.c_str(), o.chunks.c_str(), lr, steps);
    std::printf("kernels: %s\n", student.backend().describe().c_str());
    std::fflush(stdout);
  }

  std::vector<T> x(tokens * H), target(tokens * H), y(tokens * H), grad_y(tokens * H),
      grad_x(tokens * H);
  double first_loss = 0, last_loss = 0, timed_seconds = 0, window_imbalance = 0;
  int timed_steps = 0, window_steps = 0;
  std::vector<double> step_seconds, step_imbalance;
  std::string overlap_decision = student.overlap_decision();
  double traffic[2] = {0, 0};  // bytes over all timed steps and ranks: intra-node, inter-node
  Split timed{};
  for (int step = start_step; step <= steps; ++step) {
    if (o.global_tokens > 0) {
      fill_global_tokens(x, H, first_token, o.seed * 1000003ull + step * 7919ull);
    } else {
      fill_tokens(x, o.seed * 1000003ull + step * 7919ull + rank);
    }
    if (o.skew > 0) skew.apply_to_tokens(x, H);
    teacher.forward(x.data(), tokens, H, target.data());

    student.times() = {};
    student.traffic() = {};
    if (tracer) tracer->set_step(step);
    comm.barrier();
    const auto start = std::chrono::steady_clock::now();
    auto fwd = student.forward(x.data(), tokens, H, y.data());
    double local_sq = 0;
    for (int64_t i = 0; i < tokens * H; ++i) {
      const double d = double(y[i]) - double(target[i]);
      local_sq += d * d;
      grad_y[i] = static_cast<T>(2.0 * d / (global_tokens * H));
    }
    // Cleared for this step's backward to write (not zeroed for it to add onto: no 2.2 GB pass
    // at DeepSeekMoE-16B on one rank, and the weight-gradient GEMMs need not read them).
    student.grads().mark_fresh();
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
    student.backward(*fwd.saved, grad_y.data(), grad_x.data());
    double optimizer_seconds = 0;
    {
      sy::ScopedPhase phase(optimizer_seconds);
      adam.step(student.params(), student.grads());
      student.update_selection_bias();
    }
    const double seconds = allreduce_max(
        comm, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());

    double sums[2] = {local_sq, 0};
    for (int64_t i = 0; i < tokens * H; ++i) sums[1] += double(target[i]) * double(target[i]);
    comm.allreduce_sum(sums, 2);
    const double loss = sums[0] / (global_tokens * H);
    const double rel = sums[0] / std::max(sums[1], 1e-300);
    if (step == start_step) first_loss = loss;
    last_loss = loss;
    if (loss_log != nullptr) std::fprintf(loss_log, "%d %.17g\n", step, loss);

    Split split = split_of(student.times(), optimizer_seconds);
    comm.allreduce_sum(split.data(), split.size());
    for (double& v : split) v /= world;  // mean over ranks
    const auto& load = student.last_expert_load();
    const double max_load = *std::max_element(load.begin(), load.end());
    const double mean_load = global_tokens * config.top_k / config.num_experts;
    const auto device_load = student.measure_device_load();
    const double device_imbalance = *std::max_element(device_load.begin(), device_load.end()) /
                                    (global_tokens * config.top_k / world);
    window_imbalance += device_imbalance;
    ++window_steps;
    double step_traffic[2] = {double(student.traffic().intra_node_bytes),
                              double(student.traffic().inter_node_bytes)};
    comm.allreduce_sum(step_traffic, 2);
    if (step > start_step || steps == start_step) {
      timed_seconds += seconds;
      ++timed_steps;
      for (size_t i = 0; i < split.size(); ++i) timed[i] += split[i];
      step_seconds.push_back(seconds);
      step_imbalance.push_back(device_imbalance);
      traffic[0] += step_traffic[0];
      traffic[1] += step_traffic[1];
    }
    // A line every log_every steps, the first and the last: a long run stays readable.
    const int log_every =
        o.log_every > 0 ? o.log_every : std::max(1, (steps - start_step + 1 + 19) / 20);
    const bool log_step = step == start_step || step == steps || step % log_every == 0;
    if (rank == 0 && log_step) {
      std::printf(
          "step %4d/%d  loss %.4e (rel %.3f)  aux exp %.3f dev %.3f z %.3f  tok/s %9.0f  "
          "ms:%s  expert load max/mean %.2f  device %.2f\n",
          step, steps, loss, rel, fwd.aux.expert_balance, fwd.aux.device_balance, fwd.aux.z_loss,
          global_tokens / seconds, format_split(split, 1).c_str(), max_load / mean_load,
          device_imbalance);
      std::fflush(stdout);
    }

    if (rank == 0 && student.overlap_decision() != overlap_decision) {
      overlap_decision = student.overlap_decision();
      std::printf("overlap after step %d: %s\n", step, overlap_decision.c_str());
      std::fflush(stdout);
    }
    replanner.record(load);
    if (replanner.due(step)) {
      sy::ReplanDecision decision;
      std::optional<sy::planner::ExpertPlacement> next;
      {
        sy::TraceSpan trace(tracer.get(), sy::TracePhase::replan);
        next = replanner.replan(student.placement(), &decision);
      }
      if (next) student.apply_placement(*next, adam.state());
      if (rank == 0) {
        std::printf(
            "re-plan after step %d: measured device imbalance over the window %.3f; "
            "predicted %.3f -> %.3f with %d redundant slots: %s (%d replicas moved)\n",
            step, window_imbalance / window_steps, decision.current_imbalance,
            decision.planned_imbalance, o.redundant,
            decision.adopted ? "adopted" : "kept the current placement",
            decision.adopted ? decision.moved_experts : 0);
        std::fflush(stdout);
      }
      window_imbalance = 0;
      window_steps = 0;
    }
    if (!o.save_dir.empty() &&
        (step == steps || (o.save_every > 0 && step % o.save_every == 0))) {
      save_checkpoint(step);
    }
  }
  if (loss_log != nullptr) std::fclose(loss_log);

  if (tracer) {
    tracer->write(o.trace);
    if (rank == 0) {
      std::printf("trace: every rank's events written to %s (%zu on rank 0); see tools/sy-trace\n",
                  o.trace.c_str(), tracer->events().size());
    }
  }

  const double pairs = global_tokens * config.top_k;
  // Only for the summary of timed steps (none when a resumed run had nothing left to do).
  const double blas_rate =
      timed_steps == 0 ? 0.0
                       : blas_gflops_per_rank<T>(student.backend(), comm,
                                                 static_cast<int64_t>(pairs / config.num_experts),
                                                 H, config.intermediate);
  if (rank == 0 && timed_steps > 0) {
    const double n = timed_steps;
    std::printf(
        "\nsummary over %d steps (first step excluded as warm-up): %.0f tokens/s "
        "(%.0f per rank), step %.1f ms, mean ms per step:%s; loss %.4e -> %.4e\n",
        timed_steps, global_tokens * n / timed_seconds, tokens * n / timed_seconds,
        1e3 * timed_seconds / n, format_split(timed, n).c_str(), first_loss, last_loss);
    // Routed-expert forward: three GEMMs of 2*H*I flops per (token, expert) pair.
    const double expert_rate =
        n * pairs * 6.0 * H * config.intermediate / (timed[kExpertsPhase] * world) / 1e9;
    std::printf(
        "routed experts (forward) ran at %.1f GFLOP/s per rank; the backend alone on one "
        "expert's GEMM shape, all ranks at once: %.1f GFLOP/s per rank (%.0f%%)\n",
        expert_rate, blas_rate, 100.0 * expert_rate / blas_rate);
  }
  if (rank == 0 && !o.json.empty() && timed_steps > 0) {
    write_summary(o.json, o, config, comm, tokens, steps, step_seconds, step_imbalance, timed,
                  traffic, first_loss, last_loss, student.overlap_decision());
  }
  if (o.require_loss_drop > 0 && !(last_loss <= o.require_loss_drop * first_loss)) {
    if (rank == 0) {
      std::fprintf(stderr, "train_moe: loss went from %.4e to %.4e, not below %.2f of the first\n",
                   first_loss, last_loss, o.require_loss_drop);
    }
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"switchyard: teacher-student training of an expert-parallel DeepSeekMoE layer"};
  app.add_option("--preset", o.preset, "tiny | dsmoe16b")->capture_default_str();
  app.add_option("--dtype", o.dtype, "fp32 | fp64")->capture_default_str();
  app.add_option("--log-every", o.log_every,
                 "print a step line every N steps, besides the first and the last (default: about "
                 "20 lines per run)")
      ->check(CLI::Range(1, 1 << 30));
  app.add_option("--timeout", o.timeout,
                 "seconds any wait for another rank may take before the run fails naming it "
                 "(default: SWITCHYARD_TIMEOUT, else 120)")
      ->check(CLI::Range(0.001, 7 * 86400.0));
  app.add_option("--scoring", o.scoring, "softmax | sigmoid (default softmax)");
  app.add_option("--alltoall", o.alltoall, "all-to-all algorithm")->capture_default_str();
  app.add_option("--overlap", o.overlap,
                 "hide the all-to-all behind expert compute: off, on, or auto (measures both on "
                 "the first steps and keeps the faster)")
      ->check(CLI::IsMember({"off", "on", "auto"}))
      ->capture_default_str();
  app.add_option("--chunks", o.chunks,
                 "token chunks of a pipelined step: a count, or auto (from the measured "
                 "communication and compute times)")
      ->capture_default_str();
  app.add_option("--wire", o.wire,
                 "precision of the token rows on the wire: native (the --dtype) or bf16 (half of "
                 "fp32's bytes, rounded to bfloat16)")
      ->check(CLI::IsMember({"native", "bf16"}))
      ->capture_default_str();
  app.add_option("--backend", o.backend,
                 "kernel backend: openblas or onednn (default: SWITCHYARD_BACKEND, else openblas)")
      ->check(CLI::IsMember({"openblas", "onednn"}));
  app.add_option("--compute", o.compute,
                 "GEMM input precision: native (the --dtype) or bf16 (onednn, fp32 only; fp32 "
                 "accumulation)")
      ->check(CLI::IsMember({"native", "bf16"}))
      ->capture_default_str();
  app.add_option("--steps", o.steps, "training steps (default: the preset's)");
  app.add_option("--tokens-per-rank", o.tokens_per_rank, "tokens per rank (default: the preset's)");
  app.add_option("--lr", o.lr, "Adam learning rate (default: the preset's)");
  app.add_option("--seed", o.seed, "seed of weights and data")->capture_default_str();
  app.add_flag("--selection-bias", o.selection_bias, "aux-loss-free balancing bias");
  app.add_option("--aux-alpha", o.aux_alpha, "expert balance loss coefficient")
      ->capture_default_str();
  app.add_option("--skew", o.skew, "routing skew (expert popularity ~ Zipf(skew)); 0 = none")
      ->capture_default_str();
  app.add_option("--replan-every", o.replan_every,
                 "re-plan the expert placement every N steps from measured loads (0 = never)")
      ->capture_default_str();
  app.add_option("--redundant", o.redundant,
                 "redundant expert slots for replicas of hot experts (E + R must divide by ranks)")
      ->capture_default_str();
  app.add_option("--experts", o.experts, "routed experts (default: the preset's)");
  app.add_option("--top-k", o.top_k, "experts per token (default: the preset's)");
  app.add_option("--json", o.json, "write the run's figures as JSON to this file (rank 0)");
  app.add_option("--require-loss-drop", o.require_loss_drop,
                 "exit 1 unless the last loss <= this factor times the first (0 = off)");
  app.add_option("--trace", o.trace,
                 "write a merged Chrome trace of every rank here (default: $SWITCHYARD_TRACE; "
                 "read with tools/sy-trace)");
  app.add_option("--metrics-port", o.metrics_port,
                 "serve live Prometheus metrics: rank r on this port + r (0 = off)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  app.add_option("--metrics-address", o.metrics_address, "address the metrics endpoints listen on")
      ->capture_default_str();
  app.add_option("--save", o.save_dir,
                 "write checkpoints into DIR/step-N (atomic; every --save-every steps and after "
                 "the last)");
  app.add_option("--save-every", o.save_every, "steps between checkpoints (0 = after the last only)")
      ->capture_default_str();
  app.add_option("--keep-checkpoints", o.keep_checkpoints,
                 "complete checkpoints kept in the --save DIR (0 = all)")
      ->capture_default_str();
  app.add_option("--resume", o.resume,
                 "continue from a checkpoint: DIR (its latest) or DIR/step-N; the number of ranks "
                 "may differ from the saving run's");
  app.add_option("--global-tokens", o.global_tokens,
                 "tokens per step over all ranks, each rank taking a contiguous slice of one "
                 "global batch (the same batch whatever the rank count); 0 = --tokens-per-rank")
      ->capture_default_str();
  app.add_option("--loss-log", o.loss_log, "write 'step loss' per step (%.17g) here (rank 0)");
  o.trace = sy::Tracer::path_from_env();
  CLI11_PARSE(app, argc, argv);

  // A pipelined MoE layer (overlap on) moves data from a communication thread.
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  int rc = 0;
  try {
    int steps = 0;
    int64_t tokens = 0;
    double lr = 0;
    sy::MoeConfig config = preset_config(o, &steps, &tokens, &lr);
    if (o.steps > 0) steps = o.steps;
    if (o.tokens_per_rank > 0) tokens = o.tokens_per_rank;
    if (o.lr > 0) lr = o.lr;
    if (o.dtype == "fp32") {
      rc = train<float>(o, config, steps, tokens, lr);
    } else if (o.dtype == "fp64") {
      rc = train<double>(o, config, steps, tokens, lr);
    } else {
      throw sy::Error(sy::ErrorCode::invalid_argument,
                      fmt::format("--dtype '{}' is unknown; use fp32 or fp64", o.dtype));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_moe: %s\n", e.what());
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  MPI_Finalize();
  return rc;
}
