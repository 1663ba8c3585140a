// Private to the TCP store's server and client: the HMAC-SHA256 challenge-response of its handshake
// (tcp_store_server.h describes it), on OpenSSL's libcrypto.
#pragma once

#include <array>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "comm/bootstrap/tcp_store_protocol.h"

namespace switchyard::comm::store_auth {

using Digest = std::array<unsigned char, store_protocol::kMac>;

// HMAC-SHA256 keyed by secret over label | a | b. Throws CommError(internal) if OpenSSL fails.
Digest hmac(const std::string& secret, std::string_view label, std::span<const std::byte> a,
            std::span<const std::byte> b);
// Constant-time comparison of a received MAC with the expected one.
bool same_digest(const Digest& want, std::span<const std::byte> got);
// kNonce random bytes from OpenSSL's generator.
store_protocol::Bytes random_nonce();

inline std::span<const std::byte> as_bytes(std::string_view s) {
  return std::as_bytes(std::span(s));
}

}  // namespace switchyard::comm::store_auth
