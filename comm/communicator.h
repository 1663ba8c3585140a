// A group of ranks: its topology, its transport, the default timeout for every wait on a peer, and
// the small bounded collectives (all-reduce, barrier) the runtime needs besides the all-to-all.
#pragma once

#include <mpi.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "comm/bootstrap/store_bootstrap.h"
#include "comm/bootstrap/topology.h"
#include "comm/transport/transport.h"

namespace switchyard::comm {

// SWITCHYARD_TIMEOUT (seconds, decimals allowed, in (0, 7 days]) when set, else 120 s: the one
// place every launcher's timeout comes from unless a program sets its own. Throws
// CommError(invalid_argument) naming the variable when it is malformed.
std::chrono::milliseconds default_timeout();

struct CommOptions {
  // The transport of every link unless a link class names its own.
  std::string transport = "mpi";
  // Per link class (ranks on this rank's node; ranks on other nodes). Empty: the environment
  // variable SWITCHYARD_INTRA / SWITCHYARD_INTER if set, else `transport`, except that an
  // inter-node link never gets "shm" (it reaches only its own node) and falls back to "mpi".
  // Different choices for the two classes give a routing transport (RoutedTransport).
  std::string intra_transport;
  std::string inter_transport;
  // Bound on every wait for a peer.
  std::chrono::milliseconds timeout = default_timeout();
};

class Communicator;

// An all-reduce started by Communicator::start_allreduce_sum and not finished yet: the caller
// computes meanwhile, calls progress() now and then (MPI advances a nonblocking collective only
// inside its own calls) and finish() before it reads the sums. finish() waits as allreduce_sum
// does (bounded, interruptible, naming the silent ranks). Destroyed unfinished (an error unwound
// past it), it leaves its communicator unable to take part in another collective, as a timed-out
// collective does.
class PendingSum {
 public:
  PendingSum() = default;
  PendingSum(PendingSum&& other) noexcept { *this = std::move(other); }
  PendingSum& operator=(PendingSum&& other) noexcept;
  ~PendingSum();

  bool active() const { return comm_ != nullptr; }
  void progress();
  void finish();

 private:
  friend class Communicator;
  friend class PersistentSum;
  void abandon();

  Communicator* comm_ = nullptr;
  std::vector<MPI_Request> requests_;
  std::function<void()> deferred_;  // without MPI: the sum runs in finish()
};

// The sum of one buffer, set up once and started again whenever it is needed: MPI keeps the
// collective's schedule and temporary buffer between starts (MPI 4's MPI_Allreduce_init, Open MPI
// 4's MPIX_ extension of it). A fresh MPI_Iallreduce allocates that buffer (as large as the data)
// each time, and maps and faults it in anew whenever the heap has moved on: 16896 minor faults in
// the second step of DeepSeekMoE-16B on 4 ranks, from the shared experts' 69 MB gradient sum.
// Made by Communicator::persistent_sum, collectively: every rank makes its persistent sums at the
// same point of the same sequence of collectives (MPI numbers them). Without persistent
// collectives (another MPI, a count above INT_MAX, a store-mode communicator) start() is
// start_allreduce_sum. data must stay where it is while the object lives.
class PersistentSum {
 public:
  PersistentSum(const PersistentSum&) = delete;
  PersistentSum& operator=(const PersistentSum&) = delete;
  ~PersistentSum();

  // As start_allreduce_sum(data, count); one at a time (finish the last before starting again).
  PendingSum start();
  // Whether this is the sum of exactly that buffer.
  bool covers(const void* data, size_t count) const { return data == data_ && count == count_; }

 private:
  friend class Communicator;
  PersistentSum(Communicator& comm, void* data, size_t count, MPI_Datatype type);

  Communicator& comm_;
  void* data_;
  size_t count_;
  MPI_Datatype type_;
  MPI_Request request_ = MPI_REQUEST_NULL;  // null: start() falls back to start_allreduce_sum
};

class Communicator {
 public:
  // Duplicates comm, so switchyard's traffic never matches the caller's messages.
  explicit Communicator(MPI_Comm comm, CommOptions options = {});
  // Without MPI (torchrun-style launch): meets the other ranks at the TCP store (store: resolved
  // StoreOptions), takes the topology from their hostnames, and moves every message, the
  // all-reduce and barrier included, over the ucx transport. options.transport is not used; a
  // link class may only name "ucx".
  Communicator(const StoreOptions& store, CommOptions options);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return topology_.rank; }
  int size() const { return topology_.size; }
  const Topology& topology() const { return topology_; }
  // Carries every message; a RoutedTransport when the two link classes chose different ones.
  Transport& transport() { return *transport_; }
  std::chrono::milliseconds timeout() const { return options_.timeout; }
  // One line for the runtime's start-up log: topology, transports per link class, timeout.
  std::string describe() const;
  // Replaces the discovered topology (tests simulate several nodes on one machine). Call it before
  // any traffic: the topology also decides which link class, hence transport, a peer uses.
  void override_topology(const Topology& topology);

  // In-place sum over all ranks (MPI_Iallreduce polled against the timeout; without MPI, summed
  // on rank 0 in rank order and sent back, so every rank gets the same bits).
  void allreduce_sum(double* data, size_t count);
  void allreduce_sum(float* data, size_t count);
  void allreduce_sum(int64_t* data, size_t count);
  // The same sum, started now and finished by the returned PendingSum, so that it travels while
  // the caller computes (the layer's backward: the shared experts' gradients while the routed
  // experts' run). data must stay untouched until finish(). Without MPI the sum runs in finish().
  PendingSum start_allreduce_sum(float* data, size_t count);
  PendingSum start_allreduce_sum(double* data, size_t count);
  // The same sum of data, set up once to be started at every call (PersistentSum). Collective.
  std::unique_ptr<PersistentSum> persistent_sum(float* data, size_t count);
  std::unique_ptr<PersistentSum> persistent_sum(double* data, size_t count);
  void barrier();

  // Makes every wait in progress or started later (all-to-all, all-reduce, barrier) give up at
  // once with CommError(aborted), cancelling its transfers, until clear_interrupt(). Safe from any
  // thread: a pipelined layer calls it to stop its communication thread when the step fails. The
  // peers of an interrupted exchange are left waiting for it and time out; the communicator should
  // not carry further collective traffic.
  void interrupt() { interrupted_.store(true, std::memory_order_relaxed); }
  void clear_interrupt() { interrupted_.store(false, std::memory_order_relaxed); }
  const std::atomic<bool>& interrupted() const { return interrupted_; }

 private:
  friend class PendingSum;
  friend class PersistentSum;
  void wait(MPI_Request& request, const char* what);
  template <typename T>
  PendingSum start_sum(T* data, size_t count, MPI_Datatype type);
  template <typename T>
  std::unique_ptr<PersistentSum> make_persistent_sum(T* data, size_t count, MPI_Datatype type);
  // After a collective timed out: every rank that also timed out answers a roll call over the
  // transport; the ranks not heard from within a short window (a few seconds) are returned.
  std::vector<int> silent_ranks();
  // The timeout error of a collective, naming the silent ranks.
  std::string timeout_message(std::string_view what);
  template <typename T>
  void allreduce_over_transport(T* data, size_t count);

  MPI_Comm comm_ = MPI_COMM_NULL;      // MPI mode
  std::unique_ptr<StoreGroup> store_;  // store mode; outlives transport_
  CommOptions options_;
  Topology topology_;
  std::unique_ptr<Transport> transport_;
  std::atomic<bool> interrupted_{false};
  bool collective_abandoned_ = false;  // a collective timed out or was interrupted, still pending
};

}  // namespace switchyard::comm
