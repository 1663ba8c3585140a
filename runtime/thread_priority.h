// The scheduling priority of the layer's communication thread. When ranks share cores with their
// compute (more ranks than cores, or CPU experts), a woken communication thread can wait behind
// the compute threads before it polls again, and the transfers it drives stall meanwhile.
// SWITCHYARD_COMM_THREAD_PRIORITY=realtime runs it under SCHED_RR at the lowest real-time
// priority, so it runs as soon as it wakes; it sleeps between polls (CommQueue), so it takes the
// CPU only for the polls themselves. The kernel still keeps 5% of each core for normal threads
// (sched_rt_runtime_us).
#pragma once

#include <thread>

namespace switchyard {

enum class ThreadPriority { normal, realtime };

// SWITCHYARD_COMM_THREAD_PRIORITY: unset or "normal" -> normal, "realtime" -> realtime. Throws
// Error(invalid_argument) naming the variable and the accepted values otherwise.
ThreadPriority comm_thread_priority_from_env();
const char* thread_priority_name(ThreadPriority priority);

// Gives the running thread `thread` the priority. Throws Error(unsupported) saying what the
// process lacks (CAP_SYS_NICE or an RLIMIT_RTPRIO of at least 1) when the system refuses.
void set_thread_priority(std::thread& thread, ThreadPriority priority);

// Whether a thread of this process may be given `priority`, tried on a short-lived thread, so
// that a layer refuses it when made rather than at its first pipelined call. Throws as
// set_thread_priority does.
void require_thread_priority(ThreadPriority priority);

}  // namespace switchyard
