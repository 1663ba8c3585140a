// Private: a Transport that sends each message over one of two backends by link class, the intra
// backend (e.g. shm) to ranks on this rank's node and the inter backend (e.g. mpi) to the others.
// Nodes are those of the communicator's current topology, so tests that simulate several nodes on
// one machine route between simulated nodes over the inter backend.
#pragma once

#include <memory>
#include <string>

#include "comm/bootstrap/topology.h"
#include "comm/transport/transport.h"

namespace switchyard::comm {

class RoutedTransport final : public Transport {
 public:
  // topology must outlive this transport (the communicator owns both). Change it only while no
  // message is in flight: two messages of one pair and tag keep their order only on one backend.
  RoutedTransport(std::unique_ptr<Transport> intra, std::unique_ptr<Transport> inter,
                  const Topology& topology);

  std::string_view name() const override { return name_; }
  std::string describe() const override;
  Request isend(int peer, const void* data, size_t bytes, int tag) override;
  Request irecv(int peer, void* data, size_t bytes, int tag) override;
  bool test(Request& req) override;
  void cancel(Request& req) override;
  void note_failed_peer() override;

 private:
  // A routed request's handle is the backend's handle times two plus the backend's index, so that
  // test and cancel find the backend even if the topology changed since.
  Transport& backend_of(const Request& req) { return req.handle % 2 == 0 ? *intra_ : *inter_; }
  Transport& backend_for(int peer);
  Request wrap(Request inner, const Transport& backend) const;

  std::unique_ptr<Transport> intra_;
  std::unique_ptr<Transport> inter_;
  const Topology& topology_;
  std::string name_;
};

}  // namespace switchyard::comm
