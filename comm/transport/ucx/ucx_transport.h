// Private: the "ucx" Transport, UCP tagged messages over whatever transports UCX selects (shared
// memory, TCP, InfiniBand, ...). Peers' worker addresses are exchanged once at start-up, over MPI
// or, for ranks launched without MPI, through the TCP store (StoreGroup); after that, data moves
// through UCX alone. A background thread polls the worker whenever the caller has not for 1 ms: over
// TCP, UCX keeps what a socket has not taken yet in its own buffers, and those drain only while the
// worker is polled, also after the caller has seen its sends complete and gone on to other work.
#pragma once

#include <mpi.h>
#include <ucp/api/ucp.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "comm/bootstrap/store_bootstrap.h"
#include "comm/transport/transport.h"

namespace switchyard::comm {

class UcxTransport final : public Transport {
 public:
  // A message is posted as pieces of at most max_piece_bytes (both ends must agree), each a UCP
  // tagged message of its own, matched in order. Inter-node, small pieces go eagerly: a rendezvous
  // reply would otherwise queue behind the bulk data its receiver is itself sending back on the
  // same connection (see make_inter_node_transport). The start-up and teardown barriers give up
  // after barrier_limit with CommError(timeout); in teardown (a rank that never arrives), the
  // transport then closes without it.
  explicit UcxTransport(MPI_Comm comm, size_t max_piece_bytes = SIZE_MAX,
                        std::chrono::milliseconds barrier_limit = std::chrono::seconds(30));
  // Without MPI: addresses and the start-up/teardown barriers go through group, which must
  // outlive the transport.
  explicit UcxTransport(StoreGroup& group);
  ~UcxTransport() override;
  UcxTransport(const UcxTransport&) = delete;
  UcxTransport& operator=(const UcxTransport&) = delete;

  std::string_view name() const override { return "ucx"; }
  std::string describe() const override;
  Request isend(int peer, const void* data, size_t bytes, int tag) override;
  Request irecv(int peer, void* data, size_t bytes, int tag) override;
  bool test(Request& req) override;
  void progress() override;
  void cancel(Request& req) override;

 private:
  Request post(int peer, std::byte* data, size_t bytes, int tag, bool is_send);
  // Frees what UCX still holds of pieces and empties the list.
  static void free_pieces(std::vector<void*>& pieces);
  void release(Request& req);
  // Waits, bounded, until every rank reaches this point, progressing UCX meanwhile: peers must not
  // destroy a worker that others are still wiring up to or sending to.
  void synchronize(const char* what);
  // Creates the worker and connects to every rank; gather returns every rank's worker address.
  using AddressGather = std::function<std::vector<std::vector<char>>(const ucp_address_t*, size_t)>;
  void connect(const AddressGather& gather);
  void teardown();
  void progress_in_background();
  // ucp_worker_progress from the caller's thread, noting when.
  void poll();
  static constexpr std::chrono::milliseconds kBackgroundPollPause{1};

  MPI_Comm comm_ = MPI_COMM_NULL;  // own duplicate, for start-up and teardown only
  StoreGroup* group_ = nullptr;    // instead of comm_, without MPI
  int rank_ = 0;
  int size_ = 0;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  std::vector<ucp_ep_h> endpoints_;
  size_t max_piece_ = SIZE_MAX;
  std::chrono::milliseconds barrier_limit_{std::chrono::seconds(30)};  // over MPI only
  bool barrier_abandoned_ = false;  // a barrier on comm_ timed out and is still pending
  // slots_[handle]: the UCX requests of one posted message's pieces; nullptr for a piece that
  // completed at posting.
  std::vector<std::vector<void*>> slots_;
  std::vector<bool> in_use_;
  std::vector<int> free_slots_;
  std::atomic<bool> stop_progress_{false};
  std::atomic<int64_t> last_poll_{0};  // steady_clock ticks of the caller's latest poll
  std::thread progress_thread_;
};

}  // namespace switchyard::comm
