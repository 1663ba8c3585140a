// Bad input to a live layer: clear errors, and the layer stays usable afterwards.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <string>
#include <vector>

#include "base/error.h"
#include "comm/communicator.h"
#include "runtime/moe_layer.h"

namespace sy = switchyard;

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

TEST(LayerErrors, InvalidConfigIsRejectedNamingTheField) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  auto c = config();
  c.top_k = 5;
  try {
    sy::MoeLayer<double> layer(c, comm,
                               sy::planner::ExpertPlacement::contiguous(4, comm.size()));
    ADD_FAILURE() << "top_k > num_experts was accepted";
  } catch (const sy::Error& e) {
    EXPECT_NE(std::string(e.what()).find("top_k"), std::string::npos) << e.what();
  }
}

TEST(LayerErrors, PlacementMustMatchConfigAndWorld) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  EXPECT_THROW(sy::MoeLayer<double>(config(), comm,
                                    sy::planner::ExpertPlacement::contiguous(5, comm.size())),
               sy::Error);
  EXPECT_THROW(sy::MoeLayer<double>(config(), comm,
                                    sy::planner::ExpertPlacement::contiguous(4, comm.size() + 1)),
               sy::Error);
}

TEST(LayerErrors, HiddenMismatchIsRejectedAndTheLayerStaysUsable) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  sy::MoeLayer<double> layer(config(), comm,
                             sy::planner::ExpertPlacement::contiguous(4, comm.size()));
  sy::init_params(layer.params(), 3);
  const auto params_before = layer.params().gate_weight;
  std::vector<double> x(3 * 8, 0.5), y(3 * 8), y_again(3 * 8);
  try {
    layer.forward(x.data(), 3, 7, y.data());
    ADD_FAILURE() << "hidden 7 accepted for a layer of hidden 8";
  } catch (const sy::Error& e) {
    EXPECT_NE(std::string(e.what()).find("hidden"), std::string::npos) << e.what();
  }
  EXPECT_EQ(layer.params().gate_weight, params_before);
  auto first = layer.forward(x.data(), 3, 8, y.data());
  auto second = layer.forward(x.data(), 3, 8, y_again.data());
  EXPECT_EQ(y, y_again);
}

TEST(LayerErrors, SelectionBiasMovesTowardsBalance) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  auto c = config();
  c.selection_bias = true;
  c.bias_update_rate = 0.01;
  sy::MoeLayer<double> layer(c, comm, sy::planner::ExpertPlacement::contiguous(4, comm.size()));
  sy::init_params(layer.params(), 5);
  const int64_t tokens = 6 + comm.rank();
  std::vector<double> x(tokens * 8), y(tokens * 8);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.7 * double(i) + comm.rank());
  layer.forward(x.data(), tokens, 8, y.data());
  const auto load = layer.last_expert_load();
  double total = 0;
  for (double l : load) total += l;
  int64_t global_tokens = tokens;
  comm.allreduce_sum(&global_tokens, 1);
  EXPECT_EQ(total, double(global_tokens * c.top_k));
  layer.update_selection_bias();
  const double mean = total / 4;
  for (int e = 0; e < 4; ++e) {
    const double want = load[e] < mean ? 0.01 : (load[e] > mean ? -0.01 : 0.0);
    EXPECT_DOUBLE_EQ(layer.selection_bias()[e], want) << "expert " << e;
  }
}

}  // namespace
