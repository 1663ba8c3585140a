// Private: the "mpi" Transport, MPI_Isend / MPI_Irecv of MPI_BYTE on its own duplicate of a
// communicator. Exposed here (not in transport.h) so tests can shrink the piece size.
#pragma once

#include <mpi.h>

#include <climits>
#include <vector>

#include "comm/transport/transport.h"

namespace switchyard::comm {

class MpiTransport final : public Transport {
 public:
  // MPI counts are int, so a message is posted as pieces of at most max_piece_bytes; both ends
  // split the same way, so a receive must name the exact size of its message.
  explicit MpiTransport(MPI_Comm comm, size_t max_piece_bytes = INT_MAX);
  ~MpiTransport() override;
  MpiTransport(const MpiTransport&) = delete;
  MpiTransport& operator=(const MpiTransport&) = delete;

  std::string_view name() const override { return "mpi"; }
  std::string describe() const override;
  Request isend(int peer, const void* data, size_t bytes, int tag) override;
  Request irecv(int peer, void* data, size_t bytes, int tag) override;
  bool test(Request& req) override;
  void cancel(Request& req) override;

 private:
  Request post(bool is_send, int peer, void* data, size_t bytes, int tag);
  std::vector<MPI_Request>& slot(const Request& req);
  void release(Request& req);
  void cancel_pieces(std::vector<MPI_Request>& pieces, bool is_send);

  MPI_Comm comm_ = MPI_COMM_NULL;
  int size_ = 0;
  size_t max_piece_;
  // slots_[handle] holds the MPI requests of one posted message's pieces.
  std::vector<std::vector<MPI_Request>> slots_;
  std::vector<bool> slot_is_send_;
  std::vector<int> free_slots_;
};

}  // namespace switchyard::comm
