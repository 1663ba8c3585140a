#include "comm/bootstrap/tcp_store_client.h"

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

}  // namespace

// ---- client ----------------------------------------------------------------------------------

struct TcpStoreClient::Impl {
  Impl(std::string s, std::chrono::milliseconds t) : secret(std::move(s)), timeout(t) {}

  using Clock = std::chrono::steady_clock;

  // Runs one asynchronous operation to completion or the deadline (then closes the socket).
  template <typename Start>
  boost::system::error_code run(Start start, Clock::time_point deadline) {
    boost::system::error_code result = asio::error::would_block;
    start([&result](boost::system::error_code ec, auto&&...) { result = ec; });
    io.restart();
    io.run_until(deadline);
    if (result == asio::error::would_block) {
      boost::system::error_code ignored;
      socket.close(ignored);
      io.restart();
      io.run();  // lets the aborted operation finish before its captures go away
      return asio::error::timed_out;
    }
    return result;
  }

  [[noreturn]] void fail(boost::system::error_code ec, const std::string& what) {
    SY_ENFORCE(ec != asio::error::timed_out, ErrorCode::timeout,
               "tcp store {}: {} timed out after {} ms", where, what, timeout.count());
    throw CommError(ErrorCode::peer_failure,
                    fmt::format("tcp store {}: {} failed: {}", where, what, ec.message()));
  }

  void send(std::span<const std::byte> payload, Clock::time_point deadline, const char* what) {
    const Bytes frame = framed(payload);
    if (auto ec = run([&](auto h) { asio::async_write(socket, asio::buffer(frame), h); },
                      deadline)) {
      fail(ec, what);
    }
  }

  // A reply: its status, then its body; a refusal becomes CommError with the server's reason.
  Bytes receive(Clock::time_point deadline, const char* what) {
    std::array<std::byte, kPrefix> header{};
    if (auto ec = run([&](auto h) { asio::async_read(socket, asio::buffer(header), h); },
                      deadline)) {
      fail(ec, what);
    }
    const uint32_t length = get_u32(header.data());
    const uint32_t cap = StoreLimits{}.max_frame;
    SY_ENFORCE(!(length == 0 || length > cap), ErrorCode::peer_failure,
               "tcp store {}: {}: reply frame of {} bytes, outside [1, {}]; is "
               "MASTER_ADDR/MASTER_PORT this job's store?",
               where, what, length, cap);
    Bytes body(length);
    if (auto ec = run([&](auto h) { asio::async_read(socket, asio::buffer(body), h); },
                      deadline)) {
      fail(ec, what);
    }
    const Reply parsed = parse_reply(body);
    SY_ENFORCE(parsed.error.empty(), ErrorCode::peer_failure, "tcp store {}: {}: {}", where, what,
               parsed.error);
    SY_ENFORCE(parsed.status != kRefused, ErrorCode::peer_failure,
               "tcp store {}: {}: the server {}", where, what,
               std::string(reinterpret_cast<const char*>(parsed.body.data()), parsed.body.size()));
    return body;
  }

  Bytes request(Op op, std::string_view key, std::span<const std::byte> arg,
                Clock::time_point deadline, const char* what) {
    // Refused here, with the sizes, rather than by the server after the bytes crossed the wire.
    const StoreLimits limits;
    SY_ENFORCE_ARG(key.size() <= limits.max_key,
                   "tcp store {}: {}: key of {} bytes; keys hold at most {} bytes", where, what,
                   key.size(), limits.max_key);
    SY_ENFORCE_ARG(
        kRequestHeader + key.size() + arg.size() <= limits.max_frame,
        "tcp store {}: {} '{}': a value of {} bytes does not fit a frame of at most {} bytes "
        "(StoreLimits::max_frame, with {} bytes of header and key); split it over several keys",
        where, what, key, arg.size(), limits.max_frame, kRequestHeader + key.size());
    Bytes payload{static_cast<std::byte>(op)};
    put_u32(payload, static_cast<uint32_t>(key.size()));
    append(payload, as_bytes(key));
    append(payload, arg);
    send(payload, deadline, what);
    return receive(deadline, what);
  }

  std::string secret;
  std::chrono::milliseconds timeout;
  std::string where;
  asio::io_context io;
  tcp::socket socket{io};
};

TcpStoreClient::TcpStoreClient(const std::string& host, uint16_t port, std::string secret,
                               std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>(std::move(secret), timeout)) {
  Impl& c = *impl_;
  c.where = fmt::format("at {}:{}", host, port);
  SY_ENFORCE_ARG(
      !c.secret.empty(),
      "tcp store: empty job secret; give every rank the same secret (SWITCHYARD_JOB_SECRET)");
  const auto deadline = Impl::Clock::now() + timeout;
  tcp::resolver resolver(c.io);
  boost::system::error_code ec;
  const auto endpoints = resolver.resolve(host, std::to_string(port), ec);
  if (ec) c.fail(ec, "resolving the address");
  // Rank 0 may not listen yet: retry refused connections until the deadline.
  while (true) {
    ec = c.run([&](auto h) { asio::async_connect(c.socket, endpoints, h); }, deadline);
    if (!ec) break;
    if (Impl::Clock::now() + std::chrono::milliseconds(50) >= deadline) {
      c.fail(asio::error::timed_out,
             "connecting (is rank 0 running, and are MASTER_ADDR/MASTER_PORT right?)");
    }
    boost::system::error_code ignored;
    c.socket.close(ignored);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  c.socket.set_option(tcp::no_delay(true));

  const Bytes hello = c.receive(deadline, "handshake");
  if (hello.size() != 1 + kNonce) c.fail(asio::error::invalid_argument, "handshake");
  const Bytes server_nonce(hello.begin() + 1, hello.end());
  const Bytes client_nonce = random_nonce();
  const Digest mine = hmac(c.secret, "sy-client", server_nonce, client_nonce);
  Bytes answer = client_nonce;
  append(answer, std::as_bytes(std::span(mine)));
  c.send(answer, deadline, "handshake");
  const Bytes proof = c.receive(deadline, "authentication");
  SY_ENFORCE(same_digest(hmac(c.secret, "sy-server", client_nonce, server_nonce),
                         std::span(proof).subspan(1)),
             ErrorCode::peer_failure,
             "tcp store {}: the server could not prove it holds this job's secret; is "
             "MASTER_ADDR/MASTER_PORT this job's store?",
             c.where);
}

TcpStoreClient::~TcpStoreClient() = default;

void TcpStoreClient::set(std::string_view key, std::span<const std::byte> value) {
  impl_->request(kSet, key, value, Impl::Clock::now() + impl_->timeout, "set");
}

std::vector<std::byte> TcpStoreClient::get(std::string_view key,
                                           std::chrono::milliseconds timeout,
                                           const std::function<void()>& idle) {
  const auto deadline = Impl::Clock::now() + timeout;
  // Waits in slices: short ones when the caller has work to do meanwhile.
  const std::chrono::milliseconds slice(idle ? 10 : 1000);
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - Impl::Clock::now());
    const auto wait = std::clamp(left, std::chrono::milliseconds(0), slice);
    Bytes wait_arg;
    put_u32(wait_arg, static_cast<uint32_t>(wait.count()));
    Bytes body = impl_->request(kGet, key, wait_arg,
                                Impl::Clock::now() + wait + impl_->timeout, "get");
    if (static_cast<uint8_t>(body[0]) == kOk) return Bytes(body.begin() + 1, body.end());
    SY_ENFORCE(Impl::Clock::now() < deadline, ErrorCode::timeout,
               "tcp store {}: key '{}' did not appear within {} ms; the rank that sets it may have "
               "failed or not started",
               impl_->where, key, timeout.count());
    if (idle) idle();
  }
}

int64_t TcpStoreClient::add(std::string_view key, int64_t delta) {
  Bytes arg;
  put_i64(arg, delta);
  const Bytes body = impl_->request(kAdd, key, arg, Impl::Clock::now() + impl_->timeout, "add");
  if (body.size() != 9) impl_->fail(asio::error::invalid_argument, "add");
  return get_i64(body.data() + 1);
}

}  // namespace switchyard::comm
