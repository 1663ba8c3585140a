#include "comm/transport/routed/routed_transport.h"

#include <fmt/format.h>

#include "comm/error.h"

namespace switchyard::comm {

RoutedTransport::RoutedTransport(std::unique_ptr<Transport> intra, std::unique_ptr<Transport> inter,
                                 const Topology& topology)
    : intra_(std::move(intra)),
      inter_(std::move(inter)),
      topology_(topology),
      name_(fmt::format("intra={} inter={}", intra_->name(), inter_->name())) {}

std::string RoutedTransport::describe() const {
  return fmt::format("intra-node: {}; inter-node: {}", intra_->describe(), inter_->describe());
}

Transport& RoutedTransport::backend_for(int peer) {
  SY_ENFORCE_ARG(!(peer < 0 || static_cast<size_t>(peer) >= topology_.node_of_rank.size()),
                 "{} transport: peer {} is not a rank of this communicator (world {})", name_, peer,
                 topology_.node_of_rank.size());
  return topology_.node_of_rank[static_cast<size_t>(peer)] == topology_.node ? *intra_ : *inter_;
}

Request RoutedTransport::wrap(Request inner, const Transport& backend) const {
  if (inner.handle >= 0) inner.handle = inner.handle * 2 + (&backend == intra_.get() ? 0 : 1);
  return inner;
}

Request RoutedTransport::isend(int peer, const void* data, size_t bytes, int tag) {
  Transport& backend = backend_for(peer);
  return wrap(backend.isend(peer, data, bytes, tag), backend);
}

Request RoutedTransport::irecv(int peer, void* data, size_t bytes, int tag) {
  Transport& backend = backend_for(peer);
  return wrap(backend.irecv(peer, data, bytes, tag), backend);
}

bool RoutedTransport::test(Request& req) {
  if (req.handle < 0) return true;
  Transport& backend = backend_of(req);
  Request inner = req;
  inner.handle = req.handle / 2;
  const bool done = backend.test(inner);
  req = wrap(inner, backend);
  // A rank whose own wait is on one link class may still owe its peers data on the other (a ucx
  // send to another node while waiting for a relay over shm): without this, two nodes could each
  // wait for the other's unread sockets.
  (&backend == intra_.get() ? *inter_ : *intra_).progress();
  return done;
}

void RoutedTransport::cancel(Request& req) {
  if (req.handle < 0) return;
  Transport& backend = backend_of(req);
  Request inner = req;
  inner.handle = req.handle / 2;
  backend.cancel(inner);
  req = wrap(inner, backend);
}

void RoutedTransport::note_failed_peer() {
  Transport::note_failed_peer();
  intra_->note_failed_peer();
  inter_->note_failed_peer();
}

}  // namespace switchyard::comm
