#include "comm/transport/shm/shm_transport.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>

#include "comm/environment.h"
#include "comm/error.h"
#include "comm/transport/mpi/mpi_error.h"

namespace switchyard::comm {

namespace {

// One channel's counters, each on its own cache line so producer and consumer do not share one.
struct alignas(64) Control {
  std::atomic<uint64_t> head{0};              // pieces the producer has published
  alignas(64) std::atomic<uint64_t> tail{0};  // pieces the consumer has taken
  // Single-copy descriptors the consumer has finished reading (written by the consumer only).
  alignas(64) std::atomic<uint64_t> read{0};
  // Single-copy descriptors up to this number were cancelled by the producer: not to be trusted.
  alignas(64) std::atomic<uint64_t> revoked{0};
};
static_assert(std::atomic<uint64_t>::is_always_lock_free,
              "shm channels need lock-free 64-bit atomics to work across processes");

struct SlotHeader {
  uint64_t message_bytes;  // of the whole message this piece belongs to
  int32_t tag;
  uint32_t piece_bytes;
};

// piece_bytes of a slot that carries a single-copy descriptor instead of a piece.
constexpr uint32_t kDescriptor = UINT32_MAX;
struct Descriptor {
  uint64_t address;  // of the message in the sender's memory
  uint64_t seq;      // 1, 2, ... per channel
};

// Copies bytes from another process's memory (itself: memcpy); returns the error text or "".
std::string read_remote(int pid, std::byte* to, uint64_t address, size_t bytes) {
  if (pid == getpid()) {
    std::memcpy(to, reinterpret_cast<const void*>(address), bytes);
    return {};
  }
  size_t done = 0;
  while (done < bytes) {
    iovec local{to + done, bytes - done};
    iovec remote{reinterpret_cast<void*>(address + done), bytes - done};
    const ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return fmt::format("process_vm_readv of {} bytes from pid {}: {}", bytes - done, pid,
                         n < 0 ? std::strerror(errno) : "no progress");
    }
    done += static_cast<size_t>(n);
  }
  return {};
}

constexpr size_t kLine = 64;
size_t round_up(size_t n) { return (n + kLine - 1) / kLine * kLine; }

Control& control_of(void* base, size_t ranks, int from, int to) {
  return reinterpret_cast<Control*>(base)[static_cast<size_t>(from) * ranks +
                                          static_cast<size_t>(to)];
}

void init_controls(void* base, const void* context) {
  const size_t channels = *static_cast<const size_t*>(context);
  for (size_t c = 0; c < channels; ++c) new (static_cast<Control*>(base) + c) Control();
}

}  // namespace

ShmTransport::ShmTransport(MPI_Comm comm, ShmOptions options) : options_(options) {
  SY_ENFORCE_ARG(!(options_.slot_bytes < sizeof(Descriptor) || options_.slot_bytes >= UINT32_MAX ||
                   options_.slots == 0),
                 "shm transport: {} slots of {} bytes; need at least one slot of 16 bytes to 4 GiB",
                 options_.slots, options_.slot_bytes);
  int rank = 0;
  check_mpi(MPI_Comm_size(comm, &world_), "MPI_Comm_size");
  check_mpi(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
  MPI_Comm node = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node),
            "MPI_Comm_split_type(SHARED)");
  try {
    int local_size = 0;
    check_mpi(MPI_Comm_size(node, &local_size), "MPI_Comm_size(node)");
    check_mpi(MPI_Comm_rank(node, &me_), "MPI_Comm_rank(node)");
    rank_of_local_.resize(static_cast<size_t>(local_size));
    check_mpi(MPI_Allgather(&rank, 1, MPI_INT, rank_of_local_.data(), 1, MPI_INT, node),
              "MPI_Allgather(node ranks)");
    local_of_rank_.assign(static_cast<size_t>(world_), -1);
    for (int l = 0; l < local_size; ++l) {
      local_of_rank_[static_cast<size_t>(rank_of_local_[static_cast<size_t>(l)])] = l;
    }
    const size_t channels = static_cast<size_t>(local_size) * static_cast<size_t>(local_size);
    slot_stride_ = round_up(sizeof(SlotHeader) + options_.slot_bytes);
    const size_t bytes = channels * sizeof(Control) + channels * options_.slots * slot_stride_;
    segment_ = std::make_unique<ShmSegment>(node, bytes, init_controls, &channels);
    probe_single_copy(node);
  } catch (...) {
    MPI_Comm_free(&node);
    throw;
  }
  MPI_Comm_free(&node);
  peers_.resize(rank_of_local_.size());
}

ShmTransport::~ShmTransport() = default;

// Every rank reads a known word of every other rank of the node with process_vm_readv; single copy
// is on only if that worked everywhere (and nobody turned it off), so all ranks agree.
void ShmTransport::probe_single_copy(MPI_Comm node) {
  const size_t local_size = rank_of_local_.size();
  const int pid = getpid();
  probe_ = 0x73776974636879ULL ^ static_cast<uint64_t>(pid);
  struct Entry {
    int64_t pid;
    uint64_t address;
  };
  const Entry mine{pid, reinterpret_cast<uint64_t>(&probe_)};
  std::vector<Entry> all(local_size);
  check_mpi(MPI_Allgather(&mine, sizeof mine, MPI_BYTE, all.data(), sizeof mine, MPI_BYTE, node),
            "MPI_Allgather(shm pids)");
  pid_of_local_.resize(local_size);
  for (size_t l = 0; l < local_size; ++l) pid_of_local_[l] = static_cast<int>(all[l].pid);
  std::string why;
  if (options_.single_copy_bytes == 0) {
    why = "off (ShmOptions::single_copy_bytes is 0)";
  } else if (environment::shm_single_copy_off()) {
    why = "off (SWITCHYARD_SHM_SINGLE_COPY=0)";
  } else {
    for (size_t l = 0; l < local_size && why.empty(); ++l) {
      if (static_cast<int>(l) == me_) continue;
      uint64_t word = 0;
      const std::string error =
          read_remote(pid_of_local_[l], reinterpret_cast<std::byte*>(&word), all[l].address,
                      sizeof word);
      if (!error.empty()) {
        why = fmt::format("off (cross-memory attach not permitted here: {})", error);
      } else if (word != (0x73776974636879ULL ^ static_cast<uint64_t>(all[l].pid))) {
        why = fmt::format("off (pid {} of local rank {} is another process from here: separate "
                          "pid namespaces?)",
                          all[l].pid, l);
      }
    }
  }
  int ok = why.empty() ? 1 : 0;
  int all_ok = 0;
  check_mpi(MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, node), "MPI_Allreduce(shm probe)");
  single_copy_ = all_ok == 1;
  if (single_copy_) {
    single_copy_status_ = fmt::format("single copy (CMA) from {} bytes", options_.single_copy_bytes);
  } else {
    single_copy_status_ = why.empty() ? "off (another rank of the node cannot use it)" : why;
    single_copy_status_ = "single copy " + single_copy_status_;
  }
}

std::string ShmTransport::describe() const {
  return fmt::format(
      "shm ({} ranks on this node, {} slots of {} bytes per pair, {} KiB segment, {})",
      rank_of_local_.size(), options_.slots, options_.slot_bytes, segment_->bytes() / 1024,
      single_copy_status_);
}

int ShmTransport::local_of(int peer, const char* what) const {
  SY_ENFORCE_ARG(!(peer < 0 || peer >= world_),
                 "shm transport {}: peer {} is not a rank (world {})", what, peer, world_);
  const int local = local_of_rank_[static_cast<size_t>(peer)];
  SY_ENFORCE_ARG(local >= 0,
                 "shm transport {}: rank {} is on another node; shm reaches only ranks {} (use mpi "
                 "for other nodes: SWITCHYARD_INTER=mpi)",
                 what, peer, fmt::join(rank_of_local_, ", "));
  return local;
}

int ShmTransport::new_op() {
  if (free_ops_.empty()) {
    ops_.emplace_back();
    free_ops_.push_back(static_cast<int>(ops_.size()) - 1);
  }
  const int handle = free_ops_.back();
  free_ops_.pop_back();
  ops_[static_cast<size_t>(handle)].in_use = true;
  return handle;
}

void ShmTransport::free_op(int handle) {
  ops_[static_cast<size_t>(handle)] = Op{};
  free_ops_.push_back(handle);
}

ShmTransport::Op& ShmTransport::op_of(const Request& req) {
  SY_ENFORCE_ARG(!(req.handle < 0 || static_cast<size_t>(req.handle) >= ops_.size() ||
                   !ops_[static_cast<size_t>(req.handle)].in_use ||
                   ops_[static_cast<size_t>(req.handle)].is_send != req.is_send),
                 "shm transport: request handle {} is not outstanding here (a stale copy of a "
                 "completed request?)",
                 req.handle);
  return ops_[static_cast<size_t>(req.handle)];
}

Request ShmTransport::isend(int peer, const void* data, size_t bytes, int tag) {
  const int local = local_of(peer, "isend");
  SY_ENFORCE_ARG(!(tag < 0 || (bytes > 0 && data == nullptr)),
                 "shm transport isend: tag {}, {} bytes at {}: need tag >= 0 and a buffer for "
                 "non-empty messages",
                 tag, bytes, data);
  const int handle = new_op();
  Op& op = ops_[static_cast<size_t>(handle)];
  op.is_send = true;
  op.peer = local;
  op.tag = tag;
  // Only read: the const is restored by never writing through it.
  op.data = static_cast<std::byte*>(const_cast<void*>(data));
  op.bytes = bytes;
  op.single = single_copy_ && bytes > 0 && bytes >= options_.single_copy_bytes;
  peers_[static_cast<size_t>(local)].sends.push_back(handle);
  push(local);  // eager: a message that fits in the ring completes at once
  return Request{peer, true, bytes, handle};
}

Request ShmTransport::irecv(int peer, void* data, size_t bytes, int tag) {
  const int local = local_of(peer, "irecv");
  SY_ENFORCE_ARG(!(tag < 0 || (bytes > 0 && data == nullptr)),
                 "shm transport irecv: tag {}, {} bytes at {}: need tag >= 0 and a buffer for "
                 "non-empty messages",
                 tag, bytes, data);
  const int handle = new_op();
  Op& op = ops_[static_cast<size_t>(handle)];
  op.peer = local;
  op.tag = tag;
  op.data = static_cast<std::byte*>(data);
  op.bytes = bytes;
  Peer& from = peers_[static_cast<size_t>(local)];
  // The earliest parked message with this tag is this receive's, as MPI would match it.
  const auto parked = std::find_if(from.parked.begin(), from.parked.end(),
                                   [tag](const Parked& p) { return p.tag == tag; });
  if (parked == from.parked.end()) {
    from.recvs.push_back(handle);
    return Request{peer, false, bytes, handle};
  }
  Incoming& in = from.incoming;
  const bool arriving = in.active && in.to_parked && in.parked == parked;
  if (parked->data.size() != bytes) {
    finish_recv(op, parked->data.size());
    if (arriving) in.to_parked = false;  // in.op is -1: the rest of it is dropped
  } else {
    if (parked->done > 0) std::memcpy(op.data, parked->data.data(), parked->done);
    op.done = parked->done;
    op.error = parked->error;
    if (arriving) {
      in.to_parked = false;
      in.op = handle;
    } else {
      op.complete = true;
    }
  }
  from.parked.erase(parked);
  return Request{peer, false, bytes, handle};
}

void ShmTransport::finish_recv(Op& op, size_t message_bytes) {
  op.complete = true;
  if (message_bytes == op.bytes) return;
  op.error = fmt::format(
      "shm transport: a {}-byte message from rank {} (tag {}) met a {}-byte "
      "receive; both sides must agree on every message's size",
      message_bytes, rank_of_local_[static_cast<size_t>(op.peer)], op.tag, op.bytes);
}

bool ShmTransport::test(Request& req) {
  if (req.handle < 0) return true;
  if (!op_of(req).complete) progress();
  Op& op = op_of(req);
  if (!op.complete) return false;
  const std::string error = std::move(op.error);
  free_op(req.handle);
  req.handle = -1;
  if (!error.empty()) throw CommError(ErrorCode::internal, error);
  return true;
}

void ShmTransport::cancel(Request& req) {
  if (req.handle < 0) return;
  Op& op = op_of(req);
  Peer& peer = peers_[static_cast<size_t>(op.peer)];
  if (op.complete) {
    free_op(req.handle);
  } else if (op.is_send && op.single && op.started) {
    // The receiver may still read the caller's buffer, which goes away: revoke the descriptor (a
    // later read of it fails there) and keep the op until the receiver has counted it.
    Control& control = control_of(segment_->base(), peers_.size(), me_, op.peer);
    uint64_t revoked = control.revoked.load(std::memory_order_relaxed);
    while (revoked < op.seq_no &&
           !control.revoked.compare_exchange_weak(revoked, op.seq_no, std::memory_order_seq_cst)) {
    }
    op.data = nullptr;
    op.released = true;
  } else if (op.is_send && op.started) {
    // Part of it is in the ring and the receiver expects the rest: finish it from a private copy,
    // since the caller's buffer goes away.
    op.owned.assign(op.data, op.data + op.bytes);
    op.data = op.owned.data();
    op.released = true;
  } else if (op.is_send) {
    peer.sends.erase(std::find(peer.sends.begin(), peer.sends.end(), req.handle));
    free_op(req.handle);
  } else {
    if (peer.incoming.active && !peer.incoming.to_parked && peer.incoming.op == req.handle) {
      peer.incoming.op = -1;  // the rest of the message is dropped
    } else {
      peer.recvs.remove(req.handle);
    }
    free_op(req.handle);
  }
  req.handle = -1;
}

void ShmTransport::progress() {
  // Starting at the next rank up rather than at rank 0, so that the ranks of a node do not all
  // read the same sender's memory first.
  const size_t n = peers_.size();
  for (size_t i = 1; i <= n; ++i) {
    const int p = static_cast<int>((static_cast<size_t>(me_) + i) % n);
    push(p);
    drain(p);
    reap(p);
  }
}

// Completes the single-copy sends the peer has read, in order.
void ShmTransport::reap(int peer) {
  Peer& to = peers_[static_cast<size_t>(peer)];
  if (to.unread.empty()) return;
  Control& control = control_of(segment_->base(), peers_.size(), me_, peer);
  const uint64_t read = control.read.load(std::memory_order_acquire);
  while (to.reaped < read && !to.unread.empty()) {
    const int handle = to.unread.front();
    to.unread.pop_front();
    ++to.reaped;
    Op& op = ops_[static_cast<size_t>(handle)];
    if (op.released) {
      free_op(handle);
    } else {
      op.complete = true;
    }
  }
}

// Channel (from, to) is number from * ranks + to: its control block is that entry of the array at
// the segment's start, its ring of slots that entry of the array after all control blocks.
void ShmTransport::push(int peer) {
  Peer& to = peers_[static_cast<size_t>(peer)];
  if (to.sends.empty()) return;
  auto* base = static_cast<std::byte*>(segment_->base());
  const size_t channel = static_cast<size_t>(me_) * peers_.size() + static_cast<size_t>(peer);
  Control& control = reinterpret_cast<Control*>(base)[channel];
  std::byte* ring = base + peers_.size() * peers_.size() * sizeof(Control) +
                    channel * options_.slots * slot_stride_;
  uint64_t head = control.head.load(std::memory_order_relaxed);  // only this rank writes it
  uint64_t tail = control.tail.load(std::memory_order_acquire);
  while (!to.sends.empty()) {
    if (head - tail >= options_.slots) {
      tail = control.tail.load(std::memory_order_acquire);
      if (head - tail >= options_.slots) return;  // ring full: the receiver has not drained yet
    }
    const int handle = to.sends.front();
    Op& op = ops_[static_cast<size_t>(handle)];
    std::byte* slot = ring + (head % options_.slots) * slot_stride_;
    if (op.single) {
      op.seq_no = ++to.descriptors;
      const SlotHeader header{op.bytes, op.tag, kDescriptor};
      const Descriptor descriptor{reinterpret_cast<uint64_t>(op.data), op.seq_no};
      std::memcpy(slot, &header, sizeof header);
      std::memcpy(slot + sizeof header, &descriptor, sizeof descriptor);
      op.started = true;
      control.head.store(++head, std::memory_order_release);
      to.sends.pop_front();
      to.unread.push_back(handle);
      continue;
    }
    const size_t piece = std::min(options_.slot_bytes, op.bytes - op.done);
    const SlotHeader header{op.bytes, op.tag, static_cast<uint32_t>(piece)};
    std::memcpy(slot, &header, sizeof header);
    if (piece > 0) std::memcpy(slot + sizeof header, op.data + op.done, piece);
    op.done += piece;
    op.started = true;
    control.head.store(++head, std::memory_order_release);
    if (op.done < op.bytes) continue;
    to.sends.pop_front();
    if (op.released) {
      free_op(handle);
    } else {
      op.complete = true;
    }
  }
}

void ShmTransport::drain(int peer) {
  Peer& from = peers_[static_cast<size_t>(peer)];
  auto* base = static_cast<std::byte*>(segment_->base());
  const size_t channel = static_cast<size_t>(peer) * peers_.size() + static_cast<size_t>(me_);
  Control& control = reinterpret_cast<Control*>(base)[channel];
  const std::byte* ring = base + peers_.size() * peers_.size() * sizeof(Control) +
                          channel * options_.slots * slot_stride_;
  uint64_t tail = control.tail.load(std::memory_order_relaxed);  // only this rank writes it
  const uint64_t head = control.head.load(std::memory_order_acquire);
  for (; tail != head; control.tail.store(++tail, std::memory_order_release)) {
    const std::byte* slot = ring + (tail % options_.slots) * slot_stride_;
    SlotHeader header;
    std::memcpy(&header, slot, sizeof header);
    if (header.piece_bytes == kDescriptor) {
      Descriptor descriptor;
      std::memcpy(&descriptor, slot + sizeof header, sizeof descriptor);
      SY_ENFORCE(!from.incoming.active, ErrorCode::internal,
                 "shm transport: a single-copy descriptor inside a streamed message; the segment "
                 "is corrupt");
      start_incoming(peer, header.tag, header.message_bytes);
      read_single_copy(peer, descriptor.address, descriptor.seq);
      continue;
    }
    if (!from.incoming.active) start_incoming(peer, header.tag, header.message_bytes);
    deliver(from.incoming, slot + sizeof header, header.piece_bytes);
  }
}

void ShmTransport::start_incoming(int peer, int tag, size_t bytes) {
  Peer& from = peers_[static_cast<size_t>(peer)];
  Incoming& in = from.incoming;
  in = Incoming{};
  in.active = true;
  in.bytes = bytes;
  const auto posted = std::find_if(from.recvs.begin(), from.recvs.end(), [&](int handle) {
    return ops_[static_cast<size_t>(handle)].tag == tag;
  });
  if (posted != from.recvs.end()) {
    const int handle = *posted;
    Op& op = ops_[static_cast<size_t>(handle)];
    from.recvs.erase(posted);
    if (op.bytes == bytes) {
      in.op = handle;
    } else {
      finish_recv(op, bytes);  // the message itself is dropped: in.op stays -1
    }
    return;
  }
  from.parked.push_back(Parked{tag, std::vector<std::byte>(bytes), 0, {}});
  in.to_parked = true;
  in.parked = std::prev(from.parked.end());
}

// The message a descriptor names, straight into its posted receive (or its parked buffer, or
// nowhere when its receive was cancelled or did not fit), then counted as read for the sender.
void ShmTransport::read_single_copy(int peer, uint64_t address, uint64_t seq) {
  Incoming& in = peers_[static_cast<size_t>(peer)].incoming;
  std::byte* target = nullptr;
  if (in.to_parked) {
    target = in.parked->data.data();
  } else if (in.op >= 0) {
    target = ops_[static_cast<size_t>(in.op)].data;
  }
  std::string error;
  if (target != nullptr && in.bytes > 0) {
    error = read_remote(pid_of_local_[static_cast<size_t>(peer)], target, address, in.bytes);
  }
  const Control& forward = control_of(segment_->base(), peers_.size(), peer, me_);
  if (forward.revoked.load(std::memory_order_seq_cst) >= seq) {
    error = "the sender cancelled it while it was being read";
  }
  if (!error.empty()) {
    error = fmt::format("shm transport: single-copy message from rank {}: {}",
                        rank_of_local_[static_cast<size_t>(peer)], error);
  }
  Control& control = control_of(segment_->base(), peers_.size(), peer, me_);
  control.read.store(control.read.load(std::memory_order_relaxed) + 1,
                     std::memory_order_release);
  if (in.to_parked) {
    in.parked->done = in.bytes;
    in.parked->error = error;
  } else if (in.op >= 0) {
    Op& op = ops_[static_cast<size_t>(in.op)];
    op.done = in.bytes;
    finish_recv(op, in.bytes);
    if (!error.empty()) op.error = error;
  }
  in = Incoming{};
}

void ShmTransport::deliver(Incoming& in, const std::byte* piece, size_t bytes) {
  SY_ENFORCE(in.done + bytes <= in.bytes, ErrorCode::internal,
             "shm transport: a piece overruns its {}-byte message; the segment is corrupt",
             in.bytes);
  if (bytes > 0 && in.to_parked) {
    std::memcpy(in.parked->data.data() + in.done, piece, bytes);
    in.parked->done += bytes;
  } else if (bytes > 0 && in.op >= 0) {
    Op& op = ops_[static_cast<size_t>(in.op)];
    std::memcpy(op.data + in.done, piece, bytes);
    op.done += bytes;
  }
  in.done += bytes;
  if (in.done < in.bytes) return;
  if (!in.to_parked && in.op >= 0) finish_recv(ops_[static_cast<size_t>(in.op)], in.bytes);
  in = Incoming{};
}

}  // namespace switchyard::comm
