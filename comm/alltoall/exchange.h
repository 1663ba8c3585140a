// Private: one round of point-to-point messages of an all-to-all algorithm. Posts sends and
// receives on the communicator's transport, counts what it sends (and what of it leaves the node)
// into an AllToAllStats, waits for them within the communicator's timeout, and cancels whatever is
// still pending if it is destroyed first (an error unwinding), before the buffers go away.
//
// A pipelined algorithm waits for some of its messages while others are still in flight
// (wait_for): every outstanding request of the exchange is tested on each pass, so all of them keep
// moving (a transport such as shm only progresses while it is polled), and the wait is bounded by
// the communicator's timeout like wait().
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "comm/alltoall/alltoall.h"
#include "comm/communicator.h"

namespace switchyard::comm {

class Exchange {
 public:
  // stats may be null (metadata rounds are not counted).
  Exchange(Communicator& comm, PhaseStats* stats, const char* what)
      : comm_(comm), stats_(stats), what_(what) {}
  ~Exchange();
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  // rows: how many token or result rows the message carries, for the statistics. Both return the
  // request's index in this exchange, for wait_for and done.
  size_t send(int peer, const void* data, size_t bytes, int tag, int64_t rows = 0);
  size_t recv(int peer, void* data, size_t bytes, int tag);
  // Waits for everything posted so far; throws CommError(timeout) naming the silent peers.
  void wait();
  // Waits until the requests `which` have completed, progressing every other one meanwhile;
  // throws CommError(timeout) naming the peers of those still pending.
  void wait_for(std::span<const size_t> which);
  // Whether request `index` has completed (tests it once if not known yet).
  bool done(size_t index);

 private:
  void poll();

  Communicator& comm_;
  PhaseStats* stats_;
  const char* what_;
  std::vector<Request> requests_;
  std::vector<char> done_;
  size_t pending_ = 0;
};

}  // namespace switchyard::comm
