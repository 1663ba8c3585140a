// The distributed layer against the single-process fp64 reference, for one global batch split
// unevenly over however many ranks mpirun started (a rank may hold no tokens, experts may not
// divide evenly over ranks, a rank may hold no expert).
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "comm/communicator.h"
#include "runtime/moe_layer.h"
#include "tests/runtime/layer_test_util.h"
#include "tests/runtime/reference_moe.h"
#include "tests/runtime/test_placements.h"

namespace sy = switchyard;

namespace {

using sy::testing::random_values;
using sy::testing::rel_error;
using sy::testing::tolerance;

template <typename T>
std::vector<double> to_double(std::span<const T> v) {
  return std::vector<double>(v.begin(), v.end());
}

template <typename T>
sy::MoeParams<double> to_double(const sy::MoeParams<T>& p, const sy::MoeConfig& c) {
  sy::MoeParams<double> out(c, p.expert_ids);
  auto src = const_cast<sy::MoeParams<T>&>(p).tensors();
  auto dst = out.tensors();
  for (size_t i = 0; i < src.size(); ++i) std::copy(src[i].begin(), src[i].end(), dst[i].begin());
  return out;
}

struct Batch {
  std::vector<int64_t> tokens_per_rank;
  int64_t offset = 0;  // first global token of this rank
  int64_t total = 0;
};

// Uneven token counts; with more than one rank, rank 1 holds none.
Batch split_batch(int world, int rank) {
  const int64_t pattern[] = {7, 0, 12, 4};
  Batch b;
  for (int r = 0; r < world; ++r) b.tokens_per_rank.push_back(world == 1 ? 13 : pattern[r % 4]);
  b.offset = std::accumulate(b.tokens_per_rank.begin(), b.tokens_per_rank.begin() + rank, 0);
  b.total = std::accumulate(b.tokens_per_rank.begin(), b.tokens_per_rank.end(), 0);
  return b;
}

using PlacementFor = std::function<sy::planner::ExpertPlacement(int experts, int world)>;

sy::planner::ExpertPlacement contiguous(int experts, int world) {
  return sy::planner::ExpertPlacement::contiguous(experts, world);
}

// How the layer's tokens travel and how closely its results must follow the reference.
struct Transport {
  std::string alltoall = "flat";
  int ranks_per_node = 0;  // > 0: the communicator's topology is that many ranks per node
  double tolerance = 0;    // 0: the precision's (layer_test_util.h)
  sy::kernels::BackendOptions backend;  // default: SWITCHYARD_BACKEND, else openblas
  // Forward and backward calls on the same batch: the gradients accumulate over them (what the
  // layer keeps between calls must not leak from one backward into the next).
  int calls = 1;
  // The gradients start as NaN marked fresh (MoeParams::mark_fresh) instead of zeros: the first
  // backward must write every one of them.
  bool fresh_grads = false;
};

// Runs forward and backward on this rank's slice and checks everything this rank can see; returns
// the output's relative error against the reference (0 on a rank without tokens).
template <typename T>
double check_against_reference(const sy::MoeConfig& config, std::vector<double> bias_values = {},
                               const PlacementFor& placement_for = contiguous,
                               const Transport& transport = {}) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  if (transport.ranks_per_node > 0) {
    comm.override_topology(
        sy::comm::Topology::blocked(comm.rank(), comm.size(), transport.ranks_per_node));
  }
  const int world = comm.size(), rank = comm.rank();
  const auto placement = placement_for(config.num_experts, world);
  sy::MoeLayer<T> layer(config, comm, placement,
                        sy::LayerOptions{transport.alltoall, {}, transport.backend});
  const uint64_t seed = 42;
  sy::init_params(layer.params(), seed);

  std::vector<int> all(config.num_experts);
  std::iota(all.begin(), all.end(), 0);
  sy::MoeParams<T> full(config, all);
  sy::init_params(full, seed);
  if (bias_values.empty()) bias_values = random_values<double>(config.num_experts, 7, 0.05);
  std::vector<double> bias(bias_values.size());
  for (size_t e = 0; e < bias.size(); ++e) {
    layer.selection_bias()[e] = static_cast<T>(bias_values[e]);
    bias[e] = double(layer.selection_bias()[e]);
  }

  const Batch batch = split_batch(world, rank);
  const int64_t H = config.hidden, local = batch.tokens_per_rank[rank];
  const auto x = random_values<T>(batch.total * H, 11, 1.0);
  const auto grad_y = random_values<T>(batch.total * H, 13, 1.0);

  std::vector<T> y(local * H), grad_x(local * H);
  if (transport.fresh_grads) {
    for (auto t : layer.grads().tensors()) std::fill(t.begin(), t.end(), std::nan(""));
    layer.grads().mark_fresh();
  }
  sy::MoeForward<T> fwd;
  for (int call = 0; call < transport.calls; ++call) {
    fwd = layer.forward(x.data() + batch.offset * H, local, H, y.data());
    layer.backward(*fwd.saved, grad_y.data() + batch.offset * H, grad_x.data());
  }

  auto ref = sy::testing::reference_moe(config, to_double(full, config), bias, placement.owners(),
                                        world, to_double<T>(x), to_double<T>(grad_y));
  for (auto t : ref.grads.tensors()) {
    for (double& v : t) v *= transport.calls;
  }
  const double tol = transport.tolerance > 0 ? transport.tolerance : tolerance<T>();
  auto slice = [&](const std::vector<double>& v) {
    return std::span<const double>(v.data() + batch.offset * H, local * H);
  };
  EXPECT_LE((rel_error<T, double>(y, slice(ref.y))), tol) << "output y";
  EXPECT_LE((rel_error<T, double>(grad_x, slice(ref.grad_x))), tol) << "grad x";
  EXPECT_LE((rel_error<T, double>(layer.grads().gate_weight, ref.grads.gate_weight)), tol)
      << "grad gate";
  if (config.num_shared > 0) {
    EXPECT_LE((rel_error<T, double>(layer.grads().shared.gate_proj, ref.grads.shared.gate_proj)),
              tol);
    EXPECT_LE((rel_error<T, double>(layer.grads().shared.up_proj, ref.grads.shared.up_proj)), tol);
    EXPECT_LE((rel_error<T, double>(layer.grads().shared.down_proj, ref.grads.shared.down_proj)),
              tol);
  }
  for (size_t i = 0; i < layer.params().expert_ids.size(); ++i) {
    const int e = layer.params().expert_ids[i];
    const auto& got = layer.grads().experts[i];
    const auto& want = ref.grads.experts[e];
    EXPECT_LE((rel_error<T, double>(got.gate_proj, want.gate_proj)), tol)
        << "expert " << e << " gate_proj";
    EXPECT_LE((rel_error<T, double>(got.up_proj, want.up_proj)), tol)
        << "expert " << e << " up_proj";
    EXPECT_LE((rel_error<T, double>(got.down_proj, want.down_proj)), tol)
        << "expert " << e << " down_proj";
  }
  const double loss_tol = sizeof(T) == sizeof(double) ? 1e-12 : 1e-5;
  EXPECT_NEAR(fwd.aux.expert_balance, ref.expert_balance, loss_tol * (1 + ref.expert_balance));
  EXPECT_NEAR(fwd.aux.device_balance, ref.device_balance, loss_tol * (1 + ref.device_balance));
  EXPECT_NEAR(fwd.aux.z_loss, ref.z_loss, loss_tol * (1 + ref.z_loss));

  std::vector<double> ref_load(config.num_experts, 0.0);
  for (int e : ref.idx) ref_load[e] += 1;
  EXPECT_EQ(layer.last_expert_load(), ref_load) << "global tokens per expert";
  return rel_error<T, double>(y, slice(ref.y));
}

sy::MoeConfig small_config() {
  sy::MoeConfig c;
  c.hidden = 16;
  c.num_experts = 8;
  c.num_shared = 2;
  c.top_k = 2;
  c.intermediate = 12;
  return c;
}

template <typename T>
class LayerParity : public ::testing::Test {};
using Precisions = ::testing::Types<float, double>;
TYPED_TEST_SUITE(LayerParity, Precisions);

TYPED_TEST(LayerParity, SoftmaxNoGroups) { check_against_reference<TypeParam>(small_config()); }

TYPED_TEST(LayerParity, SigmoidGroupsNormScaledWithBias) {
  auto c = small_config();
  c.scoring = sy::kernels::ScoreFunc::sigmoid;
  c.n_group = 4;
  c.topk_group = 2;
  c.top_k = 3;
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  c.selection_bias = true;
  check_against_reference<TypeParam>(c);
}

TYPED_TEST(LayerParity, SoftmaxGroupsMaxScoreWithAllAuxLosses) {
  auto c = small_config();
  c.n_group = 2;
  c.topk_group = 1;
  c.group_score = sy::kernels::GroupScore::max;
  c.selection_bias = true;
  c.aux_expert_alpha = 0.3;
  c.aux_device_alpha = 0.2;
  c.z_loss_alpha = 0.1;
  check_against_reference<TypeParam>(c);
}

TYPED_TEST(LayerParity, SigmoidWithAuxLossesNoShared) {
  auto c = small_config();
  c.scoring = sy::kernels::ScoreFunc::sigmoid;
  c.num_shared = 0;
  c.aux_expert_alpha = 0.5;
  c.aux_device_alpha = 0.25;
  check_against_reference<TypeParam>(c);
}

TYPED_TEST(LayerParity, ExpertsDoNotDivideEvenly) {
  auto c = small_config();
  c.num_experts = 7;
  c.top_k = 3;
  c.aux_device_alpha = 0.1;
  check_against_reference<TypeParam>(c);
}

TYPED_TEST(LayerParity, FewerExpertsThanRanks) {
  auto c = small_config();
  c.num_experts = 3;
  c.top_k = 2;
  c.aux_device_alpha = 0.1;
  check_against_reference<TypeParam>(c);
}

TYPED_TEST(LayerParity, TopKEqualsNumExperts) {
  auto c = small_config();
  c.num_experts = 5;
  c.top_k = 5;
  c.norm_topk_prob = true;
  check_against_reference<TypeParam>(c);
}

TYPED_TEST(LayerParity, ReplicatedHotExperts) {
  auto c = small_config();
  c.top_k = 3;
  c.aux_device_alpha = 0.2;
  check_against_reference<TypeParam>(c, {}, sy::testing::hot_experts_everywhere);
}

TYPED_TEST(LayerParity, GradientsAccumulateOverCallsWithReplicatedExperts) {
  auto c = small_config();
  c.top_k = 3;
  Transport three_calls;
  three_calls.calls = 3;
  check_against_reference<TypeParam>(c, {}, sy::testing::hot_experts_everywhere, three_calls);
}

// Fresh gradients (NaN in memory) with replicated experts, an expert that gets no tokens on some
// ranks, and two calls: written by the first backward, added to by the second.
TYPED_TEST(LayerParity, FreshGradientsAreWrittenThenAccumulated) {
  auto c = small_config();
  c.top_k = 2;
  c.num_experts = 9;  // more experts than the batch's few tokens reach on every rank
  Transport fresh;
  fresh.calls = 2;
  fresh.fresh_grads = true;
  check_against_reference<TypeParam>(c, {}, sy::testing::hot_experts_everywhere, fresh);
#ifdef SWITCHYARD_HAVE_ONEDNN
  // onednn writes fresh weight gradients with its own matmul (fp32, or bf16 within 1e-2).
  if constexpr (std::is_same_v<TypeParam, float>) {
    for (const auto compute :
         {sy::kernels::ComputePrecision::native, sy::kernels::ComputePrecision::bf16}) {
      SCOPED_TRACE(sy::kernels::compute_precision_name(compute));
      fresh.backend = {"onednn", compute};
      fresh.tolerance = compute == sy::kernels::ComputePrecision::bf16 ? 1e-2 : 0;
      check_against_reference<TypeParam>(c, {}, sy::testing::hot_experts_everywhere, fresh);
    }
  }
#endif
}

TYPED_TEST(LayerParity, EveryTokenToOneExpert) {
  auto c = small_config();
  c.top_k = 1;
  c.selection_bias = true;
  std::vector<double> bias(c.num_experts, 0.0);
  bias[c.num_experts - 1] = 100.0;  // the last expert, on the last rank, wins every token
  check_against_reference<TypeParam>(c, bias);
}

TYPED_TEST(LayerParity, HierarchicalAllToAllOverTwoRanksPerNode) {
  auto c = small_config();
  c.aux_device_alpha = 0.1;
  check_against_reference<TypeParam>(c, {}, contiguous, {"hierarchical", 2, 0, {}});
}

// bf16 rows on the wire (MoeConfig.wire): every result stays within bf16's precision of the fp64
// reference (unit roundoff 2^-9; a few roundings per value), and the output does show the rounding.
TYPED_TEST(LayerParity, Bf16WireWithinBf16PrecisionFlatAndHierarchical) {
  auto c = small_config();
  c.wire = sy::WirePrecision::bf16;
  c.aux_expert_alpha = 0.1;
  for (const Transport& transport :
       {Transport{"flat", 0, 1e-2, {}}, Transport{"hierarchical", 2, 1e-2, {}}}) {
    SCOPED_TRACE(transport.alltoall);
    const double y_error = check_against_reference<TypeParam>(c, {}, contiguous, transport);
    int world = 0, rank = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (split_batch(world, rank).tokens_per_rank[rank] > 0) {
      EXPECT_GT(y_error, 1e-4) << "the output shows no bf16 rounding: was the wire used?";
    }
  }
}

// bf16 compute (the onednn backend): the expert FFNs' GEMMs take bf16 inputs and accumulate in
// fp32; the router stays fp32, so tokens pick the same experts. Every output and gradient stays
// within 1e-2 of the fp64 reference (measured: at most 6.2e-3 on 1, 2 and 4 ranks), and the
// output shows the rounding.
TEST(LayerCompute, Bf16ComputeWithinBoundFlatAndHierarchical) {
#ifndef SWITCHYARD_HAVE_ONEDNN
  GTEST_SKIP() << "this build has no oneDNN";
#else
  auto c = small_config();
  c.aux_expert_alpha = 0.1;
  c.z_loss_alpha = 0.01;
  const sy::kernels::BackendOptions bf16{"onednn", sy::kernels::ComputePrecision::bf16};
  for (const Transport& transport :
       {Transport{"flat", 0, 1e-2, bf16}, Transport{"hierarchical", 2, 1e-2, bf16}}) {
    SCOPED_TRACE(transport.alltoall);
    const double y_error = check_against_reference<float>(c, {}, contiguous, transport);
    int world = 0, rank = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (split_batch(world, rank).tokens_per_rank[rank] > 0) {
      EXPECT_GT(y_error, 1e-5) << "the output shows no bf16 rounding: was bf16 compute used?";
    }
  }
#endif
}

// The same batch moves about half the bytes with bf16 rows: only the per-row routing data (slots
// and weights, 16 of each dispatched row's 272 bytes here) keeps its size.
TEST(LayerWire, Bf16RowsHalveTheBytesSent) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  const int world = comm.size(), rank = comm.rank();
  if (world == 1) GTEST_SKIP() << "one rank sends nothing to other ranks";
  auto c = small_config();
  c.hidden = 64;
  const Batch batch = split_batch(world, rank);
  const int64_t H = c.hidden, local = batch.tokens_per_rank[rank];
  const auto x = random_values<float>(local * H, 21 + rank);
  auto bytes_sent = [&](sy::WirePrecision wire) {
    c.wire = wire;
    sy::MoeLayer<float> layer(c, comm, contiguous(c.num_experts, world));
    sy::init_params(layer.params(), 3);
    std::vector<float> y(local * H), grad_x(local * H);
    auto fwd = layer.forward(x.data(), local, H, y.data());
    layer.backward(*fwd.saved, x.data(), grad_x.data());
    double bytes = double(layer.traffic().intra_node_bytes + layer.traffic().inter_node_bytes);
    MPI_Allreduce(MPI_IN_PLACE, &bytes, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return bytes;
  };
  const double native = bytes_sent(sy::WirePrecision::native);
  const double bf16 = bytes_sent(sy::WirePrecision::bf16);
  ASSERT_GT(native, 0);
  EXPECT_GT(bf16, 0.45 * native);
  EXPECT_LT(bf16, 0.55 * native);
}

}  // namespace
