// Every all-to-all algorithm over every transport selection and simulated topology: data moves
// exactly (side data included), sums are exact, and hierarchical sends one copy of a token per
// destination node where flat sends one per destination rank.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <tuple>

#include "comm/alltoall/alltoall.h"
#include "comm/error.h"
#include "tests/comm/alltoall_cases.h"
#include "tests/comm/comm_test_util.h"

namespace switchyard::comm {
namespace {

using test::Case;
using test::run_case;
using test::Scenario;

// (algorithm, intra-node transport, ranks per simulated node; 0: all ranks on one node). Links
// between simulated nodes use mpi.
using Params = std::tuple<std::string, std::string, int>;

class AllToAllMatrix : public testing::TestWithParam<Params> {
 protected:
  void SetUp() override {
    comm_ = test::simulated_communicator(std::get<1>(GetParam()), std::get<2>(GetParam()));
    a2a_ = make_alltoall(std::get<0>(GetParam()), *comm_);
  }

  std::unique_ptr<Communicator> comm_;
  std::unique_ptr<AllToAll> a2a_;
};

TEST_P(AllToAllMatrix, MovesEveryByteAndSumsExactly) {
  for (uint64_t seed : {1, 2}) {
    SCOPED_TRACE(testing::Message() << "seed " << seed);
    run_case(*comm_, *a2a_, {Scenario::random, seed, 24, 12});
    run_case(*comm_, *a2a_, {Scenario::random, seed, 13, 0});
  }
  run_case(*comm_, *a2a_, {Scenario::random, 3, 7168 * 2, 8});
}

TEST_P(AllToAllMatrix, EdgeCases) {
  run_case(*comm_, *a2a_, {Scenario::nothing_at_all, 4, 16, 4});
  run_case(*comm_, *a2a_, {Scenario::odd_ranks_send_nothing, 5, 16, 4});
  run_case(*comm_, *a2a_, {Scenario::last_rank_has_no_tokens, 6, 16, 4});
  run_case(*comm_, *a2a_, {Scenario::all_to_rank0, 7, 16, 4});
  run_case(*comm_, *a2a_, {Scenario::all_to_all, 8, 16, 4});
  run_case(*comm_, *a2a_, {Scenario::all_to_all, 9, 0, 6});  // side data only
}

// Totals over all ranks of what crossed nodes, computed from every source's routes: flat sends
// one token copy per (token, destination rank) on another node, hierarchical one per
// (token, destination node); side data goes once per row either way.
TEST_P(AllToAllMatrix, CountsTheBytesThatCrossNodes) {
  const Case c{Scenario::random, 11, 40, 8};
  run_case(*comm_, *a2a_, c);
  const Topology& t = comm_->topology();
  const bool hierarchical = a2a_->name() == "hierarchical";
  int64_t token_copies = 0;
  int64_t rows = 0;
  for (int s = 0; s < comm_->size(); ++s) {
    const test::Routes routes = test::make_routes(c.scenario, c.seed, s, comm_->size());
    for (int node = 0; node < t.num_nodes; ++node) {
      if (node == t.node_of_rank[static_cast<size_t>(s)]) continue;
      std::set<int64_t> distinct;
      for (int d = 0; d < comm_->size(); ++d) {
        if (t.node_of_rank[static_cast<size_t>(d)] != node) continue;
        const auto& tokens = routes.to[static_cast<size_t>(d)];
        distinct.insert(tokens.begin(), tokens.end());
        rows += static_cast<int64_t>(tokens.size());
      }
      token_copies += hierarchical ? static_cast<int64_t>(distinct.size()) : 0;
    }
  }
  if (!hierarchical) token_copies = rows;
  const AllToAllStats& stats = a2a_->stats();
  int64_t totals[] = {stats.dispatch.rows_to_other_nodes, stats.dispatch.bytes_to_other_nodes,
                      stats.combine.rows_to_other_nodes, stats.combine.bytes_to_other_nodes};
  comm_->allreduce_sum(totals, 4);
  const auto result_bytes = static_cast<int64_t>(test::kCombineElems * sizeof(double));
  EXPECT_EQ(totals[0], token_copies);
  EXPECT_EQ(totals[1], token_copies * static_cast<int64_t>(c.token_bytes) +
                           rows * static_cast<int64_t>(c.side_bytes));
  EXPECT_EQ(totals[2], token_copies);
  EXPECT_EQ(totals[3], token_copies * result_bytes);
  EXPECT_LE(stats.dispatch.bytes_to_other_nodes, stats.dispatch.bytes_sent);
}

std::string param_name(const testing::TestParamInfo<Params>& info) {
  const int per_node = std::get<2>(info.param);
  return std::get<0>(info.param) + "_" + std::get<1>(info.param) + "_" +
         (per_node == 0 ? std::string("one_node") : std::to_string(per_node) + "_per_node");
}

// With 4 ranks: 1x4, 2x2 and 4x1 nodes; with 3 ranks and 2 per node, nodes of 2 and 1 (ragged).
INSTANTIATE_TEST_SUITE_P(AllAlgorithms, AllToAllMatrix,
                         testing::Combine(testing::Values("flat", "hierarchical", "auto"),
                                          testing::Values("mpi", "shm"), testing::Values(0, 1, 2)),
                         param_name);

class HierarchicalLayouts : public testing::Test {
 protected:
  void SetUp() override {
    comm_.override_topology(Topology::blocked(comm_.rank(), comm_.size(), 2));
  }
  Communicator comm_{MPI_COMM_WORLD, test::test_options()};
  std::unique_ptr<AllToAll> a2a_ = make_alltoall("hierarchical", comm_);
};

// The relay plan lives in the layout: a layout without one, or changed since exchange_counts, is
// rejected before any message is sent (every rank throws alike, so they stay in step).
TEST_F(HierarchicalLayouts, RejectsLayoutsWithoutAMatchingPlan) {
  const test::Routes routes = test::make_routes(Scenario::random, 21, comm_.rank(), comm_.size());
  RouteLayout layout = test::layout_of(routes, comm_.size());
  auto flat = make_alltoall("flat", comm_);
  flat->exchange_counts(layout);
  const std::vector<uint8_t> tokens(static_cast<size_t>(routes.num_tokens));
  std::vector<uint8_t> received(static_cast<size_t>(layout.num_recv_rows()));
  try {
    a2a_->dispatch(layout, tokens.data(), 1, nullptr, 0, received.data(), nullptr);
    ADD_FAILURE() << "dispatched without a relay plan";
  } catch (const CommError& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_TRUE(test::contains(e.what(), "exchange_counts")) << e.what();
  }
  a2a_->exchange_counts(layout);
  RouteLayout changed = layout;
  std::reverse(changed.send_tokens.begin(), changed.send_tokens.end());
  const bool reordered = changed.send_tokens != layout.send_tokens;
  if (reordered) {
    EXPECT_THROW(a2a_->dispatch(changed, tokens.data(), 1, nullptr, 0, received.data(), nullptr),
                 CommError);
  }
}

TEST(MakeAllToAllAuto, PicksHierarchicalOnlyWithNodesToCrossAndToFanOutIn) {
  Communicator comm(MPI_COMM_WORLD, test::test_options());
  const int size = comm.size();
  for (int per_node : {1, 2, size}) {
    comm.override_topology(Topology::blocked(comm.rank(), size, per_node));
    const bool two_level = (size + per_node - 1) / per_node > 1 && std::min(per_node, size) > 1;
    EXPECT_EQ(make_alltoall("auto", comm)->name(), two_level ? "hierarchical" : "flat")
        << per_node << " ranks per node of " << size;
  }
}

// Rank 0 agrees on the counts, then skips the dispatch: every other rank gives up after the
// timeout, naming the phase and the peers it did not hear from, instead of hanging.
TEST(HierarchicalTimeouts, NameThePeersNotHeardFrom) {
  Communicator sync(MPI_COMM_WORLD, test::test_options());
  CommOptions short_wait;
  short_wait.timeout = std::chrono::milliseconds(300);
  {
    Communicator comm(MPI_COMM_WORLD, short_wait);
    comm.override_topology(Topology::blocked(comm.rank(), comm.size(), 2));
    auto a2a = make_alltoall("hierarchical", comm);
    const test::Routes routes =
        test::make_routes(Scenario::all_to_all, 31, comm.rank(), comm.size());
    RouteLayout layout = test::layout_of(routes, comm.size());
    a2a->exchange_counts(layout);
    if (comm.rank() != 0) {
      std::vector<uint8_t> tokens(static_cast<size_t>(routes.num_tokens) * 4);
      std::vector<uint8_t> received(static_cast<size_t>(layout.num_recv_rows()) * 4);
      try {
        a2a->dispatch(layout, tokens.data(), 4, nullptr, 0, received.data(), nullptr);
        ADD_FAILURE() << "dispatch completed without rank 0";
      } catch (const CommError& e) {
        EXPECT_EQ(e.code(), ErrorCode::timeout);
        EXPECT_TRUE(test::contains(e.what(), "hierarchical dispatch")) << e.what();
        EXPECT_TRUE(test::contains(e.what(), "rank(s)")) << e.what();
      }
    }
    sync.barrier();  // nobody frees the communicator while a peer still waits on it
  }
  sync.barrier();
}

}  // namespace
}  // namespace switchyard::comm
