#include "comm/transport/ucx/ucx_transport.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <thread>

#include "comm/error.h"

namespace switchyard::comm {

namespace {

// A UCP tag carries the switchyard tag and the sender, so a receive matches exactly one peer and
// tag, as an MPI receive does.
constexpr ucp_tag_t kFullMask = ~ucp_tag_t{0};

ucp_tag_t ucx_tag(int tag, int source) {
  return (static_cast<ucp_tag_t>(static_cast<uint32_t>(tag)) << 32) | static_cast<uint32_t>(source);
}

void check_ucs(ucs_status_t status, const char* what) {
  SY_ENFORCE(status == UCS_OK, ErrorCode::internal, "ucx transport: {} failed: {}", what,
             ucs_status_string(status));
}

void check_mpi_rc(int rc, const char* what) {
  SY_ENFORCE(rc == MPI_SUCCESS, ErrorCode::internal, "ucx transport: {} failed (MPI error {})",
             what, rc);
}

}  // namespace

UcxTransport::UcxTransport(MPI_Comm comm, size_t max_piece_bytes,
                           std::chrono::milliseconds barrier_limit)
    : max_piece_(std::max<size_t>(max_piece_bytes, 1)), barrier_limit_(barrier_limit) {
  check_mpi_rc(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
  comm = comm_;
  MPI_Comm_rank(comm, &rank_);
  MPI_Comm_size(comm, &size_);
  connect([&](const ucp_address_t* address, size_t address_length) {
    // Every rank's worker address, gathered over MPI (the only use of MPI on this transport).
    int my_length = static_cast<int>(address_length);
    std::vector<int> lengths(size_), offsets(size_ + 1, 0);
    check_mpi_rc(MPI_Allgather(&my_length, 1, MPI_INT, lengths.data(), 1, MPI_INT, comm),
                 "MPI_Allgather of address lengths");
    for (int r = 0; r < size_; ++r) offsets[r + 1] = offsets[r] + lengths[r];
    std::vector<char> addresses(offsets[size_]);
    check_mpi_rc(MPI_Allgatherv(address, my_length, MPI_BYTE, addresses.data(), lengths.data(),
                                offsets.data(), MPI_BYTE, comm),
                 "MPI_Allgatherv of worker addresses");
    std::vector<std::vector<char>> all(size_);
    for (int r = 0; r < size_; ++r) {
      all[r].assign(addresses.begin() + offsets[r], addresses.begin() + offsets[r + 1]);
    }
    return all;
  });
}

UcxTransport::UcxTransport(StoreGroup& group) : group_(&group) {
  rank_ = group.rank();
  size_ = group.size();
  connect([&](const ucp_address_t* address, size_t address_length) {
    const auto gathered = group.allgather(
        "ucx/addresses", std::span(reinterpret_cast<const std::byte*>(address), address_length));
    std::vector<std::vector<char>> all(size_);
    for (int r = 0; r < size_; ++r) {
      const auto& bytes = gathered[r];
      all[r].assign(reinterpret_cast<const char*>(bytes.data()),
                    reinterpret_cast<const char*>(bytes.data()) + bytes.size());
    }
    return all;
  });
}

void UcxTransport::connect(const AddressGather& gather) {
  try {
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_TAG;
    check_ucs(ucp_init(&params, nullptr, &context_), "ucp_init");
    ucp_worker_params_t worker_params{};
    worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    // The caller's thread and the progress thread both call into the worker.
    worker_params.thread_mode = UCS_THREAD_MODE_MULTI;
    check_ucs(ucp_worker_create(context_, &worker_params, &worker_), "ucp_worker_create");
    ucp_worker_attr_t attr{};
    attr.field_mask = UCP_WORKER_ATTR_FIELD_THREAD_MODE;
    check_ucs(ucp_worker_query(worker_, &attr), "ucp_worker_query");
    SY_ENFORCE_ARG(
        attr.thread_mode == UCS_THREAD_MODE_MULTI,
        "ucx transport: this UCX build has no thread-safe workers (UCS_THREAD_MODE_MULTI), which "
        "the progress thread needs; use SWITCHYARD_INTER=mpi, or a UCX built with --enable-mt");

    ucp_address_t* address = nullptr;
    size_t address_length = 0;
    check_ucs(ucp_worker_get_address(worker_, &address, &address_length), "ucp_worker_get_address");
    std::vector<std::vector<char>> addresses;
    try {
      addresses = gather(address, address_length);
    } catch (...) {
      ucp_worker_release_address(worker_, address);
      throw;
    }
    ucp_worker_release_address(worker_, address);

    endpoints_.assign(size_, nullptr);
    for (int r = 0; r < size_; ++r) {
      ucp_ep_params_t ep_params{};
      ep_params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
      ep_params.address = reinterpret_cast<const ucp_address_t*>(addresses[r].data());
      check_ucs(ucp_ep_create(worker_, &ep_params, &endpoints_[r]), "ucp_ep_create");
    }
    synchronize("start-up");
    progress_thread_ = std::thread([this] { progress_in_background(); });
  } catch (...) {
    teardown();
    throw;
  }
}

// UCX counts a send done once its data is in UCX's own buffers; over TCP, what the socket has not
// taken yet leaves only while someone polls the worker. A rank that went on to compute or to an MPI
// call after its sends held back bytes a peer was waiting for, and the job hung (seen on the
// simulated cluster). This thread polls the worker for it, but only while the caller has not polled
// for a while: the worker's lock spins, and two threads polling it on oversubscribed cores stalled
// calls for seconds when this thread polled every 200 us regardless.
void UcxTransport::progress_in_background() {
  while (!stop_progress_.load(std::memory_order_relaxed)) {
    std::this_thread::sleep_for(kBackgroundPollPause);
    const int64_t now = std::chrono::steady_clock::now().time_since_epoch().count();
    const int64_t idle = now - last_poll_.load(std::memory_order_relaxed);
    if (idle >= std::chrono::steady_clock::duration(kBackgroundPollPause).count()) {
      ucp_worker_progress(worker_);
    }
  }
}

void UcxTransport::poll() {
  last_poll_.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                   std::memory_order_relaxed);
  ucp_worker_progress(worker_);
}

UcxTransport::~UcxTransport() {
  for (size_t h = 0; h < slots_.size(); ++h) {
    if (!in_use_[h]) continue;
    Request req{-1, false, 0, static_cast<int>(h)};
    cancel(req);
  }
  teardown();
}

void UcxTransport::synchronize(const char* what) {
  if (group_ != nullptr) {
    // The store's barrier (bounded by the group's timeout), progressing UCX while it waits.
    group_->barrier(fmt::format("ucx/{}", what), [this] {
      if (worker_ != nullptr) ucp_worker_progress(worker_);
    });
    return;
  }
  const double limit_seconds = std::chrono::duration<double>(barrier_limit_).count();
  MPI_Request barrier = MPI_REQUEST_NULL;
  check_mpi_rc(MPI_Ibarrier(comm_, &barrier), "MPI_Ibarrier");
  const double start = MPI_Wtime();
  int done = 0;
  while (!done) {
    if (worker_ != nullptr) ucp_worker_progress(worker_);
    MPI_Test(&barrier, &done, MPI_STATUS_IGNORE);
    if (!done && MPI_Wtime() - start > limit_seconds) {
      // The barrier stays pending: MPI forbids freeing or cancelling a nonblocking collective
      // (Open MPI aborts the job, and the caller's own error is lost).
      barrier_abandoned_ = true;
      throw CommError(
          ErrorCode::timeout,
          fmt::format("ucx transport {}: not every rank arrived within {} s", what, limit_seconds));
    }
  }
}

void UcxTransport::teardown() {
  if (progress_thread_.joinable()) {
    stop_progress_.store(true, std::memory_order_relaxed);
    progress_thread_.join();
  }
  // After a peer timed out, the teardown barrier would wait a whole timeout more for a rank that
  // may be dead: close without it.
  if ((comm_ != MPI_COMM_NULL || group_ != nullptr) && worker_ != nullptr && !barrier_abandoned_ &&
      !peer_failed()) {
    try {
      synchronize("teardown");
    } catch (const CommError&) {
      // A peer is gone: close without waiting for it.
    }
  }
  for (ucp_ep_h& ep : endpoints_) {
    if (ep == nullptr) continue;
    // Forced close: every rank has passed the teardown barrier, so no message is still owed, and
    // a flush could wait on a peer that is already gone.
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = UCP_EP_CLOSE_FLAG_FORCE;
    void* request = ucp_ep_close_nbx(ep, &param);
    if (UCS_PTR_IS_PTR(request)) {
      while (ucp_request_check_status(request) == UCS_INPROGRESS) ucp_worker_progress(worker_);
      ucp_request_free(request);
    }
    ep = nullptr;
  }
  if (worker_ != nullptr) ucp_worker_destroy(worker_);
  if (context_ != nullptr) ucp_cleanup(context_);
  // Open MPI progresses an abandoned barrier for good and crashes once its communicator is freed:
  // that communicator is kept (one per failed barrier).
  if (comm_ != MPI_COMM_NULL && !barrier_abandoned_) MPI_Comm_free(&comm_);
  worker_ = nullptr;
  context_ = nullptr;
}

std::string UcxTransport::describe() const {
  if (max_piece_ == SIZE_MAX) return "ucx";
  return fmt::format("ucx (messages in pieces of <= {} bytes)", max_piece_);
}

Request UcxTransport::isend(int peer, const void* data, size_t bytes, int tag) {
  SY_ENFORCE_ARG(!(peer < 0 || peer >= size_ || tag < 0 || (bytes > 0 && data == nullptr)),
                 "ucx transport isend: peer {} (world {}), tag {}, {} bytes: need 0 <= peer < "
                 "world, tag >= 0 and a buffer",
                 peer, size_, tag, bytes);
  // Only read: the const is restored by never writing through it.
  return post(peer, static_cast<std::byte*>(const_cast<void*>(data)), bytes, tag, true);
}

Request UcxTransport::irecv(int peer, void* data, size_t bytes, int tag) {
  SY_ENFORCE_ARG(!(peer < 0 || peer >= size_ || tag < 0 || (bytes > 0 && data == nullptr)),
                 "ucx transport irecv: peer {} (world {}), tag {}, {} bytes: need 0 <= peer < "
                 "world, tag >= 0 and a buffer",
                 peer, size_, tag, bytes);
  return post(peer, static_cast<std::byte*>(data), bytes, tag, false);
}

Request UcxTransport::post(int peer, std::byte* data, size_t bytes, int tag, bool is_send) {
  std::vector<void*> pieces;
  // One piece even for zero bytes, so an empty message still matches its receive.
  size_t offset = 0;
  do {
    const size_t count = std::min(max_piece_, bytes - offset);
    ucp_request_param_t param{};
    void* request = is_send ? ucp_tag_send_nbx(endpoints_[peer], data + offset, count,
                                               ucx_tag(tag, rank_), &param)
                            : ucp_tag_recv_nbx(worker_, data + offset, count, ucx_tag(tag, peer),
                                               kFullMask, &param);
    if (UCS_PTR_IS_ERR(request)) {
      for (void* posted : pieces) {
        if (posted != nullptr) ucp_request_cancel(worker_, posted);
      }
      free_pieces(pieces);
      check_ucs(UCS_PTR_STATUS(request), is_send ? "ucp_tag_send_nbx" : "ucp_tag_recv_nbx");
    }
    pieces.push_back(request);  // nullptr: completed in place
    offset += count;
  } while (offset < bytes);

  int handle = 0;
  if (free_slots_.empty()) {
    handle = static_cast<int>(slots_.size());
    slots_.emplace_back();
    in_use_.push_back(false);
  } else {
    handle = free_slots_.back();
    free_slots_.pop_back();
  }
  slots_[handle] = std::move(pieces);
  in_use_[handle] = true;
  return Request{peer, is_send, bytes, handle};
}

void UcxTransport::free_pieces(std::vector<void*>& pieces) {
  for (void* request : pieces) {
    if (request != nullptr) ucp_request_free(request);
  }
  pieces.clear();
}

void UcxTransport::release(Request& req) {
  free_pieces(slots_[req.handle]);
  in_use_[req.handle] = false;
  free_slots_.push_back(req.handle);
  req.handle = -1;
}

bool UcxTransport::test(Request& req) {
  if (req.handle < 0) return true;
  SY_ENFORCE_ARG(!(static_cast<size_t>(req.handle) >= slots_.size() || !in_use_[req.handle]),
                 "ucx transport: request handle {} is not outstanding here", req.handle);
  poll();
  for (void* request : slots_[req.handle]) {
    if (request == nullptr) continue;
    const ucs_status_t status = ucp_request_check_status(request);
    if (status == UCS_INPROGRESS) return false;
    if (status != UCS_OK) {
      const int peer = req.peer;
      release(req);
      throw CommError(ErrorCode::peer_failure,
                      fmt::format("ucx transport: a transfer with rank {} failed: {}", peer,
                                  ucs_status_string(status)));
    }
  }
  release(req);
  return true;
}

void UcxTransport::progress() { poll(); }

void UcxTransport::cancel(Request& req) {
  if (req.handle < 0 || !in_use_[req.handle]) return;
  for (void* request : slots_[req.handle]) {
    if (request == nullptr) continue;
    // A cancelled receive completes (with UCS_ERR_CANCELED) and never writes its buffer after;
    // a send UCX cannot take back is left to finish on its own.
    ucp_request_cancel(worker_, request);
    if (!req.is_send) {
      while (ucp_request_check_status(request) == UCS_INPROGRESS) poll();
    }
  }
  release(req);
}

}  // namespace switchyard::comm
