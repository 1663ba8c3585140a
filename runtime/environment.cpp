#include "runtime/environment.h"

#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "base/error.h"

namespace switchyard::environment {

bool malloc_reuse() {
  const char* value = std::getenv(kMallocReuse);
  if (value == nullptr || std::string(value) == "1") return true;
  if (std::string(value) == "0") return false;
  throw Error(ErrorCode::invalid_argument,
              "SWITCHYARD_MALLOC_REUSE must be 0 (leave glibc's malloc settings alone) or 1 "
              "(keep freed buffers up to 1 GiB for reuse, the default), got '" +
                  std::string(value) + "'");
}

std::string trace_path() {
  const char* path = std::getenv(kTrace);
  return path ? path : "";
}

std::optional<std::string> fault_spec() {
  const char* value = std::getenv(kFault);
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

ThreadPriority comm_thread_priority() {
  const char* value = std::getenv(kCommThreadPriority);
  if (value == nullptr || std::strcmp(value, "normal") == 0) return ThreadPriority::normal;
  if (std::strcmp(value, "realtime") == 0) return ThreadPriority::realtime;
  throw Error(ErrorCode::invalid_argument,
              fmt::format("{}='{}': expected normal or realtime (or leave it unset)",
                          kCommThreadPriority, value));
}

int64_t checkpoint_crash_after() {
  const char* v = std::getenv(kCheckpointCrashAfter);
  return v != nullptr ? std::atoll(v) : int64_t(0);
}

std::optional<int> checkpoint_crash_rank() {
  const char* only = std::getenv(kCheckpointCrashRank);
  if (only == nullptr) return std::nullopt;
  return std::atoi(only);
}

}  // namespace switchyard::environment
