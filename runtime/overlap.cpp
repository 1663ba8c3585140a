#include "runtime/overlap.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <vector>

#include <fmt/format.h>
#include <mpi.h>

#include "base/error.h"

namespace switchyard {

namespace {

// Per chunk and step: the forward's counts exchange, and the latency of the forward dispatch and
// combine and the backward dispatch and combine, each about one round.
constexpr double kRoundsPerChunk = 5;
constexpr int kMaxChunks = 16;
// Every GEMM call packs its weight operand once, whatever its row count: an SwiGLU expert call on
// M rows costs about as much as M + 14 rows of arithmetic (OpenBLAS sgemm, hidden 1024 x 352,
// one thread: 69 GFLOP/s at 48 rows, 83 at 96, 92 at 384), so each chunk adds ~14 rows per expert.
constexpr double kPackingRows = 14;
constexpr double kMinRowsPerExpertCall = 48;
// Probe steps of each kind in automatic mode; the fastest of each is compared.
constexpr int kProbeSteps = 2;
// Automatic mode pipelines only when that is clearly faster: a gain within timing noise is not
// worth the risk of a slower layer.
constexpr double kRequiredGain = 0.02;

std::vector<double> mean_over_ranks(comm::Communicator& comm, std::vector<double> values) {
  comm.allreduce_sum(values.data(), values.size());
  for (double& v : values) v /= comm.size();
  return values;
}

// Rank 0's value on every rank (floating-point sums need not round alike everywhere, so decisions
// taken from them are rank 0's).
int64_t rank0_value(comm::Communicator& comm, int64_t value) {
  int64_t v = comm.rank() == 0 ? value : 0;
  comm.allreduce_sum(&v, 1);
  return v;
}

}  // namespace

void OverlapOptions::validate() const {
  require(chunks >= 0 && chunks <= 4096,
          fmt::format("OverlapOptions.chunks = {} is out of range: use 1..4096 token chunks per "
                      "call, or 0 to choose them from measurements",
                      chunks));
}

OverlapMode parse_overlap_mode(const std::string& name) {
  if (name == "off") return OverlapMode::off;
  if (name == "on") return OverlapMode::on;
  if (name == "auto") return OverlapMode::automatic;
  throw Error(ErrorCode::invalid_argument,
              fmt::format("unknown overlap mode '{}'; use off, on or auto", name));
}

int parse_overlap_chunks(const std::string& text) {
  if (text == "auto") return 0;
  int chunks = -1;
  try {
    size_t used = 0;
    chunks = std::stoi(text, &used);
    if (used != text.size()) chunks = -1;
  } catch (const std::exception&) {
    chunks = -1;
  }
  require(chunks >= 1, fmt::format("chunks '{}': give a count >= 1, or auto", text));
  return chunks;
}

const char* overlap_mode_name(OverlapMode mode) {
  switch (mode) {
    case OverlapMode::off:
      return "off";
    case OverlapMode::on:
      return "on";
    case OverlapMode::automatic:
      return "auto";
  }
  return "?";
}

bool comm_thread_allowed() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized == 0) return true;
  int level = MPI_THREAD_SINGLE;
  MPI_Query_thread(&level);
  return level >= MPI_THREAD_SERIALIZED;
}

int choose_chunks(double comm_seconds, double compute_seconds, double round_seconds,
                  double rows_per_expert) {
  const double hidden = std::min(comm_seconds, compute_seconds);
  const double packing = rows_per_expert > 0 ? compute_seconds * kPackingRows / rows_per_expert : 0;
  const double per_chunk = kRoundsPerChunk * std::max(round_seconds, 1e-6) + packing;
  const double best = std::sqrt(std::max(hidden, 0.0) / per_chunk);
  const double gemm_bound = std::floor(rows_per_expert / kMinRowsPerExpertCall);
  return std::clamp(static_cast<int>(std::lround(std::min(best, gemm_bound))), 1, kMaxChunks);
}

int64_t chunk_begin(int64_t tokens, int chunks, int c) {
  if (chunks < 3) return tokens * c / chunks;
  // Weights 1, 2, ..., 2, 1: the prefix sum before chunk c, out of 2 (chunks - 1).
  const int64_t before = c == 0 ? 0 : c == chunks ? 2 * (chunks - 1) : 2 * c - 1;
  return tokens * before / (2 * (chunks - 1));
}

OverlapController::OverlapController(const OverlapOptions& options, bool thread_allowed)
    : options_(options) {
  options_.validate();
  const int fixed = options_.chunks > 0 ? options_.chunks : 1;
  switch (options_.mode) {
    case OverlapMode::off:
      schedule_ = {false, fixed};
      settled_ = true;
      decision_ = fmt::format("off, {} chunk(s)", fixed);
      return;
    case OverlapMode::on:
      SY_ENFORCE(thread_allowed, ErrorCode::unsupported,
                 "overlap on needs a communication thread, but MPI was initialised below "
                 "MPI_THREAD_SERIALIZED: initialise it with MPI_Init_thread(..., "
                 "MPI_THREAD_SERIALIZED, ...), or use overlap off or auto");
      // With chunks to choose, the first step runs serially to measure.
      schedule_ = {options_.chunks > 0, fixed};
      settled_ = options_.chunks > 0;
      if (settled_) decision_ = fmt::format("on, {} chunks", fixed);
      return;
    case OverlapMode::automatic:
      schedule_ = {false, 1};
      settled_ = !thread_allowed;
      if (settled_) decision_ = "auto: off (MPI initialised below MPI_THREAD_SERIALIZED)";
      return;
  }
}

void OverlapController::end_step(comm::Communicator& comm, const StepTiming& step) {
  if (settled_) return;
  ++steps_;
  if (!step.pipelined) {
    if (best_serial_ == 0 || step.seconds < best_serial_) {
      best_serial_ = step.seconds;
      serial_probe_ = step;
    }
  } else if (best_pipelined_ == 0 || step.seconds < best_pipelined_) {
    best_pipelined_ = step.seconds;
  }
  const int serial_steps = options_.mode == OverlapMode::on ? 1 : kProbeSteps;
  if (steps_ == serial_steps) {
    const auto mean = mean_over_ranks(
        comm, {serial_probe_.comm_seconds, serial_probe_.compute_seconds,
               serial_probe_.rounds > 0 ? serial_probe_.round_seconds / serial_probe_.rounds : 0,
               serial_probe_.rows_per_expert});
    const int chosen =
        options_.chunks > 0 ? options_.chunks : choose_chunks(mean[0], mean[1], mean[2], mean[3]);
    schedule_ = {true, static_cast<int>(rank0_value(comm, chosen))};
    decision_ = fmt::format(
        "{}: {} chunk{} (serial step: comm {:.1f} ms, compute {:.1f} ms, "
        "round {:.3f} ms, {:.0f} rows per expert)",
        overlap_mode_name(options_.mode), schedule_.chunks, schedule_.chunks == 1 ? "" : "s",
        mean[0] * 1e3, mean[1] * 1e3, mean[2] * 1e3, mean[3]);
    settled_ = options_.mode == OverlapMode::on;
    return;
  }
  if (steps_ == serial_steps + kProbeSteps) {
    const auto mean = mean_over_ranks(comm, {best_serial_, best_pipelined_});
    const bool on = rank0_value(comm, mean[1] < (1 - kRequiredGain) * mean[0] ? 1 : 0) != 0;
    if (!on) schedule_ = {false, 1};
    decision_ += fmt::format("; pipelined step {:.1f} ms vs serial {:.1f} ms: {}", mean[1] * 1e3,
                             mean[0] * 1e3, on ? "on" : "off");
    settled_ = true;
  }
}

}  // namespace switchyard
