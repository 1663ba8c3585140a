// How a thread that polls transfers gives the core away between polls. Ranks oversubscribe the
// cores, so a busy poll would starve the peers being waited on; the default is sched_yield. A
// background communication thread (a pipelined MoE step) instead sleeps briefly, so that it takes
// little from the compute threads of its own and the other ranks while the kernel's socket buffers
// and the peers keep the data moving.
#pragma once

#include <chrono>

namespace switchyard::comm {

// For the calling thread: pause = 0 yields (the default); > 0 sleeps that long between polls.
void set_poll_pause(std::chrono::microseconds pause);
std::chrono::microseconds poll_pause_of_this_thread();

// Called by every wait loop after a poll that left requests pending.
void poll_pause();

}  // namespace switchyard::comm
