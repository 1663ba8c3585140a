#include "comm/bootstrap/tcp_store_server.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include "comm/bootstrap/tcp_store_auth.h"
#include "comm/bootstrap/tcp_store_protocol.h"
#include "comm/error.h"

namespace switchyard::comm {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using store_protocol::Bytes;

namespace {

using namespace store_protocol;
using namespace store_auth;

// A frame buffer larger than this is released after its request (an authenticated client that
// once set a large value does not pin that much memory while idle).
constexpr size_t kKeptBuffer = size_t{64} << 10;
// Longest pause between accept() attempts that fail (descriptors or memory exhausted).
constexpr std::chrono::milliseconds kMaxAcceptBackoff{100};

void check_limits(const StoreLimits& l) {
  auto fail = [](const std::string& what) {
    throw CommError(ErrorCode::invalid_argument, "tcp store: StoreLimits: " + what);
  };
  if (l.max_frame < kHandshake || l.max_frame > StoreLimits::kMaxFrameCeiling) {
    fail(fmt::format("max_frame {} outside [{}, {}]", l.max_frame, kHandshake,
                     StoreLimits::kMaxFrameCeiling));
  }
  if (l.max_key == 0 || l.max_key + kRequestHeader > l.max_frame) {
    fail(fmt::format("max_key {} must be positive and leave room in a frame of {} bytes", l.max_key,
                     l.max_frame));
  }
  if (l.max_connections < 1 || l.max_unauthenticated < 1) {
    fail(fmt::format("max_connections {} and max_unauthenticated {} must be positive",
                     l.max_connections, l.max_unauthenticated));
  }
  if (l.read_deadline.count() <= 0 || l.max_wait.count() < 0) {
    fail("read_deadline must be positive and max_wait not negative");
  }
}

}  // namespace

// ---- server ----------------------------------------------------------------------------------

class Session;

struct TcpStoreServer::Impl : std::enable_shared_from_this<TcpStoreServer::Impl> {
  Impl(std::string s, StoreLimits l)
      : secret(std::move(s)), limits(l), acceptor(io), accept_timer(io) {}

  void accept();
  // Admits a new unauthenticated session, dropping the oldest one when max_unauthenticated are
  // open (io thread only).
  void admit(const std::shared_ptr<Session>& session);
  void reject(const std::string& why);
  // Answers the sessions parked on key (io thread only).
  void wake(const std::string& key);

  std::string secret;
  StoreLimits limits;
  asio::io_context io;
  tcp::acceptor acceptor;
  asio::steady_timer accept_timer;              // the pause after a failed accept()
  std::chrono::milliseconds accept_backoff{0};  // io thread only
  bool stopping = false;                        // io thread, then the destructor
  std::thread thread;
  std::atomic<int> open{0};
  std::atomic<int> authenticated{0};
  std::atomic<int> unauthenticated{0};
  std::atomic<uint64_t> accept_failures{0};
  std::atomic<uint64_t> dropped_unauthenticated{0};
  // Sessions not yet authenticated, oldest first (io thread only; expired and authenticated
  // entries are pruned on the next admit).
  std::deque<std::weak_ptr<Session>> handshaking;
  std::chrono::milliseconds drain_timeout{10000};
  // Store state: touched only on the io thread.
  std::unordered_map<std::string, Bytes> data;
  size_t total = 0;
  std::unordered_map<std::string, std::vector<std::weak_ptr<Session>>> waiters;
  std::vector<std::weak_ptr<Session>> sessions;
  mutable std::mutex rejected_mutex;
  std::deque<std::string> rejected;
};

// One client connection. Strictly request then reply, so at most one read or one write is in
// flight; `deadline` bounds the handshake and any frame once its first byte arrived.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(std::shared_ptr<TcpStoreServer::Impl> server, tcp::socket socket)
      : server_(std::move(server)),
        socket_(std::move(socket)),
        deadline_(server_->io),
        wait_timer_(server_->io),
        opened_(std::chrono::steady_clock::now()) {
    ++server_->open;
    ++server_->unauthenticated;
  }
  ~Session() {
    --server_->open;
    if (authenticated_) {
      --server_->authenticated;
    } else {
      --server_->unauthenticated;
    }
  }

  bool authenticated() const { return authenticated_; }
  bool is_open() const { return socket_.is_open(); }
  // Makes way for a newer connection: refused with the reason, then closed.
  void drop_unauthenticated(int cap) {
    const auto age = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - opened_);
    refuse(
        fmt::format("dropped: {} unauthenticated connections open (StoreLimits::"
                    "max_unauthenticated), and this, the oldest, had not authenticated "
                    "after {} ms",
                    cap, age.count()));
  }

  void start() {
    peer_ = describe_peer();
    nonce_ = random_nonce();
    arm_deadline("handshake");
    write(reply(kOk, nonce_), [self = shared_from_this()] { self->read_frame(true); });
  }

  // Key a parked get waits on; answered by the server when the key is set.
  const std::string& waiting_for() const { return waiting_; }
  // Closes the connection; pending reads and timers end with operation_aborted.
  void shutdown() {
    boost::system::error_code ignored;
    cancel_deadline();
    ++wait_generation_;
    wait_timer_.cancel();
    socket_.close(ignored);
  }

  void answer_wait() {
    waiting_.clear();
    ++wait_generation_;
    wait_timer_.cancel();
    const Bytes& value = server_->data.at(key_);
    write(reply(kOk, value), [self = shared_from_this()] { self->read_frame(false); });
  }

 private:
  std::string describe_peer() {
    boost::system::error_code ec;
    const auto ep = socket_.remote_endpoint(ec);
    return ec ? std::string("unknown peer") : fmt::format("{}:{}", ep.address().to_string(),
                                                          ep.port());
  }

  // The generation tells a timer that fired just as it was cancelled that it is stale.
  void arm_deadline(const char* what) {
    deadline_.expires_after(server_->limits.read_deadline);
    deadline_.async_wait([self = shared_from_this(), what, generation = ++deadline_generation_](
                             boost::system::error_code ec) {
      if (ec || generation != self->deadline_generation_) return;  // finished in time
      self->refuse(fmt::format("{} not completed within {} ms", what,
                               self->server_->limits.read_deadline.count()));
    });
  }
  void cancel_deadline() {
    ++deadline_generation_;
    deadline_.cancel();
  }

  // Reads one frame; before authentication the handshake deadline already runs, after it the
  // deadline starts with the length prefix (an idle authenticated client is fine). Before
  // authentication the frame goes to the fixed 64-byte handshake buffer: nothing is allocated for
  // what an unauthenticated peer announces.
  void read_frame(bool in_handshake) {
    asio::async_read(socket_, asio::buffer(header_),
                     [self = shared_from_this(), in_handshake](boost::system::error_code ec,
                                                               size_t got) {
                       if (ec) return self->closed(ec, "a length prefix", got);
                       const LengthCheck frame = check_length(self->header_, self->authenticated_,
                                                              self->server_->limits.max_frame);
                       if (!frame.error.empty()) return self->refuse(frame.error);
                       if (in_handshake) return self->read_body(asio::buffer(self->hello_));
                       self->arm_deadline("frame");
                       if (self->body_.capacity() > kKeptBuffer && frame.length <= kKeptBuffer) {
                         Bytes().swap(self->body_);
                       }
                       self->body_.resize(frame.length);
                       self->read_body(asio::buffer(self->body_));
                     });
  }

  void read_body(asio::mutable_buffer into) {
    asio::async_read(socket_, into,
                     [self = shared_from_this()](boost::system::error_code ec, size_t got) {
                       self->cancel_deadline();
                       if (ec) return self->closed(ec, "a frame", got);
                       if (self->authenticated_) {
                         self->handle_request();
                       } else {
                         self->handle_handshake();
                       }
                     });
  }

  // A read ended early: the peer went away (mid-frame is a truncated message) or refuse() closed
  // the socket on a deadline.
  void closed(boost::system::error_code ec, const char* what, size_t got) {
    if (ec == asio::error::operation_aborted || !socket_.is_open()) return;
    if (authenticated_ && got == 0 && std::string_view(what) == "a length prefix") {
      return shutdown();  // a clean disconnect between requests
    }
    server_->reject(fmt::format("{}: connection ended after {} bytes of {} ({}): truncated "
                                "message{}",
                                peer_, got, what, ec.message(),
                                authenticated_ ? "" : " during the handshake"));
    shutdown();
  }

  void handle_handshake() {
    const auto& s = server_->secret;
    const std::span<const std::byte> client_nonce(hello_.data(), kNonce);
    if (!same_digest(hmac(s, "sy-client", nonce_, client_nonce),
                     std::span(hello_).subspan(kNonce))) {
      return refuse("authentication failed: the peer does not hold this job's secret "
                    "(SWITCHYARD_JOB_SECRET)");
    }
    cancel_deadline();
    authenticated_ = true;
    --server_->unauthenticated;
    ++server_->authenticated;
    const Digest proof = hmac(s, "sy-server", client_nonce, nonce_);
    write(reply(kOk, std::as_bytes(std::span(proof))),
          [self = shared_from_this()] { self->read_frame(false); });
  }

  void handle_request() {
    const Request request = parse_request(body_, server_->limits.max_key);
    if (!request.error.empty()) return refuse(request.error);
    key_.assign(request.key);
    const std::span<const std::byte> arg = request.arg;
    auto next = [self = shared_from_this()] { self->read_frame(false); };
    auto& data = server_->data;
    switch (request.op) {
      case kSet: {
        const auto it = data.find(key_);
        const size_t old = it == data.end() ? 0 : key_.size() + it->second.size();
        if (server_->total - old + key_.size() + arg.size() > server_->limits.max_total) {
          return refuse(fmt::format("set '{}' would exceed the store's {} bytes", key_,
                                    server_->limits.max_total));
        }
        server_->total = server_->total - old + key_.size() + arg.size();
        data[key_] = Bytes(arg.begin(), arg.end());
        write(reply(kOk), next);
        server_->wake(key_);
        return;
      }
      case kGet: {
        if (data.contains(key_)) return write(reply(kOk, data[key_]), next);
        const auto wait = std::min(std::chrono::milliseconds(get_u32(arg.data())),
                                   server_->limits.max_wait);
        waiting_ = key_;
        server_->waiters[key_].push_back(weak_from_this());
        wait_timer_.expires_after(wait);
        wait_timer_.async_wait([self = shared_from_this(), generation = ++wait_generation_](
                                   boost::system::error_code ec) {
          if (ec || generation != self->wait_generation_) return;  // answered by a set
          self->waiting_.clear();
          self->write(reply(kMissing), [self] { self->read_frame(false); });
        });
        return;
      }
      case kAdd: {
        Bytes& value = data[key_];
        if (value.size() != 8 && !value.empty()) {
          return refuse(fmt::format("add on '{}', which does not hold an integer", key_));
        }
        if (value.empty()) server_->total += key_.size() + 8;
        const int64_t sum = (value.empty() ? 0 : get_i64(value.data())) + get_i64(arg.data());
        value.clear();
        put_i64(value, sum);
        write(reply(kOk, value), next);
        server_->wake(key_);
        return;
      }
    }
  }

  // Bounded too: a peer that stops reading its replies cannot park a write forever.
  template <typename Then>
  void write(Bytes message, Then then) {
    auto owned = std::make_shared<Bytes>(std::move(message));
    if (authenticated_) arm_deadline("writing a reply");
    asio::async_write(socket_, asio::buffer(*owned),
                      [self = shared_from_this(), owned, then](boost::system::error_code ec,
                                                               size_t) {
                        if (self->authenticated_) self->cancel_deadline();
                        if (ec) return self->shutdown();
                        then();
                      });
  }

  // Records why, tells the peer (best effort), and closes.
  void refuse(const std::string& why) {
    if (!socket_.is_open()) return;
    server_->reject(fmt::format("{}: {}", peer_, why));
    const std::string message = "refused: " + why;
    const Bytes refusal = reply(kRefused, as_bytes(message));
    // Non-blocking and closed right after: a peer that does not read cannot stall the server.
    boost::system::error_code ignored;
    socket_.non_blocking(true, ignored);
    asio::write(socket_, asio::buffer(refusal), ignored);
    shutdown();
  }

  std::shared_ptr<TcpStoreServer::Impl> server_;
  tcp::socket socket_;
  asio::steady_timer deadline_;
  asio::steady_timer wait_timer_;
  std::string peer_;
  Bytes nonce_;
  bool authenticated_ = false;
  std::chrono::steady_clock::time_point opened_;
  std::array<std::byte, kPrefix> header_{};
  std::array<std::byte, kHandshake> hello_{};  // the only frame read before authentication
  Bytes body_;                                 // frames after authentication
  std::string key_;
  std::string waiting_;
  uint64_t deadline_generation_ = 0;
  uint64_t wait_generation_ = 0;
};

void TcpStoreServer::Impl::accept() {
  acceptor.async_accept(
      [self = shared_from_this()](boost::system::error_code ec, tcp::socket socket) {
        if (ec == asio::error::operation_aborted || self->stopping) return;  // shutting down
        if (ec) {
          // Out of descriptors (EMFILE, ENFILE) or memory (ENOBUFS, ENOMEM), or anything else: the
          // pending connection stays queued and the next accept() would fail at once, so pause,
          // doubling up to kMaxAcceptBackoff, instead of spinning. Logged once per streak.
          ++self->accept_failures;
          if (self->accept_backoff.count() == 0) {
            self->reject(fmt::format("accept failed: {}; retrying with pauses of up to {} ms",
                                     ec.message(), kMaxAcceptBackoff.count()));
          }
          self->accept_backoff =
              std::clamp(self->accept_backoff * 2, std::chrono::milliseconds(1), kMaxAcceptBackoff);
          self->accept_timer.expires_after(self->accept_backoff);
          self->accept_timer.async_wait([self](boost::system::error_code timer_ec) {
            if (!timer_ec && !self->stopping) self->accept();
          });
          return;
        }
        self->accept_backoff = std::chrono::milliseconds(0);
        if (self->open.load() >= self->limits.max_connections) {
          self->reject(fmt::format("more than {} connections open", self->limits.max_connections));
        } else {
          auto session = std::make_shared<Session>(self, std::move(socket));
          std::erase_if(self->sessions, [](const auto& weak) { return weak.expired(); });
          self->sessions.push_back(session);
          self->admit(session);
          session->start();
        }
        self->accept();
      });
}

void TcpStoreServer::Impl::admit(const std::shared_ptr<Session>& session) {
  std::erase_if(handshaking, [](const std::weak_ptr<Session>& weak) {
    const auto s = weak.lock();
    return !s || s->authenticated() || !s->is_open();
  });
  // Oldest first: a genuine client authenticates within a round trip, so the oldest is the
  // likeliest to be stalled.
  while (static_cast<int>(handshaking.size()) >= limits.max_unauthenticated) {
    if (auto oldest = handshaking.front().lock())
      oldest->drop_unauthenticated(limits.max_unauthenticated);
    handshaking.pop_front();
    ++dropped_unauthenticated;
  }
  handshaking.push_back(session);
}

void TcpStoreServer::Impl::reject(const std::string& why) {
  std::lock_guard lock(rejected_mutex);
  rejected.push_back(why);
  if (rejected.size() > 64) rejected.pop_front();
}

void TcpStoreServer::Impl::wake(const std::string& key) {
  const auto it = waiters.find(key);
  if (it == waiters.end()) return;
  auto parked = std::move(it->second);
  waiters.erase(it);
  for (auto& weak : parked) {
    if (auto session = weak.lock(); session && session->waiting_for() == key) {
      session->answer_wait();
    }
  }
}

TcpStoreServer::TcpStoreServer(const std::string& host, uint16_t port, std::string secret,
                               StoreLimits limits)
    : impl_(std::make_shared<Impl>(std::move(secret), limits)) {
  check_limits(limits);
  SY_ENFORCE_ARG(
      !impl_->secret.empty(),
      "tcp store: empty job secret; give every rank the same secret (SWITCHYARD_JOB_SECRET)");
  try {
    tcp::resolver resolver(impl_->io);
    const auto endpoint = resolver.resolve(host, std::to_string(port))->endpoint();
    impl_->acceptor.open(endpoint.protocol());
    impl_->acceptor.set_option(tcp::acceptor::reuse_address(true));
    impl_->acceptor.bind(endpoint);
    impl_->acceptor.listen();
  } catch (const boost::system::system_error& e) {
    throw CommError(ErrorCode::invalid_argument,
                    fmt::format("tcp store: cannot listen on {}:{}: {}. The address must be one "
                                "of rank 0's own; if the port is taken (torchrun's own store "
                                "holds MASTER_PORT) give another one, e.g. SWITCHYARD_MASTER_PORT",
                                host, port, e.code().message()));
  }
  impl_->accept();
  impl_->thread = std::thread([impl = impl_] { impl->io.run(); });
}

TcpStoreServer::~TcpStoreServer() {
  asio::post(impl_->io, [impl = impl_] {
    boost::system::error_code ignored;
    impl->stopping = true;
    impl->accept_timer.cancel();
    impl->acceptor.close(ignored);
  });
  const auto until = std::chrono::steady_clock::now() + impl_->drain_timeout;
  while (impl_->authenticated.load() > 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  impl_->io.stop();
  impl_->thread.join();
  impl_->stopping = true;  // the io thread is gone: nothing races these
  impl_->accept_timer.cancel();
  boost::system::error_code ignored;
  impl_->acceptor.close(ignored);
  // Pending handlers own their sessions, which own a reference to impl_: close every socket and
  // let the aborted handlers run here, so nothing stays open (or leaks) after this returns.
  for (auto& weak : impl_->sessions) {
    if (auto session = weak.lock()) session->shutdown();
  }
  impl_->io.restart();
  impl_->io.run();
}

uint16_t TcpStoreServer::port() const { return impl_->acceptor.local_endpoint().port(); }

std::vector<std::string> TcpStoreServer::rejections() const {
  std::lock_guard lock(impl_->rejected_mutex);
  return {impl_->rejected.begin(), impl_->rejected.end()};
}

TcpStoreServer::Stats TcpStoreServer::stats() const {
  return {.open = impl_->open.load(),
          .unauthenticated = impl_->unauthenticated.load(),
          .accept_failures = impl_->accept_failures.load(),
          .dropped_unauthenticated = impl_->dropped_unauthenticated.load()};
}

void TcpStoreServer::set_drain_timeout(std::chrono::milliseconds timeout) {
  impl_->drain_timeout = timeout;
}

}  // namespace switchyard::comm
