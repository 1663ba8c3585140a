// comm/'s names for the library's one exception type (base/error.h): CommError is
// switchyard::Error and ErrorCode is switchyard::ErrorCode, so a catch of either catches both.
#pragma once

#include "base/error.h"

namespace switchyard::comm {

// aborted: Communicator::interrupt() stopped a wait (e.g. a pipelined step shutting down).
using switchyard::ErrorCode;
using CommError = switchyard::Error;

}  // namespace switchyard::comm
