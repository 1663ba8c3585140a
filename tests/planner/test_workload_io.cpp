// Reading workload files: valid ones with routes, malformed ones rejected with a clear message.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "planner/workload.h"
#include "tests/expect_error.h"

namespace switchyard::planner {
namespace {

nlohmann::json small_workload_json() {
  return {{"format", "moe-placement-workload/v1"},
          {"name", "small"},
          {"model", {{"num_layers", 1}, {"num_experts", 3}, {"top_k", 2}}},
          {"tokens_per_layer", 2},
          {"load", {{2, 1, 1}}}};
}

std::string message_of(const nlohmann::json& doc) {
  try {
    workload_from_json(doc, "");
  } catch (const switchyard::Error& err) {
    EXPECT_EQ(err.code(), switchyard::ErrorCode::invalid_argument) << err.what();
    return err.what();
  }
  return "";
}

TEST(WorkloadIo, ParsesLoads) {
  const Workload w = workload_from_json(small_workload_json(), "");
  EXPECT_EQ(w.num_experts, 3);
  EXPECT_EQ(w.load[0], (std::vector<std::int64_t>{2, 1, 1}));
  EXPECT_FALSE(w.has_routes());
}

TEST(WorkloadIo, RejectsRowsNotSummingToTokensTimesTopK) {
  nlohmann::json doc = small_workload_json();
  doc["load"] = {{2, 1, 0}};
  EXPECT_NE(message_of(doc).find("sums to 3, expected tokens_per_layer × top_k = 4"),
            std::string::npos);
}

TEST(WorkloadIo, RejectsWrongFormatAndMissingFields) {
  nlohmann::json doc = small_workload_json();
  doc["format"] = "moe-placement/v1";
  EXPECT_NE(message_of(doc).find("expected 'moe-placement-workload/v1'"), std::string::npos);
  doc["format"] = 2;  // found by fuzz_workload: was a json type_error
  EXPECT_NE(message_of(doc).find("expected 'moe-placement-workload/v1'"), std::string::npos);
  doc = small_workload_json();
  doc["model"].erase("top_k");
  EXPECT_NE(message_of(doc).find("missing field 'top_k'"), std::string::npos);
  doc = small_workload_json();
  doc["load"] = {{2, 1}};
  EXPECT_NE(message_of(doc).find("expected num_experts = 3"), std::string::npos);
}

TEST(WorkloadIo, ReadsRoutesBesideTheJsonAndChecksThemAgainstTheLoad) {
  const auto folder = std::filesystem::temp_directory_path() / "sy_plan_workload_io";
  std::filesystem::create_directories(folder);
  nlohmann::json doc = small_workload_json();
  doc["routes"] = {{"file", "small.routes.u16"}, {"dtype", "uint16-le"}, {"shape", {1, 2, 2}}};
  std::ofstream(folder / "small.json") << doc.dump();
  const unsigned char routes[] = {0, 0, 1, 0, 0, 0, 2, 0};  // token 0: {0,1}, token 1: {0,2}
  std::ofstream(folder / "small.routes.u16", std::ios::binary)
      .write(reinterpret_cast<const char*>(routes), sizeof routes);
  const Workload w = read_workload((folder / "small.json").string());
  ASSERT_TRUE(w.has_routes());
  EXPECT_EQ(w.token_experts(0, 1)[1], 2);

  const unsigned char wrong[] = {0, 0, 1, 0, 1, 0, 2, 0};  // counts {1,2,1} != load {2,1,1}
  std::ofstream(folder / "small.routes.u16", std::ios::binary)
      .write(reinterpret_cast<const char*>(wrong), sizeof wrong);
  EXPECT_SY_ERROR(read_workload((folder / "small.json").string()),
                  switchyard::ErrorCode::invalid_argument);
  std::filesystem::remove_all(folder);
}

TEST(WorkloadIo, MissingFileIsARuntimeError) {
  EXPECT_THROW(read_workload("/nonexistent/workload.json"), std::runtime_error);
}

}  // namespace
}  // namespace switchyard::planner
