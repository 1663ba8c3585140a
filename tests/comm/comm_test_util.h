// Helpers shared by the comm tests.
#pragma once

#include <chrono>
#include <string_view>

#include "comm/communicator.h"

namespace switchyard::comm::test {

// Generous, but bounded: a rank that fails an expectation and skips a call makes its peers time
// out with a CommError instead of hanging the test.
inline CommOptions test_options() {
  CommOptions options;
  options.timeout = std::chrono::seconds(10);
  return options;
}

inline bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

}  // namespace switchyard::comm::test
