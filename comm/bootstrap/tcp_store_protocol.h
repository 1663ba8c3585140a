// The TCP store's wire format as pure functions, shared by the server, the client and the fuzzer
// (tests/fuzz/fuzz_store_frames.cpp): no sockets, no allocation beyond the returned values.
//
// Every message is a frame: a 4-byte little-endian length, then that many bytes. Before a peer has
// authenticated, the only frame it may send is the 64-byte handshake (nonce_c | HMAC), so the
// server never buffers more than 64 bytes for a peer that has not proved it holds the secret; after
// authentication a frame holds 1 to StoreLimits::max_frame bytes. A request is
// "op (1) | key length (4) | key | argument"; a reply "status (1) | body".
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace switchyard::comm {

// What the server accepts (TcpStoreServer's constructor checks them; the client sizes its requests
// by the defaults).
struct StoreLimits {
  static constexpr uint32_t kMaxFrameCeiling = 1u << 30;  // the largest max_frame accepted

  uint32_t max_frame = 1u << 20;                  // bytes in one frame (after authentication)
  size_t max_key = 1024;                          // bytes in one key
  size_t max_total = size_t{64} << 20;            // bytes of keys and values held in all
  int max_connections = 4096;                     // open at once
  int max_unauthenticated = 64;                   // open at once before their handshake
  std::chrono::milliseconds read_deadline{5000};  // handshake, and any frame once begun
  std::chrono::milliseconds max_wait{60000};      // longest server-side wait of one get
};

}  // namespace switchyard::comm

namespace switchyard::comm::store_protocol {

using Bytes = std::vector<std::byte>;

constexpr size_t kNonce = 32;
constexpr size_t kMac = 32;
constexpr size_t kHandshake = kNonce + kMac;  // the one frame an unauthenticated peer may send
constexpr size_t kPrefix = 4;                 // the length prefix
constexpr size_t kRequestHeader = 5;          // op and key length
enum Op : uint8_t { kSet = 1, kGet = 2, kAdd = 3 };
enum Status : uint8_t { kOk = 0, kMissing = 1, kRefused = 2 };

void put_u32(Bytes& out, uint32_t v);
uint32_t get_u32(const std::byte* p);
void put_i64(Bytes& out, int64_t v);
int64_t get_i64(const std::byte* p);
void append(Bytes& out, std::span<const std::byte> bytes);

// Length prefix then payload.
Bytes framed(std::span<const std::byte> payload);
// A framed reply: status, then body.
Bytes reply(Status status, std::span<const std::byte> body = {});

// The frame a length prefix announces: its length, or (error not empty) why it is refused.
// authenticated false: the only acceptable length is kHandshake.
struct LengthCheck {
  uint32_t length = 0;
  std::string error;
};
LengthCheck check_length(std::span<const std::byte, kPrefix> prefix, bool authenticated,
                         uint32_t max_frame);

// An authenticated request frame, checked: a known op, a key of at most max_key bytes within the
// frame, and the argument size the op needs (get: 4-byte wait, add: 8-byte delta). key and arg
// point into the frame.
struct Request {
  Op op = kSet;
  std::string_view key;
  std::span<const std::byte> arg;
  std::string error;  // not empty: refused, and why
};
Request parse_request(std::span<const std::byte> frame, size_t max_key);

// A reply frame as the client reads it: error when empty or an unknown status; refusal is the
// server's reason when status is kRefused.
struct Reply {
  Status status = kOk;
  std::span<const std::byte> body;
  std::string error;
};
Reply parse_reply(std::span<const std::byte> frame);

}  // namespace switchyard::comm::store_protocol
