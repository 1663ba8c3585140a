// A small authenticated key-value store over TCP (Boost.Asio), the rendezvous point of ranks
// launched without MPI (torchrun style): rank 0 hosts a TcpStoreServer, every rank talks to it
// through a TcpStoreClient.
//
// Wire format: every message is a frame, a 4-byte little-endian length then that many bytes,
// 1 <= length <= StoreLimits::max_frame. Connection set-up is a mutual HMAC-SHA256
// challenge-response keyed by the job secret, so the secret never crosses the wire:
//   server -> client: nonce_s (32 bytes)
//   client -> server: nonce_c (32) | HMAC(secret, "sy-client" | nonce_s | nonce_c)
//   server -> client: status 0 | HMAC(secret, "sy-server" | nonce_c | nonce_s)
// Then requests "op | key length (4) | key | argument", each answered by "status | body".
// The server refuses (with a reply saying why, then closes) a wrong secret, an oversized or empty
// length prefix, a frame left incomplete past the read deadline, and any malformed request; it
// keeps serving the other clients.
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

namespace switchyard::comm {

struct StoreLimits {
  uint32_t max_frame = 1u << 20;                  // bytes in one frame
  size_t max_key = 1024;                          // bytes in one key
  size_t max_total = size_t{64} << 20;            // bytes of keys and values held in all
  int max_connections = 4096;                     // open at once
  std::chrono::milliseconds read_deadline{5000};  // handshake, and any frame once begun
  std::chrono::milliseconds max_wait{60000};      // longest server-side wait of one get
};

class TcpStoreServer {
 public:
  // Listens on host:port (port 0: an ephemeral port, see port()) and serves on its own thread.
  // secret must not be empty.
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

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

class TcpStoreClient {
 public:
  // Connects (retrying while nobody listens yet) and authenticates, all within `timeout`, which
  // also bounds every later request. Throws CommError: timeout, or peer_failure when the server
  // refuses (its reason is in the message).
  TcpStoreClient(const std::string& host, uint16_t port, std::string secret,
                 std::chrono::milliseconds timeout);
  ~TcpStoreClient();
  TcpStoreClient(const TcpStoreClient&) = delete;
  TcpStoreClient& operator=(const TcpStoreClient&) = delete;

  void set(std::string_view key, std::span<const std::byte> value);
  // Blocks until key is present, at most `timeout` (then CommError(timeout) naming the key).
  // idle, when given, runs every few milliseconds while waiting (e.g. to progress a transport).
  std::vector<std::byte> get(std::string_view key, std::chrono::milliseconds timeout,
                             const std::function<void()>& idle = {});
  // Adds delta to the integer at key (absent: 0) and returns the new value.
  int64_t add(std::string_view key, int64_t delta);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace switchyard::comm
