#include "comm/transport/mpi/mpi_transport.h"

#include <fmt/format.h>

#include <algorithm>

#include "comm/error.h"
#include "comm/transport/mpi/mpi_error.h"

namespace switchyard::comm {

MpiTransport::MpiTransport(MPI_Comm comm, size_t max_piece_bytes)
    : comm_(dup_with_error_return(comm)),
      max_piece_(std::clamp<size_t>(max_piece_bytes, 1, INT_MAX)) {
  MPI_Comm_size(comm_, &size_);
}

MpiTransport::~MpiTransport() {
  // Requests the caller never completed must not outlive the communicator they were posted on.
  for (size_t h = 0; h < slots_.size(); ++h) cancel_pieces(slots_[h], slot_is_send_[h]);
  MPI_Comm_free(&comm_);
}

std::string MpiTransport::describe() const {
  if (max_piece_ >= INT_MAX) return "mpi";
  return fmt::format("mpi (messages in pieces of <= {} bytes)", max_piece_);
}

Request MpiTransport::isend(int peer, const void* data, size_t bytes, int tag) {
  // MPI_Isend takes a non-const buffer only for MPI-2 compatibility; it never writes it.
  return post(true, peer, const_cast<void*>(data), bytes, tag);
}

Request MpiTransport::irecv(int peer, void* data, size_t bytes, int tag) {
  return post(false, peer, data, bytes, tag);
}

Request MpiTransport::post(bool is_send, int peer, void* data, size_t bytes, int tag) {
  SY_ENFORCE_ARG(!(peer < 0 || peer >= size_ || tag < 0 || (bytes > 0 && data == nullptr)),
                 "mpi transport {}: peer {} (world {}), tag {}, {} bytes at {}: need 0 <= peer < "
                 "world, tag >= 0 and a buffer for non-empty messages",
                 is_send ? "isend" : "irecv", peer, size_, tag, bytes, data);
  int handle = 0;
  if (free_slots_.empty()) {
    handle = static_cast<int>(slots_.size());
    slots_.emplace_back();
    slot_is_send_.push_back(is_send);
  } else {
    handle = free_slots_.back();
    free_slots_.pop_back();
    slot_is_send_[static_cast<size_t>(handle)] = is_send;
  }
  Request req{peer, is_send, bytes, handle};
  auto& pieces = slots_[static_cast<size_t>(handle)];
  // One piece even for zero bytes, so an empty message still matches its receive. Pieces of one
  // message share its tag; MPI's non-overtaking order keeps them matched in sequence.
  auto* base = static_cast<char*>(data);
  size_t offset = 0;
  do {
    const int count = static_cast<int>(std::min(max_piece_, bytes - offset));
    MPI_Request piece = MPI_REQUEST_NULL;
    const int rc = is_send ? MPI_Isend(base + offset, count, MPI_BYTE, peer, tag, comm_, &piece)
                           : MPI_Irecv(base + offset, count, MPI_BYTE, peer, tag, comm_, &piece);
    if (rc != MPI_SUCCESS) {
      cancel_pieces(pieces, is_send);  // those already posted
      release(req);
      check_mpi(rc, is_send ? "MPI_Isend" : "MPI_Irecv");
    }
    pieces.push_back(piece);
    offset += static_cast<size_t>(count);
  } while (offset < bytes);
  return req;
}

std::vector<MPI_Request>& MpiTransport::slot(const Request& req) {
  // A posted message always holds at least one piece; an empty slot is free.
  SY_ENFORCE_ARG(!(req.handle < 0 || static_cast<size_t>(req.handle) >= slots_.size() ||
                   slots_[static_cast<size_t>(req.handle)].empty()),
                 "mpi transport: request handle {} is not outstanding here (a stale copy of a "
                 "completed request?)",
                 req.handle);
  return slots_[static_cast<size_t>(req.handle)];
}

void MpiTransport::release(Request& req) {
  slots_[static_cast<size_t>(req.handle)].clear();
  free_slots_.push_back(req.handle);
  req.handle = -1;
}

bool MpiTransport::test(Request& req) {
  if (req.handle < 0) return true;  // completed (or cancelled) earlier: its slot was released
  auto& pieces = slot(req);
  int done = 0;
  check_mpi(MPI_Testall(static_cast<int>(pieces.size()), pieces.data(), &done, MPI_STATUSES_IGNORE),
            req.is_send ? "MPI_Testall(send)" : "MPI_Testall(receive)");
  if (done) release(req);
  return done != 0;
}

void MpiTransport::cancel(Request& req) {
  if (req.handle < 0) return;
  cancel_pieces(slot(req), req.is_send);
  release(req);
}

void MpiTransport::cancel_pieces(std::vector<MPI_Request>& pieces, bool is_send) {
  for (auto& piece : pieces) {
    if (piece == MPI_REQUEST_NULL) continue;
    MPI_Cancel(&piece);
    // A cancelled receive completes locally (MPI guarantees the wait returns), after which its
    // buffer is never written. Open MPI cannot cancel a send, and waiting on one would block on
    // the very peer that timed out, so sends are released instead.
    if (is_send) {
      MPI_Request_free(&piece);
    } else {
      MPI_Wait(&piece, MPI_STATUS_IGNORE);
    }
  }
  pieces.clear();
}

}  // namespace switchyard::comm
