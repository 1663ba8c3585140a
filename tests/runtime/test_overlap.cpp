// Communication/compute overlap: a pipelined layer computes what the serial one does (forward
// bit-identical at the same chunk count, gradients within tolerance of the unchunked layer), on
// uneven and empty chunks, skewed routing, replicated experts and more chunks than tokens; the
// automatic mode's decisions agree on every rank; a step that fails half-way through stops its
// communication thread and reports a clear error on every rank.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"
#include "comm/communicator.h"
#include "comm/error.h"
#include "runtime/fault_injection.h"
#include "runtime/moe_layer.h"
#include "tests/runtime/layer_test_util.h"
#include "tests/runtime/test_placements.h"
#include "tests/runtime/thread_priority_test_util.h"

namespace sy = switchyard;

namespace {

using sy::testing::random_values;
using sy::testing::rel_error;
using sy::testing::tolerance;

sy::MoeConfig config() {
  sy::MoeConfig c;
  c.hidden = 16;
  c.num_experts = 8;
  c.num_shared = 1;
  c.top_k = 3;
  c.intermediate = 12;
  c.aux_expert_alpha = 0.1;
  c.z_loss_alpha = 0.01;
  return c;
}

// Uneven tokens per rank; rank 1 holds none (its chunks are all empty).
int64_t tokens_of(int rank, int world) {
  const int64_t pattern[] = {11, 0, 23, 5};
  return world == 1 ? 17 : pattern[rank % 4];
}

// config() with bf16 rows on the wire: each token is rounded the same way whatever its chunk.
sy::MoeConfig bf16_config() {
  sy::MoeConfig c = config();
  c.wire = sy::WirePrecision::bf16;
  return c;
}

struct Workload {
  sy::MoeConfig config = ::config();
  bool replicated = false;
  bool skewed = false;  // one expert wins most tokens (a bias on its score)
};

template <typename T>
struct StepResult {
  std::vector<T> y, grad_x;
  std::vector<std::vector<T>> grads;  // every gradient tensor of the layer
};

// Runs `steps` forward + backward steps of a fresh layer with these overlap options and returns
// the last step's output, input gradient and accumulated parameter gradients.
template <typename T>
StepResult<T> run(sy::comm::Communicator& comm, const Workload& setup,
                  const sy::OverlapOptions& overlap, int steps = 1) {
  const int world = comm.size(), rank = comm.rank();
  const auto placement =
      setup.replicated ? sy::testing::hot_experts_everywhere(setup.config.num_experts, world)
                       : sy::planner::ExpertPlacement::contiguous(setup.config.num_experts, world);
  sy::MoeConfig c = setup.config;
  c.selection_bias = setup.skewed;
  sy::MoeLayer<T> layer(c, comm, placement, "flat", overlap);
  sy::init_params(layer.params(), 5);
  if (setup.skewed) layer.selection_bias()[c.num_experts - 1] = T(0.8);
  const int64_t H = c.hidden, tokens = tokens_of(rank, world);
  StepResult<T> r;
  for (int step = 0; step < steps; ++step) {
    const auto x = random_values<T>(tokens * H, 100 + 7 * rank + step);
    const auto grad_y = random_values<T>(tokens * H, 200 + 7 * rank + step);
    r.y.assign(tokens * H, T(0));
    r.grad_x.assign(tokens * H, T(0));
    auto fwd = layer.forward(x.data(), tokens, H, r.y.data());
    layer.backward(*fwd.saved, grad_y.data(), r.grad_x.data());
  }
  for (auto t : layer.grads().tensors()) r.grads.emplace_back(t.begin(), t.end());
  return r;
}

template <typename T>
class Overlap : public ::testing::Test {};
using Precisions = ::testing::Types<float, double>;
TYPED_TEST_SUITE(Overlap, Precisions);

// At the same chunk count the pipelined step does the serial step's arithmetic: the forward
// output is bit-identical, the gradients agree (the issue asks for tolerance; they match too).
TYPED_TEST(Overlap, OnEqualsOffAtTheSameChunkCount) {
  using T = TypeParam;
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  for (const Workload& setup : {Workload{}, Workload{config(), true, false},
                                Workload{config(), false, true}, Workload{bf16_config()}}) {
    // 40 chunks exceed every rank's token count: most chunks are empty somewhere.
    for (int chunks : {1, 3, 7, 40}) {
      const auto off = run<T>(comm, setup, {sy::OverlapMode::off, chunks});
      const auto on = run<T>(comm, setup, {sy::OverlapMode::on, chunks});
      const std::string what = "chunks " + std::to_string(chunks) +
                               (setup.replicated ? ", replicated" : "") +
                               (setup.skewed ? ", skewed" : "") +
                               (setup.config.wire == sy::WirePrecision::bf16 ? ", bf16 wire" : "");
      ASSERT_EQ(on.y.size(), off.y.size());
      EXPECT_TRUE(on.y.empty() ||
                  std::memcmp(on.y.data(), off.y.data(), on.y.size() * sizeof(T)) == 0)
          << "forward output not bit-identical, " << what;
      EXPECT_LE(rel_error<T>(on.grad_x, off.grad_x), tolerance<T>()) << "grad x, " << what;
      for (size_t i = 0; i < on.grads.size(); ++i) {
        EXPECT_LE(rel_error<T>(on.grads[i], off.grads[i]), tolerance<T>())
            << "gradient tensor " << i << ", " << what;
      }
    }
  }
}

// Against the unchunked serial layer (what overlap off computes by default), a pipelined step in
// any number of chunks stays within the precision's tolerance, over several steps.
TYPED_TEST(Overlap, PipelinedMatchesTheUnchunkedLayer) {
  using T = TypeParam;
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  for (const Workload& setup : {Workload{}, Workload{config(), true, true}}) {
    const auto base = run<T>(comm, setup, {sy::OverlapMode::off, 1}, 2);
    for (int chunks : {2, 5, 64}) {
      const auto on = run<T>(comm, setup, {sy::OverlapMode::on, chunks}, 2);
      EXPECT_LE(rel_error<T>(on.y, base.y), tolerance<T>()) << "y, chunks " << chunks;
      EXPECT_LE(rel_error<T>(on.grad_x, base.grad_x), tolerance<T>()) << "grad x, " << chunks;
      for (size_t i = 0; i < on.grads.size(); ++i) {
        EXPECT_LE(rel_error<T>(on.grads[i], base.grads[i]), tolerance<T>())
            << "gradient tensor " << i << ", chunks " << chunks;
      }
    }
  }
}

// Automatic mode probes serial and pipelined steps, then settles; whatever it picks, results stay
// within tolerance of the serial layer and every rank runs the same schedule.
TEST(OverlapAuto, SettlesToTheSameScheduleOnEveryRank) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  const Workload setup;
  const auto base = run<double>(comm, setup, {sy::OverlapMode::off, 1}, 6);
  const auto automatic = run<double>(comm, setup, {sy::OverlapMode::automatic, 0}, 6);
  EXPECT_LE(rel_error<double>(automatic.y, base.y), 1e-12);
  EXPECT_LE(rel_error<double>(automatic.grad_x, base.grad_x), 1e-12);
  for (size_t i = 0; i < base.grads.size(); ++i) {
    EXPECT_LE(rel_error<double>(automatic.grads[i], base.grads[i]), 1e-12) << "tensor " << i;
  }

  const auto placement = sy::planner::ExpertPlacement::contiguous(8, comm.size());
  sy::MoeLayer<double> layer(config(), comm, placement, "flat", {sy::OverlapMode::automatic, 0});
  sy::init_params(layer.params(), 5);
  const int64_t H = 16, tokens = tokens_of(comm.rank(), comm.size());
  std::vector<double> x(tokens * H, 0.25), y(tokens * H), g(tokens * H, 1.0), gx(tokens * H);
  for (int step = 0; step < 5; ++step) {
    auto fwd = layer.forward(x.data(), tokens, H, y.data());
    layer.backward(*fwd.saved, g.data(), gx.data());
  }
  EXPECT_NE(layer.overlap_decision().find("chunk"), std::string::npos) << layer.overlap_decision();
  EXPECT_NE(layer.overlap_decision().find("pipelined step"), std::string::npos)
      << layer.overlap_decision();
  // Every rank settled on rank 0's choice: same chunk count and mode everywhere.
  auto fwd = layer.forward(x.data(), tokens, H, y.data());
  int64_t mine[2] = {static_cast<int64_t>(fwd.saved->chunks.size()),
                     layer.overlap_schedule().pipelined ? 1 : 0};
  int64_t low[2], high[2];
  MPI_Allreduce(mine, low, 2, MPI_INT64_T, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(mine, high, 2, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  EXPECT_EQ(low[0], high[0]);
  EXPECT_EQ(low[1], high[1]);
}

// The chunk count trades exchange rounds and weight packing against hidden time, and is bounded by
// the rows each expert's GEMM keeps per chunk.
TEST(OverlapChunks, ChosenFromTimesRoundsPackingAndRowsPerExpert) {
  // sqrt(0.2 s / (5 rounds * 0.1 ms + 0.3 s * 14 / 100000 rows)) = 20 chunks by time, capped at 16.
  EXPECT_EQ(sy::choose_chunks(0.2, 0.3, 1e-4, 100000), 16);
  // Packing: sqrt(0.2 / (5e-4 + 0.3 * 14 / 1000)) = 6.5 -> 7 (1000 rows would allow 20).
  EXPECT_EQ(sy::choose_chunks(0.2, 0.3, 1e-4, 1000), 7);
  // Without packing it would be 24, but 96 rows per expert allow 2 calls of 48.
  EXPECT_EQ(sy::choose_chunks(0.3, 0.2, 1e-4, 96), 2);
  // Slow rounds: sqrt(0.02 / (5 * 1e-3 + 0.5 * 14 / 1e6)) = 2.
  EXPECT_EQ(sy::choose_chunks(0.02, 0.5, 1e-3, 1e6), 2);
  // One node: the all-to-all (with its waits) 85 ms of a 372 ms compute step, 96 rows per expert:
  // sqrt(0.085 / (5 * 0.39 ms + 0.372 * 14 / 96)) = 1.2 -> one chunk.
  EXPECT_EQ(sy::choose_chunks(0.085, 0.372, 3.9e-4, 96), 1);
  // Too few rows to split: one chunk (pipelining then still overlaps the shared experts).
  EXPECT_EQ(sy::choose_chunks(0.2, 0.3, 1e-4, 30), 1);
}

// Chunks cover the tokens in order, without gaps; of three or more, the first and last (the
// pipeline's fill and drain) hold half as many tokens as the others.
TEST(OverlapChunks, BoundariesHalveTheFirstAndLastChunk) {
  auto bounds = [](int64_t tokens, int chunks) {
    std::vector<int64_t> b;
    for (int c = 0; c <= chunks; ++c) b.push_back(sy::chunk_begin(tokens, chunks, c));
    return b;
  };
  EXPECT_EQ(bounds(100, 1), (std::vector<int64_t>{0, 100}));
  EXPECT_EQ(bounds(101, 2), (std::vector<int64_t>{0, 50, 101}));
  EXPECT_EQ(bounds(1024, 3), (std::vector<int64_t>{0, 256, 768, 1024}));
  EXPECT_EQ(bounds(600, 4), (std::vector<int64_t>{0, 100, 300, 500, 600}));
  // Fewer tokens than chunks: empty chunks, still in order and complete.
  EXPECT_EQ(bounds(2, 5), (std::vector<int64_t>{0, 0, 0, 1, 1, 2}));
  EXPECT_EQ(bounds(0, 3), (std::vector<int64_t>{0, 0, 0, 0}));
}

TEST(OverlapOptions, BadValuesAreRejectedNamingTheField) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  const auto placement = sy::planner::ExpertPlacement::contiguous(8, comm.size());
  try {
    sy::MoeLayer<float> layer(config(), comm, placement, "flat", {sy::OverlapMode::on, -2});
    ADD_FAILURE() << "chunks = -2 accepted";
  } catch (const sy::Error& e) {
    EXPECT_NE(std::string(e.what()).find("chunks"), std::string::npos) << e.what();
  }
  EXPECT_THROW(sy::parse_overlap_mode("sometimes"), sy::Error);
  EXPECT_EQ(sy::parse_overlap_chunks("auto"), 0);
  EXPECT_EQ(sy::parse_overlap_chunks("6"), 6);
  for (const char* bad : {"0", "-3", "4x", "many", ""}) {
    EXPECT_THROW(sy::parse_overlap_chunks(bad), sy::Error) << bad;
  }
  EXPECT_EQ(sy::parse_overlap_mode("auto"), sy::OverlapMode::automatic);
}

// SWITCHYARD_COMM_THREAD_PRIORITY=realtime changes when the thread runs, not what it moves; a
// value that means nothing is refused when the layer is made, naming the variable.
TEST(OverlapCommThreadPriority, RealtimeComputesWhatNormalDoesAndBadValuesAreRefused) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  const auto placement = sy::planner::ExpertPlacement::contiguous(8, comm.size());
  {
    sy::testing::ScopedCommThreadPriority env("often");
    try {
      sy::MoeLayer<float> layer(config(), comm, placement, "flat", {sy::OverlapMode::on, 3});
      ADD_FAILURE() << "SWITCHYARD_COMM_THREAD_PRIORITY=often accepted";
    } catch (const sy::Error& e) {
      EXPECT_EQ(e.code(), sy::ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find("SWITCHYARD_COMM_THREAD_PRIORITY"), std::string::npos)
          << e.what();
    }
  }
  if (!sy::testing::realtime_priority_permitted()) {
    GTEST_SKIP() << "needs root or an RLIMIT_RTPRIO of at least 1";
  }
  const Workload setup{config(), false, true};
  const auto normal = run<double>(comm, setup, {sy::OverlapMode::on, 3}, 2);
  sy::testing::ScopedCommThreadPriority env("realtime");
  const auto realtime = run<double>(comm, setup, {sy::OverlapMode::on, 3}, 2);
  EXPECT_TRUE(normal.y.empty() || std::memcmp(realtime.y.data(), normal.y.data(),
                                              normal.y.size() * sizeof(double)) == 0);
  EXPECT_EQ(realtime.grad_x, normal.grad_x);
  EXPECT_EQ(realtime.grads, normal.grads);
  sy::MoeLayer<float> layer(config(), comm, placement, "flat", {sy::OverlapMode::on, 3});
  EXPECT_EQ(layer.comm_thread_priority(), sy::ThreadPriority::realtime);
}

// A real-time thread that the system would refuse is refused when the layer is made (or its
// overlap switched on), not steps later in the middle of training; a layer that never starts
// the thread does not ask.
TEST(OverlapCommThreadPriority, ARefusalComesWhenTheLayerIsMadeAndChangesNothing) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  const auto placement = sy::planner::ExpertPlacement::contiguous(8, comm.size());
  sy::testing::ScopedCommThreadPriority env("realtime");
  sy::testing::ScopedNoRealtimePrivilege no_privilege;
  for (sy::OverlapMode mode : {sy::OverlapMode::on, sy::OverlapMode::automatic}) {
    try {
      sy::MoeLayer<float> layer(config(), comm, placement, "flat", {mode, 3});
      ADD_FAILURE() << sy::overlap_mode_name(mode) << ": made without the privilege";
    } catch (const sy::Error& e) {
      EXPECT_EQ(e.code(), sy::ErrorCode::unsupported);
      EXPECT_NE(std::string(e.what()).find("CAP_SYS_NICE"), std::string::npos) << e.what();
    }
  }
  sy::MoeLayer<float> serial(config(), comm, placement, "flat", {sy::OverlapMode::off, 1});
  const std::string before = serial.overlap_decision();
  EXPECT_THROW(serial.set_overlap({sy::OverlapMode::on, 3}), sy::Error);
  EXPECT_EQ(serial.overlap_decision(), before);
  EXPECT_FALSE(serial.overlap_schedule().pipelined);
}

// Rank 0 fails in the middle of a pipelined forward while later chunks are still in flight: an
// error is injected (SWITCHYARD_FAULT's test hook) when its experts start on the first chunk. Its
// communication thread is interrupted and the error is the one that happened; the other ranks'
// waits on rank 0 time out and name it. Nothing hangs, nothing leaks (the ASan run of CI), the
// failed call leaves every rank's weights as they were, and the layer refuses later calls.
TEST(OverlapShutdown, FailureMidStepIsReportedOnEveryRankAndChangesNoWeights) {
  int world = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (world < 2) GTEST_SKIP() << "needs a peer to wait for the failing rank";
  sy::comm::CommOptions options;
  options.timeout = std::chrono::milliseconds(1500);
  sy::comm::Communicator comm(MPI_COMM_WORLD, options);
  const sy::MoeConfig c = config();
  const auto placement = sy::planner::ExpertPlacement::contiguous(c.num_experts, world);
  sy::MoeLayer<double> layer(c, comm, placement, "flat", {sy::OverlapMode::on, 4});
  sy::set_fault("0:experts:error");
  sy::init_params(layer.params(), 5);
  std::vector<std::vector<double>> before;
  for (auto t : layer.params().tensors()) before.emplace_back(t.begin(), t.end());

  const int64_t H = c.hidden, tokens = rank == 0 ? 0 : 24;
  const auto x = random_values<double>(tokens * H, 300 + rank);
  std::vector<double> y(tokens * H);
  std::string message;
  try {
    layer.forward(x.data(), tokens, H, y.data());
    ADD_FAILURE() << "a step with disagreeing placements completed";
  } catch (const sy::Error& e) {
    // Rank 0 fails its own step (internal); the others time out waiting for it.
    message = e.what();
    EXPECT_EQ(e.code(), rank == 0 ? sy::ErrorCode::internal : sy::ErrorCode::timeout) << message;
  }
  sy::set_fault("");
  if (rank == 0) {
    EXPECT_NE(message.find("error injected on rank 0"), std::string::npos) << message;
  } else {
    EXPECT_NE(message.find("rank(s) 0"), std::string::npos) << message;
  }
  size_t i = 0;
  for (auto t : layer.params().tensors()) {
    EXPECT_TRUE(std::equal(t.begin(), t.end(), before[i].begin())) << "tensor " << i;
    ++i;
  }
  try {
    layer.forward(x.data(), tokens, H, y.data());
    ADD_FAILURE() << "a layer whose call failed half-way accepted another";
  } catch (const sy::Error& e) {
    EXPECT_EQ(e.code(), sy::ErrorCode::aborted) << e.what();
    EXPECT_NE(std::string(e.what()).find("failed half-way"), std::string::npos) << e.what();
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace
