// libFuzzer harness: bytes as a moe-placement/v1 plan (planner/plan.h), as read_plan reads a file:
// JSON, plan_from_json, validate against an expert count, then each layer as an ExpertPlacement
// (planner/placement.h). Documented failures are switchyard::Error(invalid_argument); anything else
// (another exception, a crash, a sanitizer report) is a finding.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "planner/placement.h"
#include "planner/plan.h"

namespace pl = switchyard::planner;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json doc = nlohmann::json::parse(data, data + size, nullptr, false);
  if (doc.is_discarded()) return 0;  // not JSON: read_plan reports it before the parser runs
  pl::Plan plan;
  try {
    plan = pl::plan_from_json(doc);
  } catch (const switchyard::Error& e) {
    if (e.code() != switchyard::ErrorCode::invalid_argument) throw;
    return 0;
  }
  // Validate against the expert count the rows suggest (and one more, to see a missing one).
  int experts = 1;
  for (const auto& row : plan.phy2log) {
    for (int e : row) experts = std::max(experts, std::min(e, 1 << 16) + 1);
  }
  for (int num_experts : {experts, experts + 1}) {
    try {
      plan.validate(num_experts);
    } catch (const switchyard::Error& e) {
      if (e.code() != switchyard::ErrorCode::invalid_argument) throw;
      continue;
    }
    for (const auto& row : plan.phy2log) {
      try {
        pl::ExpertPlacement::from_slots(row, num_experts, plan.topology.num_devices());
      } catch (const switchyard::Error& e) {
        if (e.code() != switchyard::ErrorCode::invalid_argument) throw;
      }
    }
  }
  return 0;
}
