#include "comm/communicator.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <optional>
#include <utility>

#include "comm/environment.h"
#include "comm/error.h"
#include "comm/poll_pause.h"
#include "comm/tags.h"
#include "comm/transport/make_transport.h"
#include "comm/transport/mpi/mpi_error.h"
#include "comm/transport/mpi/mpi_transport.h"
#include "comm/transport/routed/routed_transport.h"
#include "comm/transport/ucx/ucx_transport.h"

// Persistent collectives: MPI 4's MPI_Allreduce_init, or Open MPI 4's MPIX_ extension of it.
#if MPI_VERSION >= 4
#define SWITCHYARD_ALLREDUCE_INIT MPI_Allreduce_init
#elif __has_include(<mpi-ext.h>)
#include <mpi-ext.h>
#if defined(OMPI_HAVE_MPI_EXT_PCOLLREQ) && OMPI_HAVE_MPI_EXT_PCOLLREQ
#define SWITCHYARD_ALLREDUCE_INIT MPIX_Allreduce_init
#endif
#endif

namespace switchyard::comm {

namespace {

// MPI counts are int: longer reductions run as several. Each piece's request goes to `settle`,
// which waits for it (allreduce_sum) or keeps it (start_allreduce_sum).
template <typename T>
void allreduce_in_pieces(T* data, size_t count, MPI_Datatype type, MPI_Comm comm,
                         const auto& settle) {
  SY_ENFORCE_ARG(!(count > 0 && data == nullptr), "allreduce_sum: null data for {} elements",
                 count);
  size_t offset = 0;
  do {
    const int n = static_cast<int>(std::min<size_t>(INT_MAX, count - offset));
    MPI_Request request = MPI_REQUEST_NULL;
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, data + offset, n, type, MPI_SUM, comm, &request),
              "MPI_Iallreduce");
    settle(request);
    offset += static_cast<size_t>(n);
  } while (offset < count);
}

std::string choose(const std::string& option, environment::LinkClass link,
                   const std::string& fallback) {
  if (!option.empty()) return option;
  const std::string value = environment::transport(link);
  return !value.empty() ? value : fallback;
}

// Inter-node messages over MPI travel as pieces under the eager limit of Open MPI's TCP path (64
// KiB with headers). A larger message waits for a rendezvous reply from its receiver, and over TCP
// that reply queues behind the bulk data the receiver itself is sending back on the same
// connection: in a hierarchical combine, where the two ranks of a rail pair send each other node
// sums at the same time, one direction of the link stalled until the other had drained (links at
// 65-78% of their rate; in pieces, ~90%). SWITCHYARD_MPI_PIECE (bytes; 0: whole messages) overrides
// it, e.g. for networks whose MPI moves large messages by RDMA.
constexpr size_t kInterNodeMpiPiece = 65536 - 512;
// UCX over TCP stalls the same way, and its rendezvous starts lower: measured on 2 x 4 at 1 Gbit/s,
// hierarchical combine at 62-65% of the link rate in whole messages or 32 KiB pieces, 83-84% in 16
// KiB pieces (dispatch 92%). SWITCHYARD_UCX_PIECE overrides it (0: whole messages, for RDMA).
constexpr size_t kInterNodeUcxPiece = 16384;

size_t inter_node_piece(std::optional<size_t> v, size_t fallback, size_t whole) {
  if (!v) return fallback;
  return *v == 0 ? whole : *v;
}

std::unique_ptr<Transport> make_inter_node_transport(const std::string& name, MPI_Comm comm) {
  if (name == "mpi") {
    return std::make_unique<MpiTransport>(
        comm, inter_node_piece(environment::mpi_piece(), kInterNodeMpiPiece, INT_MAX));
  }
  if (name == "ucx") {
    return std::make_unique<UcxTransport>(
        comm, inter_node_piece(environment::ucx_piece(), kInterNodeUcxPiece, SIZE_MAX));
  }
  return make_transport(name, comm);
}

std::string hostname() {
  char name[256] = {};
  SY_ENFORCE(gethostname(name, sizeof(name) - 1) == 0, ErrorCode::internal,
             "gethostname failed; cannot tell which ranks share a node");
  return name;
}

}  // namespace

std::chrono::milliseconds default_timeout() { return environment::timeout(); }

Communicator::Communicator(const StoreOptions& store, CommOptions options)
    : options_(std::move(options)) {
  SY_ENFORCE_ARG(options_.timeout.count() > 0, "CommOptions::timeout is {} ms; it must be positive",
                 options_.timeout.count());
  for (const auto& [option, link] :
       {std::pair{&options_.intra_transport, environment::LinkClass::intra},
        std::pair{&options_.inter_transport, environment::LinkClass::inter}}) {
    const char* env = environment::transport_variable(link);
    const std::string name = choose(*option, link, "ucx");
    SY_ENFORCE_ARG(name == "ucx",
                   "transport '{}' (CommOptions or {}) needs MPI; a context made without MPI moves "
                   "data over ucx only",
                   name, env);
  }
  store_ = std::make_unique<StoreGroup>(store);
  const std::string host = hostname();
  std::vector<std::string> hosts;
  for (const auto& bytes : store_->allgather("hostnames", std::as_bytes(std::span(host)))) {
    hosts.emplace_back(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  }
  topology_ = Topology::from_hostnames(store_->rank(), hosts);
  // A launcher's LOCAL_RANK must agree with the hostnames, or ranks would disagree on the nodes.
  SY_ENFORCE_ARG(!(store.local_rank >= 0 && store.local_rank != topology_.local_rank),
                 "rank {}: LOCAL_RANK is {} but the hostnames make it local rank {} of host {} "
                 "(ranks of a node must have consecutive RANKs, numbered as LOCAL_RANK)",
                 topology_.rank, store.local_rank, topology_.local_rank, host);
  transport_ = std::make_unique<UcxTransport>(*store_);
}

Communicator::Communicator(MPI_Comm comm, CommOptions options) : options_(std::move(options)) {
  SY_ENFORCE_ARG(options_.timeout.count() > 0, "CommOptions::timeout is {} ms; it must be positive",
                 options_.timeout.count());
  comm_ = dup_with_error_return(comm);
  try {
    topology_ = Topology::from_mpi(comm_);
    const std::string intra =
        choose(options_.intra_transport, environment::LinkClass::intra, options_.transport);
    std::string inter =
        choose(options_.inter_transport, environment::LinkClass::inter, options_.transport);
    if (inter == "shm") inter = "mpi";
    // Each link class gets its own transport where they differ, and where both are "mpi" or both
    // "ucx" across nodes (the inter-node one sends in pieces).
    const bool pieces_across = (inter == "mpi" || inter == "ucx") && topology_.num_nodes > 1;
    if (intra == inter && !pieces_across) {
      transport_ = make_transport(intra, comm_);
    } else {
      transport_ = std::make_unique<RoutedTransport>(
          make_transport(intra, comm_), make_inter_node_transport(inter, comm_), topology_);
    }
  } catch (...) {
    MPI_Comm_free(&comm_);
    throw;
  }
}

Communicator::~Communicator() {
  if (store_ && transport_ && transport_->peer_failed()) store_->abandon_peers();
  transport_.reset();  // frees the transport's own duplicate (or store barrier) first
  // Open MPI keeps progressing an abandoned collective and crashes once its communicator is
  // freed (measured: SIGSEGV in NBC_Progress at MPI_Finalize): that communicator is kept.
  if (comm_ != MPI_COMM_NULL && !collective_abandoned_) MPI_Comm_free(&comm_);
}

std::string Communicator::describe() const {
  return fmt::format("{}; transport {}; timeout {} ms", topology_.describe(),
                     transport_->describe(), options_.timeout.count());
}

void Communicator::override_topology(const Topology& topology) {
  SY_ENFORCE_ARG(
      !(topology.rank != rank() || topology.size != size() ||
        topology.node_of_rank.size() != static_cast<size_t>(size())),
      "override_topology: got rank {}/{} with {} node entries, but this communicator is rank {}/{}",
      topology.rank, topology.size, topology.node_of_rank.size(), rank(), size());
  topology_ = topology;
}

std::vector<int> Communicator::silent_ranks() {
  // Every rank that reached a collective and timed out holds one; their deadlines differ by how
  // far apart they arrived, so the window allows for that, bounded so that the error still comes
  // within a few seconds of the timeout.
  const auto window = std::clamp(options_.timeout / 4, std::chrono::milliseconds(500),
                                 std::chrono::milliseconds(3000));
  const int me = rank();
  std::vector<int> heard(size(), 0);
  std::vector<Request> sends, recvs;
  std::vector<int> recv_peer;
  try {
    for (int r = 0; r < size(); ++r) {
      if (r == me) continue;
      recvs.push_back(transport_->irecv(r, &heard[r], sizeof(int), kRollCallTag));
      recv_peer.push_back(r);
      sends.push_back(transport_->isend(r, &me, sizeof(int), kRollCallTag));
    }
    const auto deadline = std::chrono::steady_clock::now() + window;
    std::vector<bool> done(recvs.size(), false);
    size_t remaining = recvs.size();
    while (remaining > 0 && std::chrono::steady_clock::now() < deadline) {
      for (size_t i = 0; i < recvs.size(); ++i) {
        if (!done[i] && transport_->test(recvs[i])) {
          done[i] = true;
          --remaining;
          heard[recv_peer[i]] = 1;
        }
      }
      for (auto& send : sends) transport_->test(send);
      poll_pause();
    }
    for (size_t i = 0; i < recvs.size(); ++i) {
      if (!done[i]) transport_->cancel(recvs[i]);
    }
    for (auto& send : sends) {
      if (!transport_->test(send)) transport_->cancel(send);
    }
  } catch (const std::exception&) {
    // A transport that fails towards a dead peer answers the question too: whoever was not heard
    // from by then is named.
  }
  std::vector<int> silent;
  for (int r = 0; r < size(); ++r) {
    if (r != me && heard[r] == 0) silent.push_back(r);
  }
  return silent;
}

std::string Communicator::timeout_message(std::string_view what) {
  transport_->note_failed_peer();
  const std::vector<int> silent = silent_ranks();
  const std::string who =
      silent.empty()
          ? "every rank answered a roll call afterwards, so all are alive but at least one was in "
            "another call (every rank must make the same sequence of calls)"
          : fmt::format(
                "rank(s) {} did not answer a roll call afterwards: dead, stuck in an "
                "earlier call, or slower than the timeout",
                fmt::join(silent, ", "));
  return fmt::format(
      "{}: timed out after {} ms; {}. The collective cannot be resumed: this "
      "communicator is no longer usable, abort the job (or restart from a "
      "checkpoint). If the ranks are only slow, raise the timeout "
      "(SWITCHYARD_TIMEOUT seconds, --timeout, CommOptions::timeout)",
      what, options_.timeout.count(), who);
}

template <typename T>
void Communicator::allreduce_over_transport(T* data, size_t count) {
  SY_ENFORCE_ARG(!(count > 0 && data == nullptr), "allreduce_sum: null data for {} elements",
                 count);
  const size_t bytes = count * sizeof(T);
  std::vector<Request> requests;
  try {
    if (rank() == 0) {
      std::vector<T> others(count * static_cast<size_t>(size() - 1));
      for (int r = 1; r < size(); ++r) {
        requests.push_back(
            transport_->irecv(r, others.data() + (r - 1) * count, bytes, kCollectiveTag));
      }
      wait_all(*transport_, requests, options_.timeout, "allreduce_sum (gather on rank 0)",
               &interrupted_);
      // Rank order, whatever order the messages came in: the result is deterministic.
      for (int r = 1; r < size(); ++r) {
        const T* from = others.data() + (r - 1) * count;
        for (size_t i = 0; i < count; ++i) data[i] += from[i];
      }
      requests.clear();
      for (int r = 1; r < size(); ++r) {
        requests.push_back(transport_->isend(r, data, bytes, kCollectiveTag));
      }
      wait_all(*transport_, requests, options_.timeout, "allreduce_sum (result from rank 0)",
               &interrupted_);
    } else {
      // A copy to send from, as the result lands in data.
      const std::vector<T> mine(data, data + count);
      requests.push_back(transport_->isend(0, mine.data(), bytes, kCollectiveTag));
      requests.push_back(transport_->irecv(0, data, bytes, kCollectiveTag));
      wait_all(*transport_, requests, options_.timeout, "allreduce_sum (via rank 0)",
               &interrupted_);
    }
  } catch (const CommError& e) {
    if (e.code() != ErrorCode::timeout) throw;
    throw CommError(ErrorCode::timeout, timeout_message("allreduce_sum"));
  }
}

void Communicator::allreduce_sum(double* data, size_t count) {
  if (store_) return allreduce_over_transport(data, count);
  allreduce_in_pieces(data, count, MPI_DOUBLE, comm_,
                      [&](MPI_Request& r) { wait(r, "allreduce_sum"); });
}

void Communicator::allreduce_sum(float* data, size_t count) {
  if (store_) return allreduce_over_transport(data, count);
  allreduce_in_pieces(data, count, MPI_FLOAT, comm_,
                      [&](MPI_Request& r) { wait(r, "allreduce_sum"); });
}

void Communicator::allreduce_sum(int64_t* data, size_t count) {
  if (store_) return allreduce_over_transport(data, count);
  allreduce_in_pieces(data, count, MPI_INT64_T, comm_,
                      [&](MPI_Request& r) { wait(r, "allreduce_sum"); });
}

template <typename T>
PendingSum Communicator::start_sum(T* data, size_t count, MPI_Datatype type) {
  PendingSum pending;
  pending.comm_ = this;
  if (store_) {
    pending.deferred_ = [this, data, count] { allreduce_over_transport(data, count); };
    return pending;
  }
  // Started in the pieces allreduce_sum would use, so that every rank starts the same collectives.
  allreduce_in_pieces(data, count, type, comm_, [&](MPI_Request& r) {
    pending.requests_.push_back(r);
    r = MPI_REQUEST_NULL;
  });
  return pending;
}

PendingSum Communicator::start_allreduce_sum(float* data, size_t count) {
  return start_sum(data, count, MPI_FLOAT);
}

PendingSum Communicator::start_allreduce_sum(double* data, size_t count) {
  return start_sum(data, count, MPI_DOUBLE);
}

template <typename T>
std::unique_ptr<PersistentSum> Communicator::make_persistent_sum(T* data, size_t count,
                                                                 MPI_Datatype type) {
  SY_ENFORCE_ARG(!(count > 0 && data == nullptr), "persistent_sum: null data for {} elements",
                 count);
  return std::unique_ptr<PersistentSum>(new PersistentSum(*this, data, count, type));
}

std::unique_ptr<PersistentSum> Communicator::persistent_sum(float* data, size_t count) {
  return make_persistent_sum(data, count, MPI_FLOAT);
}

std::unique_ptr<PersistentSum> Communicator::persistent_sum(double* data, size_t count) {
  return make_persistent_sum(data, count, MPI_DOUBLE);
}

PersistentSum::PersistentSum(Communicator& comm, void* data, size_t count, MPI_Datatype type)
    : comm_(comm), data_(data), count_(count), type_(type) {
#ifdef SWITCHYARD_ALLREDUCE_INIT
  if (!comm.store_ && count <= static_cast<size_t>(INT_MAX)) {
    check_mpi(SWITCHYARD_ALLREDUCE_INIT(MPI_IN_PLACE, data, static_cast<int>(count), type, MPI_SUM,
                                        comm.comm_, MPI_INFO_NULL, &request_),
              "MPI_Allreduce_init");
  }
#endif
}

PersistentSum::~PersistentSum() {
  // A start abandoned by an error may still be active: it is left, as its communicator is.
  if (request_ != MPI_REQUEST_NULL && !comm_.collective_abandoned_) MPI_Request_free(&request_);
}

PendingSum PersistentSum::start() {
  if (request_ == MPI_REQUEST_NULL) {
    return type_ == MPI_FLOAT ? comm_.start_allreduce_sum(static_cast<float*>(data_), count_)
                              : comm_.start_allreduce_sum(static_cast<double*>(data_), count_);
  }
  check_mpi(MPI_Start(&request_), "MPI_Start (allreduce_sum)");
  PendingSum pending;
  pending.comm_ = &comm_;
  // The pending sum polls a copy of the handle: completed, the request stays for the next start.
  pending.requests_.push_back(request_);
  return pending;
}

PendingSum& PendingSum::operator=(PendingSum&& other) noexcept {
  if (this != &other) {
    abandon();
    comm_ = std::exchange(other.comm_, nullptr);
    requests_ = std::move(other.requests_);
    deferred_ = std::move(other.deferred_);
    other.requests_.clear();
    other.deferred_ = nullptr;
  }
  return *this;
}

PendingSum::~PendingSum() { abandon(); }

void PendingSum::abandon() {
  if (comm_ == nullptr) return;
  for (const MPI_Request& r : requests_) {
    if (r != MPI_REQUEST_NULL) comm_->collective_abandoned_ = true;
  }
  // Without MPI the peers wait for a sum this rank never sends, and time out naming it.
  comm_ = nullptr;
}

void PendingSum::progress() {
  for (MPI_Request& r : requests_) {
    if (r == MPI_REQUEST_NULL) continue;
    int done = 0;
    check_mpi(MPI_Test(&r, &done, MPI_STATUS_IGNORE), "allreduce_sum (started)");
    // A persistent request stays allocated when complete: only this copy is let go.
    if (done) r = MPI_REQUEST_NULL;
  }
}

void PendingSum::finish() {
  if (comm_ == nullptr) return;
  if (deferred_) {
    auto sum = std::move(deferred_);
    deferred_ = nullptr;
    comm_ = nullptr;
    sum();
    return;
  }
  for (MPI_Request& r : requests_) comm_->wait(r, "allreduce_sum");
  requests_.clear();
  comm_ = nullptr;
}

void Communicator::barrier() {
  if (store_) return allreduce_over_transport(static_cast<int64_t*>(nullptr), 0);
  MPI_Request request = MPI_REQUEST_NULL;
  check_mpi(MPI_Ibarrier(comm_, &request), "MPI_Ibarrier");
  wait(request, "barrier");
}

void Communicator::wait(MPI_Request& request, const char* what) {
  const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
  // Yield between polls, never sleep, whatever this thread's pauses: a nonblocking collective
  // advances only inside MPI_Test, one round at a time, so a pause per poll stretches it. Measured
  // on 4 ranks of 2 cores, a 69 MB all-reduce (the shared experts' gradients of DeepSeekMoE-16B):
  // 166 ms blocking, 236 ms polled with yields, 2086 ms polled with 0.5 ms sleeps.
  ScopedPollPause yield_between_polls(std::chrono::microseconds(0), std::chrono::microseconds(0));
  poll_pause_restart();
  while (true) {
    int done = 0;
    check_mpi(MPI_Test(&request, &done, MPI_STATUS_IGNORE), what);
    if (done) return;
    if (std::chrono::steady_clock::now() >= deadline) break;
    if (interrupted_.load(std::memory_order_relaxed)) {
      transport_->note_failed_peer();  // the collective stays pending: the peers are left in it
      collective_abandoned_ = true;
      throw CommError(ErrorCode::aborted,
                      fmt::format("{}: interrupted (the caller is shutting the operation down, "
                                  "e.g. sy_context_abort; an earlier error says why)",
                                  what));
    }
    poll_pause();  // ranks oversubscribe the cores: let the peers run
  }
  // MPI cannot cancel a collective, so the request stays pending and this communicator cannot
  // take part in another collective: say so rather than let the next call mismatch, and say who
  // is missing.
  collective_abandoned_ = true;
  throw CommError(ErrorCode::timeout, timeout_message(what));
}

}  // namespace switchyard::comm
