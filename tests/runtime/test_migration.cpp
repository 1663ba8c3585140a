// Re-placing experts while training: migration moves weights and optimizer state exactly, training
// with replicas and migrations follows the same loss trajectory as training on one fixed placement
// (fp64), and the replicas of an expert stay bit-identical after every step.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "base/error.h"
#include "comm/communicator.h"
#include "runtime/adam.h"
#include "runtime/moe_layer.h"
#include "tests/runtime/test_placements.h"

namespace sy = switchyard;

namespace {

sy::MoeConfig config() {
  sy::MoeConfig c;
  c.hidden = 12;
  c.num_experts = 6;
  c.num_shared = 1;
  c.top_k = 2;
  c.intermediate = 8;
  c.aux_expert_alpha = 0.01;
  return c;
}

// The experts in reverse contiguous order, expert 2 also on rank 0: the second placement the
// training test moves through (the first is the hot experts replicated everywhere).
sy::planner::ExpertPlacement reversed(int experts, int world) {
  std::vector<std::vector<int>> replicas(experts);
  const auto base = sy::planner::ExpertPlacement::contiguous(experts, world);
  for (int e = 0; e < experts; ++e) replicas[e] = {world - 1 - base.owner(e)};
  if (world > 1 && replicas[2].front() != 0) replicas[2].push_back(0);
  return sy::planner::ExpertPlacement(replicas, world);
}

uint64_t fnv1a(const void* data, size_t bytes, uint64_t h = 1469598103934665603ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// Every holder of an expert has the same bytes: (expert, hash) pairs gathered on every rank.
void expect_replicas_identical(sy::comm::Communicator& comm, sy::MoeParams<double>& params,
                               int experts, int step) {
  std::vector<uint64_t> mine(experts, 0), lowest(experts, 0);
  for (size_t i = 0; i < params.expert_ids.size(); ++i) {
    uint64_t h = 0;
    for (auto* t :
         {&params.experts[i].gate_proj, &params.experts[i].up_proj, &params.experts[i].down_proj}) {
      h = fnv1a(t->data(), t->size() * sizeof(double), h == 0 ? 1469598103934665603ull : h);
    }
    mine[params.expert_ids[i]] = h;
  }
  std::vector<uint64_t> all(experts * comm.size());
  MPI_Allgather(mine.data(), experts, MPI_UINT64_T, all.data(), experts, MPI_UINT64_T,
                MPI_COMM_WORLD);
  for (int e = 0; e < experts; ++e) {
    uint64_t seen = 0;
    for (int r = 0; r < comm.size(); ++r) {
      const uint64_t h = all[r * experts + e];
      if (h == 0) continue;
      if (seen == 0) seen = h;
      EXPECT_EQ(h, seen) << "expert " << e << " differs on rank " << r << " after step " << step;
    }
  }
}

TEST(Migration, MovesWeightsAndCompanionStateExactly) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  const auto c = config();
  sy::MoeLayer<double> layer(c, comm, sy::planner::ExpertPlacement::contiguous(6, comm.size()));
  sy::init_params(layer.params(), 5);
  sy::MoeParams<double> companion(c, layer.params().expert_ids);
  sy::init_params(companion, 6);

  const auto next = reversed(6, comm.size());
  layer.apply_placement(next, {&companion});
  EXPECT_EQ(layer.params().expert_ids, next.experts_of(comm.rank()));
  EXPECT_EQ(companion.expert_ids, next.experts_of(comm.rank()));
  sy::MoeParams<double> want(c, next.experts_of(comm.rank())), want_companion = want;
  sy::init_params(want, 5);
  sy::init_params(want_companion, 6);
  auto got = layer.params().tensors(), expected = want.tensors();
  auto got_c = companion.tensors(), expected_c = want_companion.tensors();
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(std::equal(got[i].begin(), got[i].end(), expected[i].begin())) << "tensor " << i;
    EXPECT_TRUE(std::equal(got_c[i].begin(), got_c[i].end(), expected_c[i].begin()))
        << "companion tensor " << i;
  }
  for (auto t : layer.grads().tensors()) {
    EXPECT_TRUE(std::all_of(t.begin(), t.end(), [](double v) { return v == 0; }));
  }
}

TEST(Migration, RejectsAPlacementOfAnotherShapeWithoutChangingAnything) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  sy::MoeLayer<double> layer(config(), comm,
                             sy::planner::ExpertPlacement::contiguous(6, comm.size()));
  const auto before = layer.params().expert_ids;
  EXPECT_THROW(layer.apply_placement(sy::planner::ExpertPlacement::contiguous(5, comm.size())),
               sy::Error);
  EXPECT_EQ(layer.params().expert_ids, before);
}

TEST(Migration, TrainingWithReplicasAndMigrationFollowsTheFixedPlacementTrajectory) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  const auto c = config();
  const int world = comm.size();
  const auto start = sy::planner::ExpertPlacement::contiguous(6, world);
  sy::MoeLayer<double> fixed(c, comm, start), moving(c, comm, start);
  sy::init_params(fixed.params(), 9);
  sy::init_params(moving.params(), 9);
  sy::MoeAdam<double> fixed_adam({.lr = 0.01}, c, fixed.params().expert_ids);
  sy::MoeAdam<double> moving_adam({.lr = 0.01}, c, moving.params().expert_ids);

  const int64_t tokens = 5 + comm.rank() % 3;
  std::vector<double> x(tokens * c.hidden), y_fixed(x.size()), y_moving(x.size()), grad(x.size()),
      grad_x(x.size());
  for (int step = 1; step <= 6; ++step) {
    if (step == 3)
      moving.apply_placement(sy::testing::hot_experts_everywhere(6, world), moving_adam.state());
    if (step == 5) moving.apply_placement(reversed(6, world), moving_adam.state());
    std::mt19937_64 rng(100 * step + comm.rank());
    std::normal_distribution<double> normal;
    for (auto& v : x) v = normal(rng);

    double loss[2] = {0, 0};
    for (auto* run : {&fixed, &moving}) {
      const bool is_fixed = run == &fixed;
      auto& y = is_fixed ? y_fixed : y_moving;
      auto fwd = run->forward(x.data(), tokens, c.hidden, y.data());
      for (size_t i = 0; i < y.size(); ++i) {
        grad[i] = y[i] - std::sin(x[i]);  // objective 0.5 * |y - sin(x)|^2
        loss[is_fixed ? 0 : 1] += 0.5 * grad[i] * grad[i];
      }
      run->grads().zero();
      run->backward(*fwd.saved, grad.data(), grad_x.data());
      (is_fixed ? fixed_adam : moving_adam).step(run->params(), run->grads());
    }
    comm.allreduce_sum(loss, 2);
    EXPECT_NEAR(loss[1], loss[0], 1e-10 * loss[0]) << "loss at step " << step;
    double diff = 0, norm = 0;
    for (size_t i = 0; i < y_fixed.size(); ++i) {
      diff += (y_moving[i] - y_fixed[i]) * (y_moving[i] - y_fixed[i]);
      norm += y_fixed[i] * y_fixed[i];
    }
    EXPECT_LE(std::sqrt(diff / std::max(norm, 1e-300)), 1e-10) << "output at step " << step;
    expect_replicas_identical(comm, moving.params(), 6, step);
  }
}

}  // namespace
