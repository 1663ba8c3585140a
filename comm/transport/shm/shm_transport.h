// Private: the "shm" Transport, between ranks of one node through a POSIX shared-memory segment
// (ShmSegment). Every ordered pair of the node's ranks (a rank and itself included) owns a channel:
// a single-producer single-consumer ring of fixed-size slots with a head and a tail counter
// (atomics, release/acquire). A message is copied once into slots by the sender and once out by
// the receiver, straight into the posted buffer; a message longer than a slot streams through the
// ring in pieces, so the ring bounds the memory, not the message size. Messages to one peer leave
// in the order posted. A receiver drains its rings whenever it makes progress; a message whose
// receive is not posted yet (another tag, or an early peer) is parked in private memory, which
// costs one more copy but never blocks the sender. All progress happens inside isend/test: there is
// no thread, so waits stay bounded by the caller's wait_all.
//
// Single copy for large messages: a message of at least `single_copy_bytes` puts only a descriptor
// (its address) in the ring, and the receiver copies it straight from the sender's memory into the
// posted buffer with process_vm_readv (Linux cross-memory attach), then counts it as read in the
// channel's control block, which completes the send. Whether CMA works between the node's ranks
// (ptrace permission, Yama, containers and namespaces decide) is probed at set-up; where it does not
// on any rank of the node, or SWITCHYARD_SHM_SINGLE_COPY=0, every message goes through the ring as
// above. A descriptor whose receive is not posted yet is read into private memory at once, so
// sends still complete in order without waiting for the receiver's program. A send cancelled
// after its descriptor left is revoked in the control block: a receiver that reads it afterwards
// fails that receive with an error instead of delivering bytes from a freed buffer.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "comm/transport/shm/shm_segment.h"
#include "comm/transport/transport.h"

namespace switchyard::comm {

struct ShmOptions {
  size_t slot_bytes = 64 * 1024;  // payload per slot: the piece size of long messages
  size_t slots = 16;              // slots per channel (per ordered pair of ranks)
  // Messages at least this long go single-copy (CMA) where the node permits it; 0: never.
  size_t single_copy_bytes = 32 * 1024;
};

class ShmTransport final : public Transport {
 public:
  // Collective over comm: ranks that share memory map one segment. Peers are ranks of comm;
  // those on other nodes are refused (CommError(invalid_argument)).
  explicit ShmTransport(MPI_Comm comm, ShmOptions options = {});
  ~ShmTransport() override;
  ShmTransport(const ShmTransport&) = delete;
  ShmTransport& operator=(const ShmTransport&) = delete;

  std::string_view name() const override { return "shm"; }
  std::string describe() const override;
  // Whether messages of single_copy_bytes or more are read straight from the sender's memory
  // (agreed by every rank of the node at set-up); single_copy_status() says why not when not.
  bool single_copy() const { return single_copy_; }
  const std::string& single_copy_status() const { return single_copy_status_; }
  Request isend(int peer, const void* data, size_t bytes, int tag) override;
  Request irecv(int peer, void* data, size_t bytes, int tag) override;
  bool test(Request& req) override;
  void progress() override;
  void cancel(Request& req) override;

 private:
  struct Op {
    bool in_use = false;
    bool is_send = false;
    bool complete = false;
    bool started = false;   // send: its first piece is in the ring
    bool released = false;  // send: cancelled after it started; finishes from `owned`
    bool single = false;    // send: goes single-copy (a descriptor in the ring)
    uint64_t seq_no = 0;    // single-copy send: its descriptor's number on the channel
    int peer = -1;          // local index
    int tag = 0;
    std::byte* data = nullptr;
    size_t bytes = 0;
    size_t done = 0;    // bytes through the ring (send) or into data (receive)
    std::string error;  // receive: the message did not fit
    std::vector<std::byte> owned;
  };
  // A message that arrived before its receive was posted.
  struct Parked {
    int tag = 0;
    std::vector<std::byte> data;
    size_t done = 0;
    std::string error;  // a single-copy read of it failed
  };
  // The message a channel is delivering: into a posted receive, a parked buffer, or nowhere (its
  // receive was cancelled).
  struct Incoming {
    bool active = false;
    int op = -1;
    std::list<Parked>::iterator parked;
    bool to_parked = false;
    size_t bytes = 0;
    size_t done = 0;
  };
  struct Peer {
    std::deque<int> sends;  // ops in post order, front streaming
    std::deque<int> unread;  // single-copy sends whose descriptor left, until the peer read them
    uint64_t descriptors = 0;  // single-copy descriptors sent to this peer
    uint64_t reaped = 0;       // of them, completed here
    std::list<int> recvs;   // posted, not matched, in post order
    std::list<Parked> parked;
    Incoming incoming;
  };

  int local_of(int peer, const char* what) const;
  int new_op();
  void free_op(int handle);
  Op& op_of(const Request& req);
  void push(int peer);
  void drain(int peer);
  void start_incoming(int peer, int tag, size_t bytes);
  void deliver(Incoming& in, const std::byte* piece, size_t bytes);
  void finish_recv(Op& op, size_t message_bytes);
  void reap(int peer);
  void read_single_copy(int peer, uint64_t address, uint64_t seq);
  void probe_single_copy(MPI_Comm node);

  ShmOptions options_;
  int world_ = 0;
  int me_ = 0;                      // local index
  std::vector<int> local_of_rank_;  // world rank -> local index, -1 off this node
  std::vector<int> rank_of_local_;
  size_t slot_stride_ = 0;
  std::unique_ptr<ShmSegment> segment_;
  std::vector<Peer> peers_;
  std::vector<Op> ops_;
  std::vector<int> free_ops_;
  bool single_copy_ = false;
  std::string single_copy_status_;
  std::vector<int> pid_of_local_;
  uint64_t probe_ = 0;  // read by the node's other ranks at set-up
};

}  // namespace switchyard::comm
