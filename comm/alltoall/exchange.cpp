#include "comm/alltoall/exchange.h"

#include <chrono>

#include "comm/poll_pause.h"

namespace switchyard::comm {

Exchange::~Exchange() {
  // Completed requests have a released handle, which cancel ignores.
  for (Request& req : requests_) comm_.transport().cancel(req);
}

size_t Exchange::send(int peer, const void* data, size_t bytes, int tag, int64_t rows) {
  requests_.push_back(comm_.transport().isend(peer, data, bytes, tag));
  done_.push_back(0);
  ++pending_;
  if (stats_ != nullptr) {
    stats_->bytes_sent += static_cast<int64_t>(bytes);
    const Topology& t = comm_.topology();
    if (t.node_of_rank[static_cast<size_t>(peer)] != t.node) {
      stats_->bytes_to_other_nodes += static_cast<int64_t>(bytes);
      stats_->rows_to_other_nodes += rows;
    }
  }
  return requests_.size() - 1;
}

size_t Exchange::recv(int peer, void* data, size_t bytes, int tag) {
  requests_.push_back(comm_.transport().irecv(peer, data, bytes, tag));
  done_.push_back(0);
  ++pending_;
  return requests_.size() - 1;
}

void Exchange::poll() {
  Transport& transport = comm_.transport();
  for (size_t i = 0; i < requests_.size(); ++i) {
    if (!done_[i] && transport.test(requests_[i])) {
      done_[i] = 1;
      --pending_;
    }
  }
}

bool Exchange::done(size_t index) {
  if (!done_[index] && comm_.transport().test(requests_[index])) {
    done_[index] = 1;
    --pending_;
  }
  return done_[index] != 0;
}

void Exchange::wait_for(std::span<const size_t> which) {
  const auto deadline = std::chrono::steady_clock::now() + comm_.timeout();
  poll_pause_restart();
  while (true) {
    poll();
    bool all = true;
    for (size_t i : which) all = all && done_[i];
    if (all) return;
    if (std::chrono::steady_clock::now() >= deadline) break;
    if (comm_.interrupted().load(std::memory_order_relaxed)) break;
    poll_pause();
  }
  // wait_all with no time left cancels the ones still pending and names their peers (or reports
  // the interrupt).
  std::vector<Request> pending;
  std::vector<size_t> index;
  for (size_t i : which) {
    if (done_[i]) continue;
    pending.push_back(requests_[i]);
    index.push_back(i);
  }
  try {
    wait_all(comm_.transport(), pending, std::chrono::milliseconds(0), what_,
             &comm_.interrupted());
  } catch (...) {
    for (size_t k = 0; k < index.size(); ++k) requests_[index[k]] = pending[k];
    throw;
  }
  for (size_t k = 0; k < index.size(); ++k) {
    requests_[index[k]] = pending[k];
    done_[index[k]] = 1;
    --pending_;
  }
}

void Exchange::wait() {
  if (pending_ > 0) {
    std::vector<Request> pending;
    std::vector<size_t> index;
    for (size_t i = 0; i < requests_.size(); ++i) {
      if (done_[i]) continue;
      pending.push_back(requests_[i]);
      index.push_back(i);
    }
    try {
      wait_all(comm_.transport(), pending, comm_.timeout(), what_, &comm_.interrupted());
    } catch (...) {
      for (size_t k = 0; k < index.size(); ++k) requests_[index[k]] = pending[k];
      throw;
    }
  }
  requests_.clear();
  done_.clear();
  pending_ = 0;
}

}  // namespace switchyard::comm
