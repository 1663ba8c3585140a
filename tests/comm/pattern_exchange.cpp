#include "tests/comm/pattern_exchange.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace switchyard::comm::test {

namespace {

uint8_t pattern(int src, int dst, size_t size, size_t j) {
  return static_cast<uint8_t>(src * 31 + dst * 17 + size * 5 + j * 7 + 1);
}

}  // namespace

void exchange_patterns(Transport& transport, int rank, int size, std::chrono::milliseconds timeout,
                       const std::vector<size_t>& sizes, int tag, PostOrder order) {
  std::vector<std::vector<uint8_t>> sent;
  std::vector<std::vector<uint8_t>> received;
  std::vector<Request> requests;
  for (int peer = 0; peer < size; ++peer) {
    for (size_t bytes : sizes) {
      auto& out = sent.emplace_back(bytes);
      for (size_t j = 0; j < bytes; ++j) out[j] = pattern(rank, peer, bytes, j);
      auto& in = received.emplace_back(bytes, 0);
      if (order == PostOrder::sends_first) {
        requests.push_back(transport.isend(peer, out.data(), bytes, tag));
        requests.push_back(transport.irecv(peer, in.data(), bytes, tag));
      } else {
        requests.push_back(transport.irecv(peer, in.data(), bytes, tag));
        requests.push_back(transport.isend(peer, out.data(), bytes, tag));
      }
    }
  }
  wait_all(transport, requests, timeout, "pattern exchange");
  EXPECT_TRUE(transport.test(requests.front())) << "a completed request stays completed";
  size_t k = 0;
  for (int peer = 0; peer < size; ++peer) {
    for (size_t bytes : sizes) {
      const auto& in = received[k++];
      size_t wrong = 0;
      for (size_t j = 0; j < bytes; ++j) wrong += in[j] != pattern(peer, rank, bytes, j);
      EXPECT_EQ(wrong, 0u) << bytes << "-byte message from rank " << peer;
    }
  }
}

}  // namespace switchyard::comm::test
