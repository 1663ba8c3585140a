// Private: one round of point-to-point messages of an all-to-all algorithm. Posts sends and
// receives on the communicator's transport, counts what it sends (and what of it leaves the node)
// into an AllToAllStats, waits for them within the communicator's timeout, and cancels whatever is
// still pending if it is destroyed first (an error unwinding), before the buffers go away.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "comm/alltoall.h"
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

  // rows: how many token or result rows the message carries, for the statistics.
  void send(int peer, const void* data, size_t bytes, int tag, int64_t rows = 0);
  void recv(int peer, void* data, size_t bytes, int tag);
  // Waits for everything posted so far; throws CommError(timeout) naming the silent peers.
  void wait();

 private:
  Communicator& comm_;
  PhaseStats* stats_;
  const char* what_;
  std::vector<Request> requests_;
};

}  // namespace switchyard::comm
