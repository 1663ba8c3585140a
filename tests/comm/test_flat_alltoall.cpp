#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "comm/alltoall/alltoall.h"
#include "comm/error.h"
#include "tests/comm/alltoall_cases.h"
#include "tests/comm/comm_test_util.h"

namespace switchyard::comm {
namespace {

using test::Case;
using test::layout_of;
using test::Routes;
using test::run_case;
using test::Scenario;

class FlatAllToAllTest : public testing::Test {
 protected:
  Communicator comm_{MPI_COMM_WORLD, test::test_options()};
  std::unique_ptr<AllToAll> a2a_ = make_alltoall("flat", comm_);
};

TEST_F(FlatAllToAllTest, RandomDestinations) {
  EXPECT_EQ(a2a_->name(), "flat");
  for (uint64_t seed : {1, 2, 3}) {
    SCOPED_TRACE(testing::Message() << "seed " << seed);
    run_case(comm_, *a2a_, {Scenario::random, seed, 24, 12});
    run_case(comm_, *a2a_, {Scenario::random, seed, 13, 0});  // no side data: received in place
  }
}

TEST_F(FlatAllToAllTest, LargeRowsAcrossTheRendezvousPath) {
  run_case(comm_, *a2a_, {Scenario::random, 9, 7168 * 2, 8});
}

TEST_F(FlatAllToAllTest, SomeRanksSendNothing) {
  run_case(comm_, *a2a_, {Scenario::odd_ranks_send_nothing, 4, 16, 4});
}

TEST_F(FlatAllToAllTest, RankWithZeroTokens) {
  run_case(comm_, *a2a_, {Scenario::last_rank_has_no_tokens, 5, 16, 4});
}

TEST_F(FlatAllToAllTest, EveryTokenToOneRank) {
  run_case(comm_, *a2a_, {Scenario::all_to_rank0, 6, 16, 4});
}

TEST_F(FlatAllToAllTest, EveryTokenToEveryRank) {
  run_case(comm_, *a2a_, {Scenario::all_to_all, 7, 16, 4});
  run_case(comm_, *a2a_, {Scenario::all_to_all, 8, 0, 6});  // side data only
}

// Each broken layout is rejected locally, before any message, so ranks stay in step.
TEST_F(FlatAllToAllTest, RejectsInvalidLayouts) {
  const int world = comm_.size();
  auto valid = [world] {
    Routes r;
    r.num_tokens = 3;
    r.to.assign(static_cast<size_t>(world), {});
    r.to[0] = {2, 0};
    r.to[static_cast<size_t>(world - 1)].push_back(1);
    return layout_of(r, world);
  };
  struct Broken {
    const char* why;
    void (*mutate)(RouteLayout&);
  };
  const Broken broken[] = {
      {"world differs from the communicator", [](RouteLayout& l) { ++l.world; }},
      {"send_offsets too short", [](RouteLayout& l) { l.send_offsets.pop_back(); }},
      {"send_offsets not starting at 0", [](RouteLayout& l) { l.send_offsets[0] = 1; }},
      {"send_offsets decreasing", [](RouteLayout& l) { l.send_offsets[1] = -1; }},
      {"send_tokens too long", [](RouteLayout& l) { l.send_tokens.push_back(0); }},
      {"token index too large", [](RouteLayout& l) { l.send_tokens[0] = 3; }},
      {"negative token index", [](RouteLayout& l) { l.send_tokens[1] = -1; }},
      {"token twice for one destination", [](RouteLayout& l) { l.send_tokens[1] = 2; }},
      {"negative num_tokens", [](RouteLayout& l) { l.num_tokens = -1; }},
  };
  for (const auto& b : broken) {
    RouteLayout layout = valid();
    b.mutate(layout);
    try {
      a2a_->exchange_counts(layout);
      ADD_FAILURE() << "accepted a layout with " << b.why;
    } catch (const CommError& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << b.why;
    }
  }
  // Before exchange_counts there are no recv_offsets to dispatch against.
  RouteLayout layout = valid();
  const std::vector<uint8_t> tokens(3);
  EXPECT_THROW(a2a_->dispatch(layout, tokens.data(), 1, nullptr, 0, nullptr, nullptr), CommError);
}

TEST(MakeAllToAll, UnknownNameListsTheKnownOnes) {
  Communicator comm(MPI_COMM_WORLD, test::test_options());
  try {
    make_alltoall("butterfly", comm);
    ADD_FAILURE() << "unknown algorithm accepted";
  } catch (const CommError& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_TRUE(test::contains(e.what(), "butterfly")) << e.what();
    EXPECT_TRUE(test::contains(e.what(), "flat")) << e.what();
  }
}

}  // namespace
}  // namespace switchyard::comm
