// A small authenticated key-value store over TCP (Boost.Asio), the rendezvous point of ranks
// launched without MPI (torchrun style): rank 0 hosts a TcpStoreServer, every rank talks to it
// through a TcpStoreClient (tcp_store_client.h). This file: the server; the wire format and its
// limits: tcp_store_protocol.h; the handshake's HMAC: tcp_store_auth.h.
//
// Wire format (comm/bootstrap/tcp_store_protocol.h): every message is a frame, a 4-byte little-endian length
// then that many bytes, 1 <= length <= StoreLimits::max_frame. Connection set-up is a mutual
// HMAC-SHA256 challenge-response keyed by the job secret, so the secret never crosses the wire:
//   server -> client: nonce_s (32 bytes)
//   client -> server: nonce_c (32) | HMAC(secret, "sy-client" | nonce_s | nonce_c)
//   server -> client: status 0 | HMAC(secret, "sy-server" | nonce_c | nonce_s)
// Then requests "op | key length (4) | key | argument", each answered by "status | body".
// The server refuses (with a reply saying why, then closes) a wrong secret, an oversized or empty
// length prefix, a frame left incomplete past the read deadline, and any malformed request; it
// keeps serving the other clients.
//
// Bounded against peers that do not hold the secret (docs/hardening.md): until a peer has
// authenticated, the only frame it may send is the 64-byte handshake, read into a fixed buffer, so
// an unauthenticated connection costs a few hundred bytes whatever length it announces; at most
// max_unauthenticated of them are open (a new one drops the oldest), each for at most
// read_deadline. When accept() fails (descriptors or memory exhausted) the server pauses, doubling
// up to 100 ms, instead of retrying at once.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "comm/bootstrap/tcp_store_protocol.h"

namespace switchyard::comm {

class TcpStoreServer {
 public:
  // Listens on host:port (port 0: an ephemeral port, see port()) and serves on its own thread.
  // secret must not be empty; limits are checked (CommError(invalid_argument) naming the field).
  TcpStoreServer(const std::string& host, uint16_t port, std::string secret,
                 StoreLimits limits = {});
  // Stops accepting, then waits (at most drain_timeout) until every authenticated client has
  // disconnected, so that a rank still reading its last answer is not cut off.
  ~TcpStoreServer();
  TcpStoreServer(const TcpStoreServer&) = delete;
  TcpStoreServer& operator=(const TcpStoreServer&) = delete;

  uint16_t port() const;
  // Why connections were refused, oldest first (the last 64).
  std::vector<std::string> rejections() const;
  void set_drain_timeout(std::chrono::milliseconds timeout);

  // Counters, for tests and diagnostics.
  struct Stats {
    int open = 0;                          // connections open now
    int unauthenticated = 0;               // of which not yet authenticated
    uint64_t accept_failures = 0;          // accept() calls that failed (each followed by a pause)
    uint64_t dropped_unauthenticated = 0;  // dropped to make way under max_unauthenticated
  };
  Stats stats() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace switchyard::comm
