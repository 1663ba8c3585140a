// Invalid layer configurations are rejected with a message that names the offending field.
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "base/error.h"
#include "runtime/moe_config.h"

namespace sy = switchyard;

namespace {

sy::MoeConfig valid() {
  sy::MoeConfig c;
  c.hidden = 32;
  c.num_experts = 8;
  c.top_k = 2;
  c.intermediate = 16;
  return c;
}

void expect_rejected(const std::function<void(sy::MoeConfig&)>& edit, const std::string& field) {
  sy::MoeConfig c = valid();
  edit(c);
  try {
    c.validate();
    ADD_FAILURE() << "expected a rejection naming " << field;
  } catch (const sy::Error& e) {
    EXPECT_EQ(e.code(), sy::ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos)
        << "message '" << e.what() << "' does not name " << field;
  }
}

TEST(MoeConfig, ValidConfigPasses) { EXPECT_NO_THROW(valid().validate()); }

TEST(MoeConfig, TopKAboveExperts) {
  expect_rejected([](auto& c) { c.top_k = 9; }, "top_k");
}
TEST(MoeConfig, TopKZero) {
  expect_rejected([](auto& c) { c.top_k = 0; }, "top_k");
}
TEST(MoeConfig, NGroupNotDividingExperts) {
  expect_rejected([](auto& c) { c.n_group = 3; }, "n_group");
}
TEST(MoeConfig, TopkGroupAboveNGroup) {
  expect_rejected(
      [](auto& c) {
        c.n_group = 2;
        c.topk_group = 3;
      },
      "topk_group");
}
TEST(MoeConfig, TopKAboveExpertsInKeptGroups) {
  expect_rejected(
      [](auto& c) {
        c.n_group = 4;
        c.topk_group = 1;
        c.top_k = 3;
      },
      "top_k");
}
TEST(MoeConfig, Top2GroupScoreNeedsTwoPerGroup) {
  expect_rejected(
      [](auto& c) {
        c.n_group = 8;
        c.topk_group = 4;
      },
      "group_score");
}
TEST(MoeConfig, NonPositiveSizes) {
  expect_rejected([](auto& c) { c.hidden = 0; }, "hidden");
  expect_rejected([](auto& c) { c.num_experts = 0; }, "num_experts");
  expect_rejected([](auto& c) { c.intermediate = -1; }, "intermediate");
  expect_rejected([](auto& c) { c.num_shared = -1; }, "num_shared");
}
TEST(MoeConfig, BadCoefficients) {
  expect_rejected([](auto& c) { c.routed_scaling_factor = 0; }, "routed_scaling_factor");
  expect_rejected([](auto& c) { c.aux_expert_alpha = -1; }, "aux_expert_alpha");
  expect_rejected([](auto& c) { c.aux_device_alpha = -1; }, "aux_device_alpha");
  expect_rejected([](auto& c) { c.z_loss_alpha = -1; }, "z_loss_alpha");
  expect_rejected([](auto& c) { c.bias_update_rate = -1; }, "bias_update_rate");
}
TEST(MoeConfig, UnknownScoring) {
  EXPECT_THROW(sy::parse_score_func("relu"), sy::Error);
  EXPECT_EQ(sy::parse_score_func("sigmoid"), sy::kernels::ScoreFunc::sigmoid);
}
TEST(MoeConfig, WirePrecisionByNameAndOutOfRange) {
  EXPECT_EQ(sy::parse_wire_precision("bf16"), sy::WirePrecision::bf16);
  EXPECT_EQ(sy::parse_wire_precision("native"), sy::WirePrecision::native);
  try {
    sy::parse_wire_precision("fp8");
    ADD_FAILURE() << "fp8 accepted";
  } catch (const sy::Error& e) {
    EXPECT_EQ(e.code(), sy::ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("native"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bf16"), std::string::npos) << e.what();
  }
  expect_rejected([](auto& c) { c.wire = static_cast<sy::WirePrecision>(7); }, "wire");
}

}  // namespace
