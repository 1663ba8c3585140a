// The TCP store: ranks meet and exchange bytes; a wrong secret, a truncated frame, an oversized
// length prefix and a stalled frame are each refused with a reason, and the server keeps serving.
#include <gtest/gtest.h>

#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <string>
#include <thread>
#include <vector>

#include "comm/error.h"
#include "comm/tcp_store.h"
#include "comm/topology.h"

namespace {

using namespace switchyard::comm;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

constexpr const char* kSecret = "test-job-secret";

std::span<const std::byte> bytes_of(const std::string& s) { return std::as_bytes(std::span(s)); }
std::string text_of(const std::vector<std::byte>& b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

StoreLimits fast_limits() {
  StoreLimits limits;
  limits.read_deadline = 300ms;
  return limits;
}

// A raw connection, to send what a real client never would.
struct RawPeer {
  explicit RawPeer(uint16_t port) : socket(io) {
    socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  }
  std::vector<std::byte> read_frame() {
    std::array<unsigned char, 4> header{};
    asio::read(socket, asio::buffer(header));
    const uint32_t length = header[0] | header[1] << 8 | header[2] << 16 | uint32_t{header[3]} << 24;
    std::vector<std::byte> body(length);
    asio::read(socket, asio::buffer(body));
    return body;
  }
  void send(const std::vector<unsigned char>& raw) { asio::write(socket, asio::buffer(raw)); }
  asio::io_context io;
  tcp::socket socket;
};

// The server still serves a well-behaved client.
void expect_serving(uint16_t port) {
  TcpStoreClient client("127.0.0.1", port, kSecret, 5s);
  client.set("alive", bytes_of("yes"));
  EXPECT_EQ(text_of(client.get("alive", 1s)), "yes");
}

bool rejected_with(const TcpStoreServer& server, const std::string& needle) {
  for (const auto& why : server.rejections()) {
    if (why.find(needle) != std::string::npos) return true;
  }
  return false;
}

TEST(TcpStore, RanksRendezvousAndExchange) {
  TcpStoreServer server("127.0.0.1", 0, kSecret);
  constexpr int kRanks = 4;
  std::vector<std::vector<std::string>> seen(kRanks);
  std::vector<int64_t> counts(kRanks);
  std::vector<std::thread> ranks;
  for (int r = 0; r < kRanks; ++r) {
    ranks.emplace_back([&, r] {
      TcpStoreClient client("127.0.0.1", server.port(), kSecret, 10s);
      client.set("addr/" + std::to_string(r), bytes_of("rank" + std::to_string(r)));
      counts[r] = client.add("arrived", 1);
      for (int peer = 0; peer < kRanks; ++peer) {
        seen[r].push_back(text_of(client.get("addr/" + std::to_string(peer), 10s)));
      }
    });
  }
  for (auto& t : ranks) t.join();
  for (int r = 0; r < kRanks; ++r) {
    ASSERT_EQ(seen[r].size(), size_t{kRanks});
    for (int peer = 0; peer < kRanks; ++peer) EXPECT_EQ(seen[r][peer], "rank" + std::to_string(peer));
  }
  std::sort(counts.begin(), counts.end());
  EXPECT_EQ(counts, (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_TRUE(server.rejections().empty());
}

TEST(TcpStore, GetOfAMissingKeyTimesOutNamingIt) {
  TcpStoreServer server("127.0.0.1", 0, kSecret);
  TcpStoreClient client("127.0.0.1", server.port(), kSecret, 5s);
  try {
    client.get("never/set", 200ms);
    FAIL() << "expected a timeout";
  } catch (const CommError& e) {
    EXPECT_EQ(e.code(), ErrorCode::timeout);
    EXPECT_NE(std::string(e.what()).find("never/set"), std::string::npos) << e.what();
  }
}

TEST(TcpStore, WrongSecretIsRefused) {
  TcpStoreServer server("127.0.0.1", 0, kSecret);
  try {
    TcpStoreClient intruder("127.0.0.1", server.port(), "not-the-secret", 5s);
    FAIL() << "a client with the wrong secret was accepted";
  } catch (const CommError& e) {
    EXPECT_EQ(e.code(), ErrorCode::peer_failure);
    EXPECT_NE(std::string(e.what()).find("authentication failed"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(rejected_with(server, "authentication failed"));
  expect_serving(server.port());
}

TEST(TcpStore, OversizedLengthPrefixIsRefused) {
  TcpStoreServer server("127.0.0.1", 0, kSecret, fast_limits());
  RawPeer peer(server.port());
  peer.read_frame();                       // the server's challenge
  peer.send({0xff, 0xff, 0xff, 0xff});     // a 4 GiB frame
  const std::string refusal = text_of(peer.read_frame()).substr(1);
  EXPECT_NE(refusal.find("frame length 4294967295 outside"), std::string::npos) << refusal;
  EXPECT_TRUE(rejected_with(server, "oversized"));
  expect_serving(server.port());
}

TEST(TcpStore, TruncatedMessageIsRefused) {
  TcpStoreServer server("127.0.0.1", 0, kSecret, fast_limits());
  {
    RawPeer peer(server.port());
    peer.read_frame();
    peer.send({100, 0, 0, 0, 1, 2, 3});  // announces 100 bytes, sends 3, hangs up
  }
  // A peer that stops mid-frame is cut off at the read deadline, with a reason.
  RawPeer stalled(server.port());
  stalled.read_frame();
  stalled.send({100, 0, 0, 0, 1, 2, 3});
  const std::string refusal = text_of(stalled.read_frame()).substr(1);
  EXPECT_NE(refusal.find("not completed within 300 ms"), std::string::npos) << refusal;
  EXPECT_TRUE(rejected_with(server, "truncated message"));
  expect_serving(server.port());
}

TEST(TcpStore, MalformedHandshakeIsRefused) {
  TcpStoreServer server("127.0.0.1", 0, kSecret, fast_limits());
  RawPeer peer(server.port());
  peer.read_frame();
  peer.send({3, 0, 0, 0, 'a', 'b', 'c'});  // a complete frame, but not a handshake
  const std::string refusal = text_of(peer.read_frame()).substr(1);
  EXPECT_NE(refusal.find("handshake of 3 bytes"), std::string::npos) << refusal;
  expect_serving(server.port());
}

TEST(TcpStore, EmptySecretIsRejectedUpFront) {
  EXPECT_THROW(TcpStoreServer("127.0.0.1", 0, ""), CommError);
}

TEST(Topology, FromHostnamesGroupsRanksByHost) {
  const std::vector<std::string> hosts{"a", "a", "b", "a", "b"};
  const Topology t = Topology::from_hostnames(4, hosts);
  EXPECT_EQ(t.node_of_rank, (std::vector<int>{0, 0, 1, 0, 1}));
  EXPECT_EQ(t.num_nodes, 2);
  EXPECT_EQ(t.node, 1);
  EXPECT_EQ(t.local_rank, 1);
  EXPECT_EQ(t.local_size, 2);
  EXPECT_EQ(Topology::from_hostnames(3, hosts).local_rank, 2);
  EXPECT_THROW(Topology::from_hostnames(5, hosts), CommError);
}

}  // namespace
