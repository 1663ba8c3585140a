// Argument checks shared by the CPU kernels: a bad argument is a caller bug, reported as
// switchyard::Error(invalid_argument) whose message names the kernel and the offending argument.
#pragma once

#include <sstream>

#include "base/error.h"

namespace switchyard::kernels::detail {

template <typename... Parts>
[[noreturn]] void invalid_argument(const Parts&... parts) {
  std::ostringstream msg;
  (msg << ... << parts);
  throw Error(ErrorCode::invalid_argument, msg.str());
}

}  // namespace switchyard::kernels::detail
