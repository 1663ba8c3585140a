// libFuzzer harness: bytes as a moe-placement-workload/v1 document (planner/workload.h), parsed and
// validated by workload_from_json without a routes file (folder ""). Documented failures are
// switchyard::Error(invalid_argument); anything else is a finding.
#include <cstddef>
#include <cstdint>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "planner/workload.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json doc = nlohmann::json::parse(data, data + size, nullptr, false);
  if (doc.is_discarded()) return 0;
  try {
    const auto w = switchyard::planner::workload_from_json(doc, "");
    (void)w;
  } catch (const switchyard::Error& e) {
    if (e.code() != switchyard::ErrorCode::invalid_argument) throw;
  }
  return 0;
}
