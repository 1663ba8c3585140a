// libFuzzer harness: a byte stream through the TCP store's framing exactly as the server reads it
// (comm/bootstrap/tcp_store_protocol.h): the length prefix checked before anything is buffered, the first
// frame the 64-byte handshake, then requests parsed and checked; every frame also read as a reply,
// as the client would. Invariants that the server relies on are asserted.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "comm/bootstrap/tcp_store_protocol.h"

namespace sp = switchyard::comm::store_protocol;

namespace {
void require(bool ok) {
  if (!ok) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data), size);
  constexpr uint32_t kMaxFrame = 4096;
  constexpr size_t kMaxKey = 64;
  bool authenticated = false;
  size_t at = 0;
  while (in.size() - at >= sp::kPrefix) {
    const sp::LengthCheck check =
        sp::check_length(in.subspan(at).first<sp::kPrefix>(), authenticated, kMaxFrame);
    at += sp::kPrefix;
    if (!check.error.empty()) return 0;  // refused: the connection ends
    require(check.length >= 1 && check.length <= kMaxFrame);
    require(authenticated || check.length == sp::kHandshake);
    if (in.size() - at < check.length) return 0;  // truncated
    const std::span<const std::byte> frame = in.subspan(at, check.length);
    at += check.length;
    if (!authenticated) {
      authenticated = true;  // the HMAC is checked outside the parser
      continue;
    }
    const sp::Request r = sp::parse_request(frame, kMaxKey);
    if (r.error.empty()) {
      require(r.key.size() <= kMaxKey);
      const auto* first = reinterpret_cast<const std::byte*>(r.key.data());
      require(first >= frame.data() && first + r.key.size() <= frame.data() + frame.size());
      require(r.arg.data() + r.arg.size() == frame.data() + frame.size());
      require(r.op != sp::kGet || r.arg.size() == 4);
      require(r.op != sp::kAdd || r.arg.size() == 8);
      // What the client would have sent for this request frames back to the same bytes.
      const sp::Bytes again = sp::framed(frame);
      require(again.size() == sp::kPrefix + frame.size() &&
              sp::get_u32(again.data()) == frame.size());
    }
    const sp::Reply reply = sp::parse_reply(frame);
    if (reply.error.empty()) require(reply.body.size() + 1 == frame.size());
  }
  return 0;
}
