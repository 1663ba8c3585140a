// An HTTP endpoint serving one rank's Metrics in Prometheus text format (GET /metrics), on its own
// thread with Boost.Asio. Each rank serves its own figures (train_moe: rank r on port P + r) so
// that serving a scrape needs no communication: the training thread never waits on the server, and
// the server never calls MPI. Bounded against bad clients: a whole request must arrive within
// read_timeout (which also bounds writing the answer), a request larger than max_request_bytes gets
// 413, a malformed request line 400, another method 405, another path 404. Every answer closes its
// connection. Idle connections cannot lock scrapes out (docs/hardening.md): one client address
// holds at most max_connections_per_address connections and all of them at most max_connections; a
// new connection beyond either cap closes the oldest one still waiting for its request (or
// lingering after its answer), so a fresh scrape is always served; read_timeout closes idle ones.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "runtime/metrics.h"

namespace switchyard {

namespace detail {
struct MetricsServerState;  // the Asio side, kept out of this header
}

struct MetricsServerOptions {
  std::string address = "127.0.0.1";  // loopback unless told otherwise: the figures are not secret,
                                      // but an open port on a cluster node should be a choice
  uint16_t port = 0;                  // 0: an ephemeral port, see MetricsServer::port()
  int rank = 0;                       // the rank label of every sample
  std::chrono::milliseconds read_timeout{2000};  // the whole exchange, so also the idle timeout
  size_t max_request_bytes = 8192;
  int max_connections = 8;
  int max_connections_per_address = 4;
};

class MetricsServer {
 public:
  // Listens before returning (throws Error(invalid_argument) naming the address when it cannot),
  // then serves on a thread of its own. metrics must outlive the server.
  MetricsServer(const Metrics& metrics, MetricsServerOptions options);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The port listened on (the one picked when options.port was 0).
  uint16_t port() const;
  // Stops serving, joins the thread and closes the open connections and the port. Bounded: every handler is
  // short and none blocks. Idempotent; the destructor calls it.
  void stop();

 private:
  std::unique_ptr<detail::MetricsServerState> impl_;  // null once stopped
  uint16_t port_ = 0;
};

}  // namespace switchyard
