// The pipelined (chunked) hierarchical all-to-all: every chunk count, including more chunks than
// rows, moves every byte and sums exactly (the same per-token order as unchunked), over mpi and shm
// inside nodes, on one node, on nodes of one rank, and on ragged nodes (3 ranks, 2 per node).
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <tuple>

#include "comm/alltoall/hierarchical/hierarchical_alltoall.h"
#include "comm/error.h"
#include "tests/comm/alltoall_cases.h"
#include "tests/comm/comm_test_util.h"

namespace switchyard::comm {
namespace {

using test::run_case;
using test::Scenario;

// (chunks, intra-node transport, ranks per simulated node; 0: all ranks on one node).
using Params = std::tuple<int, std::string, int>;

class HierarchicalChunks : public testing::TestWithParam<Params> {
 protected:
  void SetUp() override {
    comm_ = test::simulated_communicator(std::get<1>(GetParam()), std::get<2>(GetParam()));
    a2a_ = std::make_unique<HierarchicalAllToAll>(*comm_,
                                                  HierarchicalOptions{std::get<0>(GetParam())});
  }

  std::unique_ptr<Communicator> comm_;
  std::unique_ptr<HierarchicalAllToAll> a2a_;
};

TEST_P(HierarchicalChunks, MovesEveryByteAndSumsExactly) {
  EXPECT_EQ(a2a_->chunks(), std::get<0>(GetParam()));
  for (uint64_t seed : {41, 42, 43}) {
    SCOPED_TRACE(testing::Message() << "seed " << seed);
    run_case(*comm_, *a2a_, {Scenario::random, seed, 24, 12});
    run_case(*comm_, *a2a_, {Scenario::random, seed, 13, 0});
    run_case(*comm_, *a2a_, {Scenario::random, seed, 0, 5});
  }
  run_case(*comm_, *a2a_, {Scenario::random, 44, 7168 * 2, 8});
}

TEST_P(HierarchicalChunks, EdgeCases) {
  run_case(*comm_, *a2a_, {Scenario::nothing_at_all, 45, 16, 4});
  run_case(*comm_, *a2a_, {Scenario::odd_ranks_send_nothing, 46, 16, 4});  // empty nodes
  run_case(*comm_, *a2a_, {Scenario::last_rank_has_no_tokens, 47, 16, 4});
  run_case(*comm_, *a2a_, {Scenario::all_to_rank0, 48, 16, 4});
  run_case(*comm_, *a2a_, {Scenario::all_to_all, 49, 16, 4});
  run_case(*comm_, *a2a_, {Scenario::all_to_all, 50, 0, 6});
}

// Chunking changes neither what crosses nodes nor how much: the statistics equal unchunked ones.
TEST_P(HierarchicalChunks, SendsTheSameBytesAsUnchunked) {
  HierarchicalAllToAll one(*comm_, HierarchicalOptions{1});
  const test::Case c{Scenario::random, 51, 40, 8};
  run_case(*comm_, one, c);
  run_case(*comm_, *a2a_, c);
  const AllToAllStats& a = one.stats();
  const AllToAllStats& b = a2a_->stats();
  EXPECT_EQ(a.dispatch.bytes_sent, b.dispatch.bytes_sent);
  EXPECT_EQ(a.dispatch.bytes_to_other_nodes, b.dispatch.bytes_to_other_nodes);
  EXPECT_EQ(a.dispatch.rows_to_other_nodes, b.dispatch.rows_to_other_nodes);
  EXPECT_EQ(a.combine.bytes_sent, b.combine.bytes_sent);
  EXPECT_EQ(a.combine.bytes_to_other_nodes, b.combine.bytes_to_other_nodes);
  EXPECT_EQ(a.combine.rows_to_other_nodes, b.combine.rows_to_other_nodes);
}

std::string param_name(const testing::TestParamInfo<Params>& info) {
  const int per_node = std::get<2>(info.param);
  return std::to_string(std::get<0>(info.param)) + "_chunks_" + std::get<1>(info.param) + "_" +
         (per_node == 0 ? std::string("one_node") : std::to_string(per_node) + "_per_node");
}

// 1: unchunked; 2, 3, 7: uneven pieces; 64 and 200: more chunks than any share has rows.
INSTANTIATE_TEST_SUITE_P(ChunkCounts, HierarchicalChunks,
                         testing::Combine(testing::Values(1, 2, 3, 7, 64, 200),
                                          testing::Values("mpi", "shm"), testing::Values(0, 1, 2)),
                         param_name);

TEST(HierarchicalChunkOptions, ComeFromTheEnvironmentAndAreChecked) {
  Communicator comm(MPI_COMM_WORLD, test::test_options());
  EXPECT_EQ(HierarchicalAllToAll(comm, HierarchicalOptions{5}).chunks(), 5);
  EXPECT_THROW(HierarchicalAllToAll(comm, HierarchicalOptions{-1}), CommError);
  const char* saved = std::getenv("SWITCHYARD_RELAY_CHUNKS");
  const std::string old = saved ? saved : "";
  setenv("SWITCHYARD_RELAY_CHUNKS", "3", 1);
  EXPECT_EQ(HierarchicalAllToAll(comm).chunks(), 3);
  setenv("SWITCHYARD_RELAY_CHUNKS", "three", 1);
  try {
    HierarchicalAllToAll bad(comm);
    ADD_FAILURE() << "accepted SWITCHYARD_RELAY_CHUNKS=three";
  } catch (const CommError& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_TRUE(test::contains(e.what(), "SWITCHYARD_RELAY_CHUNKS")) << e.what();
  }
  unsetenv("SWITCHYARD_RELAY_CHUNKS");
  EXPECT_EQ(HierarchicalAllToAll(comm).chunks(), HierarchicalOptions::kDefaultChunks);
  if (saved != nullptr) setenv("SWITCHYARD_RELAY_CHUNKS", old.c_str(), 1);
}

}  // namespace
}  // namespace switchyard::comm
