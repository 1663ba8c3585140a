// Point-to-point byte transport: the layer every all-to-all algorithm is built on. Backends live
// one per folder beside this file (mpi/, shm/, ucx/, routed/) and are chosen by name
// (make_transport.h); this interface needs no MPI.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace switchyard::comm {

// A posted send or receive. Owned by the caller until test() reports it complete.
struct Request {
  int peer = -1;
  bool is_send = false;
  size_t bytes = 0;
  int handle = -1;  // backend-specific slot
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual std::string_view name() const = 0;
  // One line for start-up logs: the name and the settings that matter (e.g. shm's channel sizes).
  virtual std::string describe() const { return std::string(name()); }
  // Messages between one pair with one tag arrive in the order they were posted.
  virtual Request isend(int peer, const void* data, size_t bytes, int tag) = 0;
  virtual Request irecv(int peer, void* data, size_t bytes, int tag) = 0;
  // Advances outstanding transfers; true once req has completed (its buffer may then be reused).
  virtual bool test(Request& req) = 0;
  // Advances outstanding transfers without testing one. Backends that move data only while polled
  // (shm, ucx) implement it, so that a rank waiting on another backend's requests keeps moving the
  // data its peers are waiting for (RoutedTransport).
  virtual void progress() {}
  // Abandons a request that has not completed (wait_all does this on a timeout, before the
  // caller's buffers go away): a receive is cancelled and will never write its buffer; a send is
  // cancelled where the backend can, else released, so a late receiver may still get its bytes.
  virtual void cancel(Request& req) = 0;
  // A wait on a peer timed out (wait_all and the communicator's collectives say so): the peers
  // may be dead, so teardown must not wait for them again.
  virtual void note_failed_peer() { peer_failed_.store(true, std::memory_order_relaxed); }
  bool peer_failed() const { return peer_failed_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> peer_failed_{false};
};

// Waits until every request completes. Waits are bounded: past `timeout` it cancels the requests
// still pending and throws CommError(timeout) naming `what` and the peers whose transfers did not
// complete (and notes the failure on the transport, note_failed_peer). When `interrupt` is given and becomes true, it cancels them the same way and throws
// CommError(aborted).
void wait_all(Transport& transport, std::span<Request> requests, std::chrono::milliseconds timeout,
              std::string_view what, const std::atomic<bool>* interrupt = nullptr);

}  // namespace switchyard::comm
