// The live re-planner: predicted imbalance by hand, adoption only above the gain threshold, slots
// that must divide over the devices.
#include <gtest/gtest.h>

#include <vector>

#include "base/error.h"
#include "runtime/replanner.h"

namespace sy = switchyard;

TEST(Replanner, PredictedImbalanceSplitsAnExpertOverItsReplicas) {
  // Expert 0 (load 6) on devices 0 and 1, expert 1 (load 2) on device 1: loads 3 and 5, mean 4.
  const sy::planner::ExpertPlacement p({{0, 1}, {1}}, 2);
  EXPECT_DOUBLE_EQ(sy::predicted_imbalance(p, {6, 2}), 5.0 / 4.0);
  EXPECT_DOUBLE_EQ(sy::predicted_imbalance(p, {0, 0}), 1.0);
}

TEST(Replanner, ReplicatesAHotExpertAndKeepsEveryExpertPlaced) {
  sy::Replanner replanner({.interval = 2, .redundant_slots = 2}, 6, 4, 2);
  EXPECT_FALSE(replanner.due(1));
  EXPECT_TRUE(replanner.due(2));
  const auto current = sy::planner::ExpertPlacement::contiguous(6, 4);
  replanner.record({40, 4, 4, 4, 4, 4});
  replanner.record({40, 4, 4, 4, 4, 4});
  sy::ReplanDecision decision;
  const auto next = replanner.replan(current, &decision);
  ASSERT_TRUE(next.has_value());
  EXPECT_TRUE(decision.adopted);
  EXPECT_GT(decision.current_imbalance, decision.planned_imbalance + 0.5);
  EXPECT_GE(next->replicas(0).size(), 2u) << "the hot expert gets replicas";
  for (int e = 0; e < 6; ++e) EXPECT_FALSE(next->replicas(e).empty());
  EXPECT_EQ(next->max_experts_per_device(), 2);
  EXPECT_GT(decision.moved_experts, 0);
}

TEST(Replanner, KeepsThePlacementWhenTheGainIsBelowTheThreshold) {
  sy::Replanner replanner({.interval = 1, .redundant_slots = 0, .min_gain = 0.5}, 4, 2, 1);
  replanner.record({5, 4, 4, 3});  // contiguous: 9 and 7, imbalance 1.125; best 8/8 = 1.0
  sy::ReplanDecision decision;
  EXPECT_FALSE(replanner.replan(sy::planner::ExpertPlacement::contiguous(4, 2), &decision));
  EXPECT_FALSE(decision.adopted);
  EXPECT_DOUBLE_EQ(decision.current_imbalance, 1.125);
  EXPECT_DOUBLE_EQ(decision.planned_imbalance, 1.0);
}

TEST(Replanner, RejectsSlotsThatDoNotDivideOverTheDevices) {
  try {
    sy::Replanner({.interval = 1, .redundant_slots = 1}, 6, 4, 1);
    FAIL() << "7 slots over 4 devices accepted";
  } catch (const sy::Error& e) {
    EXPECT_NE(std::string(e.what()).find("redundant_slots"), std::string::npos) << e.what();
  }
}
