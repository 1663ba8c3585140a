// The moe-placement/v1 format: round trip and rejection of malformed plans.
#include <gtest/gtest.h>

#include <filesystem>

#include "planner/plan.h"
#include "tests/expect_error.h"

namespace switchyard::planner {
namespace {

Plan small_plan() {
  Plan plan;
  plan.workload = "small";
  plan.topology = Topology{2, 1, 2};
  plan.phy2log = {{0, 1, 2, 0}, {2, 1, 0, 1}};
  return plan;
}

TEST(PlanIo, JsonRoundTripKeepsEverything) {
  const Plan plan = small_plan();
  const Plan back = plan_from_json(plan_to_json(plan));
  EXPECT_EQ(back.phy2log, plan.phy2log);
  EXPECT_EQ(back.workload, "small");
  EXPECT_EQ(back.topology.num_slots(), 4);
  EXPECT_EQ(plan_to_json(plan)["format"], "moe-placement/v1");

  const auto path = std::filesystem::temp_directory_path() / "sy_plan_io_plan.json";
  write_plan(path.string(), plan);
  EXPECT_EQ(read_plan(path.string(), 3).phy2log, plan.phy2log);
  std::filesystem::remove(path);
}

TEST(PlanIo, RejectsAPlanMissingAnExpert) {
  Plan plan = small_plan();
  plan.phy2log[1] = {1, 1, 0, 1};
  try {
    plan.validate(3);
    FAIL() << "a plan without expert 2 in layer 1 was accepted";
  } catch (const switchyard::Error& err) {
    EXPECT_EQ(err.code(), switchyard::ErrorCode::invalid_argument);
    EXPECT_NE(std::string(err.what()).find("layer 1 is missing expert 2"), std::string::npos);
  }
}

TEST(PlanIo, RejectsWrongRowLengthExpertIdAndFormat) {
  Plan plan = small_plan();
  plan.phy2log[0].push_back(1);
  EXPECT_SY_ERROR(plan.validate(3), switchyard::ErrorCode::invalid_argument);
  plan = small_plan();
  plan.phy2log[0][0] = 7;
  EXPECT_SY_ERROR(plan.validate(3), switchyard::ErrorCode::invalid_argument);
  nlohmann::json doc = plan_to_json(small_plan());
  doc["format"] = "eplb";
  EXPECT_SY_ERROR(plan_from_json(doc), switchyard::ErrorCode::invalid_argument);
  doc["format"] = 2;  // found by fuzz_plan: was a json type_error
  EXPECT_SY_ERROR(plan_from_json(doc), switchyard::ErrorCode::invalid_argument);
  doc = plan_to_json(small_plan());
  doc.erase("slots_per_gpu");
  EXPECT_SY_ERROR(plan_from_json(doc), switchyard::ErrorCode::invalid_argument);
}

}  // namespace
}  // namespace switchyard::planner
