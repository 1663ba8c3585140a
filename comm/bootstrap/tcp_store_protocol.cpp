#include "comm/bootstrap/tcp_store_protocol.h"

#include <fmt/format.h>

namespace switchyard::comm::store_protocol {

void put_u32(Bytes& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::byte>(v >> (8 * i)));
}
uint32_t get_u32(const std::byte* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}
void put_i64(Bytes& out, int64_t v) {
  for (int i = 0; i < 8; ++i) {
    out.push_back(static_cast<std::byte>(static_cast<uint64_t>(v) >> (8 * i)));
  }
}
int64_t get_i64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return static_cast<int64_t>(v);
}
void append(Bytes& out, std::span<const std::byte> bytes) {
  out.insert(out.end(), bytes.begin(), bytes.end());
}

Bytes framed(std::span<const std::byte> payload) {
  Bytes out;
  out.reserve(kPrefix + payload.size());
  put_u32(out, static_cast<uint32_t>(payload.size()));
  append(out, payload);
  return out;
}

Bytes reply(Status status, std::span<const std::byte> body) {
  Bytes out;
  out.reserve(kPrefix + 1 + body.size());
  put_u32(out, static_cast<uint32_t>(1 + body.size()));
  out.push_back(static_cast<std::byte>(status));
  append(out, body);
  return out;
}

LengthCheck check_length(std::span<const std::byte, kPrefix> prefix, bool authenticated,
                         uint32_t max_frame) {
  const uint32_t length = get_u32(prefix.data());
  if (length == 0 || length > max_frame) {
    return {length, fmt::format("frame length {} outside [1, {}] (oversized or malformed; the "
                                "limit is StoreLimits::max_frame)",
                                length, max_frame)};
  }
  if (!authenticated && length != kHandshake) {
    return {length, fmt::format("handshake of {} bytes, expected {}", length, kHandshake)};
  }
  return {length, {}};
}

Request parse_request(std::span<const std::byte> frame, size_t max_key) {
  Request r;
  if (frame.size() < kRequestHeader) {
    r.error = "request shorter than its header";
    return r;
  }
  const auto op = static_cast<uint8_t>(frame[0]);
  const uint32_t key_length = get_u32(frame.data() + 1);
  if (key_length > max_key || key_length > frame.size() - kRequestHeader) {
    r.error =
        fmt::format("key of {} bytes (at most {}, and within the frame)", key_length, max_key);
    return r;
  }
  r.key =
      std::string_view(reinterpret_cast<const char*>(frame.data() + kRequestHeader), key_length);
  r.arg = frame.subspan(kRequestHeader + key_length);
  switch (op) {
    case kSet:
      break;
    case kGet:
      if (r.arg.size() != 4) r.error = "get without its 4-byte wait";
      break;
    case kAdd:
      if (r.arg.size() != 8) r.error = "add without its 8-byte delta";
      break;
    default:
      r.error = fmt::format("unknown operation {}", op);
      return r;
  }
  r.op = static_cast<Op>(op);
  return r;
}

Reply parse_reply(std::span<const std::byte> frame) {
  Reply r;
  if (frame.empty()) {
    r.error = "empty reply";
    return r;
  }
  const auto status = static_cast<uint8_t>(frame[0]);
  if (status > kRefused) {
    r.error = fmt::format("reply with unknown status {}", status);
    return r;
  }
  r.status = static_cast<Status>(status);
  r.body = frame.subspan(1);
  return r;
}

}  // namespace switchyard::comm::store_protocol
