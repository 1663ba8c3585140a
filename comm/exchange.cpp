#include "comm/exchange.h"

namespace switchyard::comm {

Exchange::~Exchange() {
  // Completed requests have a released handle, which cancel ignores.
  for (Request& req : requests_) comm_.transport().cancel(req);
}

void Exchange::send(int peer, const void* data, size_t bytes, int tag, int64_t rows) {
  requests_.push_back(comm_.transport().isend(peer, data, bytes, tag));
  if (stats_ == nullptr) return;
  stats_->bytes_sent += static_cast<int64_t>(bytes);
  const Topology& t = comm_.topology();
  if (t.node_of_rank[static_cast<size_t>(peer)] != t.node) {
    stats_->bytes_to_other_nodes += static_cast<int64_t>(bytes);
    stats_->rows_to_other_nodes += rows;
  }
}

void Exchange::recv(int peer, void* data, size_t bytes, int tag) {
  requests_.push_back(comm_.transport().irecv(peer, data, bytes, tag));
}

void Exchange::wait() {
  wait_all(comm_.transport(), requests_, comm_.timeout(), what_);
  requests_.clear();
}

}  // namespace switchyard::comm
