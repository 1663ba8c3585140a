// Ranks that disagree, or one rank whose call fails its own checks: the call fails on every rank,
// naming the rank and the cause, no rank runs ahead, and the layer stays usable with its state
// exactly as before. On 1 rank the same calls must simply succeed or fail locally.
#include <gtest/gtest.h>
#include <mpi.h>

#include <functional>
#include <string>
#include <vector>

#include "base/error.h"
#include "comm/communicator.h"
#include "runtime/agreement.h"
#include "runtime/moe_layer.h"
#include "tests/runtime/layer_test_util.h"

namespace sy = switchyard;
using sy::testing::random_values;

namespace {

sy::MoeConfig config() {
  sy::MoeConfig c;
  c.hidden = 8;
  c.num_experts = 4;
  c.num_shared = 1;
  c.top_k = 2;
  c.intermediate = 6;
  return c;
}

// Runs call on every rank and expects CollectiveFailure everywhere when the world has more than
// one rank, with every `needles` in its message; returns the message.
std::string expect_collective_failure(const std::function<void()>& call,
                                      const std::vector<std::string>& needles) {
  try {
    call();
  } catch (const sy::CollectiveFailure& e) {
    for (const auto& needle : needles) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
          << "missing '" << needle << "' in: " << e.what();
    }
    return e.what();
  }
  ADD_FAILURE() << "the call succeeded";
  return "";
}

std::vector<std::vector<double>> snapshot(sy::MoeParams<double>& params) {
  std::vector<std::vector<double>> out;
  for (auto t : params.tensors()) out.emplace_back(t.begin(), t.end());
  return out;
}

// One forward and backward on fixed data: what a usable layer computes.
std::vector<double> step(sy::MoeLayer<double>& layer, int rank) {
  const int64_t H = layer.config().hidden, tokens = 5 + rank;
  const auto x = random_values<double>(tokens * H, 40 + rank);
  const auto gy = random_values<double>(tokens * H, 50 + rank);
  std::vector<double> y(tokens * H), gx(tokens * H);
  auto fwd = layer.forward(x.data(), tokens, H, y.data());
  layer.backward(*fwd.saved, gy.data(), gx.data());
  y.insert(y.end(), gx.begin(), gx.end());
  return y;
}

struct FieldCase {
  const char* field;
  std::function<void(sy::MoeConfig&)> change;
};

// Every field that corrupted memory or ran silently when one rank differed.
TEST(CollectiveErrors, CreationWithADifferentConfigFailsOnEveryRankNamingTheField) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  const int world = comm.size(), last = world - 1;
  const std::vector<FieldCase> cases = {
      {"MoeConfig.hidden", [](sy::MoeConfig& c) { c.hidden = 16; }},
      {"MoeConfig.intermediate", [](sy::MoeConfig& c) { c.intermediate = 10; }},
      {"MoeConfig.num_shared", [](sy::MoeConfig& c) { c.num_shared = 2; }},
      {"MoeConfig.top_k", [](sy::MoeConfig& c) { c.top_k = 1; }},
      {"MoeConfig.wire", [](sy::MoeConfig& c) { c.wire = sy::WirePrecision::bf16; }},
      {"MoeConfig.scoring", [](sy::MoeConfig& c) { c.scoring = sy::kernels::ScoreFunc::sigmoid; }},
      {"MoeConfig.routed_scaling_factor",
       [](sy::MoeConfig& c) { c.routed_scaling_factor = 1.0 + 1e-15; }},
  };
  for (const auto& fc : cases) {
    SCOPED_TRACE(fc.field);
    sy::MoeConfig c = config();
    if (comm.rank() == last) fc.change(c);
    auto create = [&] {
      sy::MoeLayer<double> layer(c, comm,
                                 sy::planner::ExpertPlacement::contiguous(4, comm.size()));
    };
    if (world == 1) {
      EXPECT_NO_THROW(create());
      continue;
    }
    expect_collective_failure(create, {fc.field, "rank " + std::to_string(last),
                                       "disagree", "same MoeConfig"});
  }
  // Nothing is left half-matched: a layer all ranks agree on works.
  sy::MoeLayer<double> layer(config(), comm, sy::planner::ExpertPlacement::contiguous(4, world));
  sy::init_params(layer.params(), 1);
  EXPECT_EQ(step(layer, comm.rank()).size(), size_t(2 * (5 + comm.rank()) * 8));
}

TEST(CollectiveErrors, AnInvalidConfigOnOneRankFailsCreationOnEveryRank) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  const int last = comm.size() - 1;
  sy::MoeConfig c = config();
  if (comm.rank() == last) c.top_k = 0;
  const std::string message = expect_collective_failure(
      [&] {
        sy::MoeLayer<double> layer(c, comm,
                                   sy::planner::ExpertPlacement::contiguous(4, comm.size()));
      },
      {"rank " + std::to_string(last) + ": MoeConfig.top_k"});
  EXPECT_NE(message.find("1 of " + std::to_string(comm.size()) + " ranks"), std::string::npos)
      << message;
}

TEST(CollectiveErrors, CreationWithADifferentPlacementNamesTheExperts) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  const int world = comm.size();
  if (world < 2) GTEST_SKIP() << "needs two ranks to disagree";
  auto placement = sy::planner::ExpertPlacement::contiguous(4, world);
  if (comm.rank() == world - 1) {
    std::vector<int> owner = placement.owners();
    std::swap(owner[0], owner[3]);
    placement = sy::planner::ExpertPlacement(owner, world);
  }
  expect_collective_failure(
      [&] { sy::MoeLayer<double> layer(config(), comm, placement); },
      {"placement: devices of expert 0", "placement: devices of expert 3"});
}

TEST(CollectiveErrors, ADifferentBackendOnOneRankIsNamed) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  const int world = comm.size();
  if (world < 2) GTEST_SKIP() << "needs two ranks to disagree";
  sy::LayerOptions options;
  options.backend.compute = comm.rank() == world - 1 ? sy::kernels::ComputePrecision::bf16
                                                     : sy::kernels::ComputePrecision::native;
  // fp64 cannot compute in bf16: that rank fails its own check, and every rank hears it.
  expect_collective_failure(
      [&] {
        sy::MoeLayer<double> layer(config(), comm, sy::planner::ExpertPlacement::contiguous(4, world),
                                   options);
      },
      {"rank " + std::to_string(world - 1)});
}

// Every check a forward makes on its own rank, failing on the last rank only.
TEST(CollectiveErrors, AForwardFailingOnOneRankFailsOnEveryRankAndChangesNothing) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  const int rank = comm.rank(), last = comm.size() - 1;
  sy::MoeLayer<double> layer(config(), comm,
                             sy::planner::ExpertPlacement::contiguous(4, comm.size()));
  sy::init_params(layer.params(), 7);
  const auto before = snapshot(layer.params());
  const auto reference = step(layer, rank);
  layer.grads().zero();

  const int64_t H = 8, tokens = 4;
  const auto x = random_values<double>(tokens * H, 90 + rank);
  std::vector<double> y(tokens * H);
  struct BadCall {
    const char* needle;
    std::function<void()> call;
  };
  const std::vector<BadCall> bad = {
      {"hidden size 7", [&] { layer.forward(x.data(), tokens, rank == last ? 7 : H, y.data()); }},
      {"token count", [&] { layer.forward(x.data(), rank == last ? -3 : tokens, H, y.data()); }},
      {"token count",
       [&] {
         layer.forward(x.data(), rank == last ? sy::MoeLayer<double>::kMaxTokensPerCall + 1 : tokens,
                       H, y.data());
       }},
      {"non-null", [&] { layer.forward(rank == last ? nullptr : x.data(), tokens, H, y.data()); }},
  };
  for (const auto& b : bad) {
    SCOPED_TRACE(b.needle);
    expect_collective_failure(b.call, {"rank " + std::to_string(last) + ": forward", b.needle,
                                       "forward failed on 1 of"});
  }
  EXPECT_EQ(snapshot(layer.params()), before);
  // Still usable, and no rank is a call ahead: the same step gives the same bits.
  EXPECT_EQ(step(layer, rank), reference);
}

TEST(CollectiveErrors, ABackwardFailingOnOneRankFailsOnEveryRankAndAddsNoGradient) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  const int rank = comm.rank(), last = comm.size() - 1;
  sy::MoeLayer<double> layer(config(), comm,
                             sy::planner::ExpertPlacement::contiguous(4, comm.size()));
  sy::init_params(layer.params(), 8);
  const int64_t H = 8, tokens = 3 + rank;
  const auto x = random_values<double>(tokens * H, 60 + rank);
  const auto gy = random_values<double>(tokens * H, 70 + rank);
  std::vector<double> y(tokens * H), gx(tokens * H);
  auto fwd = layer.forward(x.data(), tokens, H, y.data());
  sy::LocalStatus refused;
  if (rank == last) {
    refused.capture([] { sy::require(false, "the caller's check failed"); });
  }
  expect_collective_failure(
      [&] { layer.backward(*fwd.saved, gy.data(), gx.data(), refused); },
      {"rank " + std::to_string(last) + ": the caller's check failed"});
  expect_collective_failure(
      [&] { layer.backward(*fwd.saved, rank == last ? nullptr : gy.data(), gx.data()); },
      {"rank " + std::to_string(last) + ": backward: grad_y"});
  for (auto t : layer.grads().tensors()) {
    for (double v : t) ASSERT_EQ(v, 0.0) << "a refused backward added a gradient";
  }
  // The saved state is intact: its backward runs once all ranks agree.
  layer.backward(*fwd.saved, gy.data(), gx.data());
  double norm = 0;
  for (auto t : layer.grads().tensors()) {
    for (double v : t) norm += v * v;
  }
  EXPECT_GT(norm, 0.0);
}

TEST(CollectiveErrors, APlacementChangeTheRanksDisagreeOnMovesNothing) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  const int world = comm.size(), rank = comm.rank();
  const auto start = sy::planner::ExpertPlacement::contiguous(4, world);
  sy::MoeLayer<double> layer(config(), comm, start);
  sy::init_params(layer.params(), 9);
  const auto before = snapshot(layer.params());
  // Everyone moves expert 0 to the last rank; the last rank alone also moves expert 1 there.
  std::vector<int> owner = start.owners();
  owner[0] = world - 1;
  if (rank == world - 1 && world > 1) owner[1] = world - 1;
  const sy::planner::ExpertPlacement next(owner, world);
  if (world > 1 && start.owner(1) != world - 1) {
    expect_collective_failure([&] { layer.apply_placement(next); },
                              {"apply_placement", "placement: devices of expert 1",
                               "rank " + std::to_string(world - 1)});
    EXPECT_EQ(layer.placement(), start);
    EXPECT_EQ(snapshot(layer.params()), before);
  }
  // A placement one rank could not read fails everywhere too.
  sy::LocalStatus unreadable;
  if (rank == 0) unreadable.capture([] { sy::require(false, "phy2log names expert 9"); });
  expect_collective_failure([&] { layer.apply_placement(start, {}, unreadable); },
                            {"rank 0: phy2log names expert 9"});
  EXPECT_EQ(layer.placement(), start);
  // An agreed change goes through.
  std::vector<int> agreed = start.owners();
  agreed[0] = world - 1;
  const sy::planner::ExpertPlacement moved(agreed, world);
  layer.apply_placement(moved);
  EXPECT_EQ(layer.placement(), moved);
}

}  // namespace
