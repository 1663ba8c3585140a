// The TCP store's client: every rank (rank 0 too) talks to the store through one. The store, its
// handshake and its limits: tcp_store_server.h.
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

  // Keys hold at most StoreLimits::max_key bytes and a request at most StoreLimits::max_frame
  // (1 MiB): larger ones throw CommError(invalid_argument) naming the sizes, before sending.
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
