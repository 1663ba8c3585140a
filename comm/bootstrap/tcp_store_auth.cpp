#include "comm/bootstrap/tcp_store_auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstring>

#include "comm/error.h"

namespace switchyard::comm::store_auth {

using namespace store_protocol;

Digest hmac(const std::string& secret, std::string_view label, std::span<const std::byte> a,
            std::span<const std::byte> b) {
  Bytes message(label.size() + a.size() + b.size());
  std::memcpy(message.data(), label.data(), label.size());
  std::memcpy(message.data() + label.size(), a.data(), a.size());
  std::memcpy(message.data() + label.size() + a.size(), b.data(), b.size());
  Digest out{};
  unsigned int length = 0;
  SY_ENFORCE(HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
                  reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                  out.data(), &length) != nullptr,
             ErrorCode::internal, "tcp store: HMAC-SHA256 failed (OpenSSL)");
  return out;
}

bool same_digest(const Digest& want, std::span<const std::byte> got) {
  return got.size() == want.size() && CRYPTO_memcmp(want.data(), got.data(), want.size()) == 0;
}

Bytes random_nonce() {
  Bytes nonce(kNonce);
  SY_ENFORCE(RAND_bytes(reinterpret_cast<unsigned char*>(nonce.data()), kNonce) == 1,
             ErrorCode::internal, "tcp store: RAND_bytes failed (OpenSSL)");
  return nonce;
}

}  // namespace switchyard::comm::store_auth
