// Every environment variable runtime/ reads, read here and nowhere else in runtime/ (comm/'s are in
// comm/environment.h, the kernels' in kernels/environment.h; docs/reference.md lists them all).
// Each reader looks at the environment when it is called: tests change variables between calls,
// and a malformed value is refused where the setting is used, not by every reader. Malformed values
// throw Error(invalid_argument) naming the variable and the values it takes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "runtime/thread_priority.h"

namespace switchyard::environment {

inline constexpr const char* kMallocReuse = "SWITCHYARD_MALLOC_REUSE";
inline constexpr const char* kTrace = "SWITCHYARD_TRACE";
inline constexpr const char* kFault = "SWITCHYARD_FAULT";
inline constexpr const char* kCommThreadPriority = "SWITCHYARD_COMM_THREAD_PRIORITY";
inline constexpr const char* kCheckpointCrashAfter = "SWITCHYARD_CHECKPOINT_CRASH_AFTER";
inline constexpr const char* kCheckpointCrashRank = "SWITCHYARD_CHECKPOINT_CRASH_RANK";

// SWITCHYARD_MALLOC_REUSE: unset or "1" -> true (keep freed buffers for reuse), "0" -> false.
bool malloc_reuse();

// SWITCHYARD_TRACE: the path the layer's trace is written to; "" when unset.
std::string trace_path();

// SWITCHYARD_FAULT: the fault to inject, as set (runtime/fault_injection.h checks it); nullopt
// when unset.
std::optional<std::string> fault_spec();

// SWITCHYARD_COMM_THREAD_PRIORITY: unset or "normal" -> normal, "realtime" -> realtime.
ThreadPriority comm_thread_priority();

// SWITCHYARD_CHECKPOINT_CRASH_AFTER: the write point of a checkpoint at which a rank exits (test
// hook; atoll of the value); 0 when unset.
int64_t checkpoint_crash_after();

// SWITCHYARD_CHECKPOINT_CRASH_RANK: the only rank that crashes (atoi of the value); nullopt, every
// rank, when unset.
std::optional<int> checkpoint_crash_rank();

}  // namespace switchyard::environment
