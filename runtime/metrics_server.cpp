#include "runtime/metrics_server.h"

#include <algorithm>
#include <array>
#include <deque>
#include <memory>
#include <string_view>
#include <thread>
#include <utility>

#include <boost/asio.hpp>
#include <fmt/format.h>

#include "base/error.h"

namespace switchyard {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace detail {
class MetricsConnection;
}

struct detail::MetricsServerState {
  MetricsServerState(const Metrics& m, MetricsServerOptions o) : metrics(m), options(std::move(o)) {}
  void accept_next();
  // Serves socket, first making room under the per-address and total caps by closing the oldest
  // connections that wait for a request (or linger after their answer); refuses it only when every
  // open connection is being answered.
  void admit(tcp::socket socket);

  const Metrics& metrics;
  const MetricsServerOptions options;
  int active = 0;  // connection objects alive; touched only on the server thread
  // Open connections, oldest first (server thread only; closed ones are pruned on each accept).
  std::deque<std::weak_ptr<MetricsConnection>> connections;
  // Declared after `active`: destroying the io_context destroys pending handlers, and with them
  // connections, which decrement it.
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::thread thread;
};

namespace {

struct Answer {
  int status;
  const char* reason;
};

// The answer to a request whose head (request line and headers) arrived whole.
Answer classify(std::string_view head) {
  const std::string_view line = head.substr(0, head.find("\r\n"));
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return {400, "Bad Request"};
  }
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  const bool token = !method.empty() && method.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ") ==
                                            std::string_view::npos;
  if (!token || target.empty() || target.front() != '/' ||
      (version != "HTTP/1.0" && version != "HTTP/1.1")) {
    return {400, "Bad Request"};
  }
  if (method != "GET") return {405, "Method Not Allowed"};
  if (target.substr(0, target.find('?')) != "/metrics") return {404, "Not Found"};
  return {200, "OK"};
}

}  // namespace

// One client: read the request head under a deadline, answer, close. Owned by its pending handlers.
class detail::MetricsConnection : public std::enable_shared_from_this<MetricsConnection> {
 public:
  MetricsConnection(detail::MetricsServerState& server, tcp::socket socket, asio::ip::address peer)
      : server_(server),
        socket_(std::move(socket)),
        deadline_(server.io),
        request_(server.options.max_request_bytes),
        peer_(std::move(peer)) {
    ++server_.active;
  }
  ~MetricsConnection() { --server_.active; }

  const asio::ip::address& peer() const { return peer_; }
  bool is_open() const { return phase_ != Phase::closed; }
  // Waiting for its request (idle) or lingering after its answer: closing it loses no answer.
  bool evictable() const { return phase_ == Phase::reading || phase_ == Phase::draining; }
  void evict() { close(); }

  void start() {
    // One deadline for the whole exchange (request in, answer out, lingering close): a client that
    // stalls anywhere holds a connection slot for at most read_timeout.
    deadline_.expires_after(server_.options.read_timeout);
    deadline_.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec) self->close();
    });
    asio::async_read_until(socket_, request_, "\r\n\r\n",
                           [self = shared_from_this()](error_code ec, size_t) {
                             self->on_request(ec);
                           });
  }

 private:
  void on_request(error_code ec) {
    if (phase_ == Phase::closed) return;  // evicted or timed out
    if (ec == asio::error::not_found) {  // the buffer filled before the head ended
      return answer({413, "Payload Too Large"}, "request larger than the limit\n");
    }
    if (ec) return close();  // timed out, reset or closed before a whole request arrived
    const auto data = request_.data();
    const std::string head(asio::buffers_begin(data), asio::buffers_end(data));
    const Answer a = classify(head);
    if (a.status != 200) return answer(a, fmt::format("{} {}\n", a.status, a.reason));
    answer(a, render_prometheus(server_.metrics, server_.options.rank));
  }

  void answer(Answer a, std::string body) {
    phase_ = Phase::answering;
    response_ = fmt::format(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
        a.status, a.reason,
        a.status == 200 ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8",
        body.size(), a.status == 405 ? "Allow: GET\r\n" : "");
    response_ += body;
    asio::async_write(socket_, asio::buffer(response_),
                      [self = shared_from_this()](error_code ec, size_t) {
                        if (ec) return self->close();
                        // Closing with unread request bytes would reset the connection and could
                        // discard the answer before the client reads it: half-close, then drain.
                        self->socket_.shutdown(tcp::socket::shutdown_send, ec);
                        self->phase_ = Phase::draining;
                        self->drain();
                      });
  }

  void drain() {
    socket_.async_read_some(asio::buffer(discard_),
                            [self = shared_from_this()](error_code ec, size_t) {
                              if (ec) return self->close();
                              self->drain();
                            });
  }

  void close() {
    phase_ = Phase::closed;
    error_code ignored;
    socket_.close(ignored);
    deadline_.cancel();
  }

  enum class Phase { reading, answering, draining, closed };

  detail::MetricsServerState& server_;
  tcp::socket socket_;
  asio::steady_timer deadline_;
  asio::streambuf request_;
  std::string response_;
  std::array<char, 1024> discard_;
  asio::ip::address peer_;
  Phase phase_ = Phase::reading;
};

void detail::MetricsServerState::accept_next() {
  acceptor.async_accept([this](error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;  // stopping
    if (ec) {
      // Out of descriptors or memory: the next accept() would fail at once; pause instead of
      // spinning (the timer lives as long as this retry).
      auto pause = std::make_shared<asio::steady_timer>(io, std::chrono::milliseconds(50));
      pause->async_wait([this, pause](error_code timer_ec) {
        if (timer_ec != asio::error::operation_aborted) accept_next();
      });
      return;
    }
    admit(std::move(socket));
    accept_next();
  });
}

void detail::MetricsServerState::admit(tcp::socket socket) {
  error_code ec;
  const asio::ip::address peer = socket.remote_endpoint(ec).address();
  if (ec) return;  // already gone
  std::erase_if(connections, [](const std::weak_ptr<MetricsConnection>& weak) {
    const auto c = weak.lock();
    return !c || !c->is_open();
  });
  // The oldest evictable connection that `match` accepts, closed and removed; false when none.
  auto evict_oldest = [&](auto match) {
    for (auto it = connections.begin(); it != connections.end(); ++it) {
      const auto c = it->lock();
      if (c && c->evictable() && match(*c)) {
        c->evict();
        connections.erase(it);
        return true;
      }
    }
    return false;
  };
  const auto from_peer = std::count_if(connections.begin(), connections.end(), [&](const auto& w) {
    const auto c = w.lock();
    return c && c->peer() == peer;
  });
  if (from_peer >= options.max_connections_per_address) {
    evict_oldest([&](const MetricsConnection& c) { return c.peer() == peer; });
  }
  if (static_cast<int>(connections.size()) >= options.max_connections) {
    evict_oldest([](const MetricsConnection&) { return true; });
  }
  if (static_cast<int>(connections.size()) >= options.max_connections) {
    socket.close(ec);  // every slot is busy answering: refuse at once rather than queue
    return;
  }
  auto connection = std::make_shared<MetricsConnection>(*this, std::move(socket), peer);
  connections.push_back(connection);
  connection->start();
}

MetricsServer::MetricsServer(const Metrics& metrics, MetricsServerOptions options)
    : impl_(std::make_unique<detail::MetricsServerState>(metrics, std::move(options))) {
  detail::MetricsServerState& s = *impl_;
  SY_ENFORCE_ARG(
      !(s.options.max_connections < 1 || s.options.max_connections_per_address < 1 ||
        s.options.read_timeout.count() <= 0 || s.options.max_request_bytes < 16),
      "metrics endpoint: max_connections ({}) and max_connections_per_address ({}) must be "
      "positive, read_timeout ({} ms) positive and max_request_bytes ({}) at least 16",
      s.options.max_connections, s.options.max_connections_per_address,
      s.options.read_timeout.count(), s.options.max_request_bytes);
  error_code ec;
  const auto address = asio::ip::make_address(s.options.address, ec);
  if (!ec) {
    const tcp::endpoint endpoint(address, s.options.port);
    s.acceptor.open(endpoint.protocol(), ec);
    if (!ec) s.acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) s.acceptor.bind(endpoint, ec);
    if (!ec) s.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  }
  SY_ENFORCE_ARG(!ec,
                 "metrics endpoint: cannot listen on {} port {}: {}; pick another port (0 picks a "
                 "free one) or address",
                 s.options.address, s.options.port, ec.message());
  port_ = s.acceptor.local_endpoint().port();
  s.accept_next();
  s.thread = std::thread([&s] { s.io.run(); });
}

MetricsServer::~MetricsServer() { stop(); }

uint16_t MetricsServer::port() const { return port_; }

void MetricsServer::stop() {
  if (!impl_) return;
  impl_->io.stop();  // run() returns after the handler in progress, if any
  impl_->thread.join();
  impl_.reset();  // destroys the pending handlers, and with them the connections and their sockets
}

}  // namespace switchyard
