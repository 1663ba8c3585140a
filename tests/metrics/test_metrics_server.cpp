// The metrics endpoint on its own (no layer, no MPI): the Prometheus text it serves parses and
// carries what was recorded, bad requests get 4xx and leave it serving, and stalled clients neither
// block others nor outlive the deadline, and idle connections cannot lock scrapes out. Loopback and
// ephemeral ports only; the only time bounds are generous ones for "did not hang".
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/error.h"
#include "runtime/metrics.h"
#include "runtime/metrics_server.h"
#include "tests/metrics/metrics_client.h"

namespace sy = switchyard;
using namespace switchyard::testing;

namespace {

sy::MetricsServerOptions loopback(std::chrono::milliseconds read_timeout = std::chrono::seconds(5),
                                  int max_connections = 8) {
  return {.address = "127.0.0.1", .port = 0, .rank = 3, .read_timeout = read_timeout,
          .max_request_bytes = 8192, .max_connections = max_connections};
}

TEST(MetricsServer, ServesWhatWasRecorded) {
  sy::Metrics m;
  m.intra_node_bytes = 1000;
  m.inter_node_bytes = 24;
  for (double s : {0.0002, 0.003, 0.003, 20.0}) m.dispatch_forward.observe(s);
  m.combine_backward.observe(0.5);
  m.device_imbalance = 1.25;
  m.replans = 2;
  m.migrated_bytes = 4096;
  sy::MetricsServer server(m, loopback());
  ASSERT_NE(server.port(), 0);

  const std::string response = http_get(server.port());
  ASSERT_EQ(status_of(response), 200) << response;
  EXPECT_EQ(header_of(response, "Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(header_of(response, "Content-Length"), std::to_string(body_of(response).size()));
  const Exposition e = parse_prometheus(body_of(response));
  EXPECT_EQ(e.types.at("switchyard_alltoall_sent_bytes_total"), "counter");
  EXPECT_EQ(e.types.at("switchyard_dispatch_seconds"), "histogram");
  EXPECT_EQ(e.types.at("switchyard_device_imbalance"), "gauge");
  EXPECT_EQ(e.value("switchyard_alltoall_sent_bytes_total", {{"link", "intra_node"}}), 1000);
  EXPECT_EQ(e.value("switchyard_alltoall_sent_bytes_total", {{"link", "inter_node"}}), 24);
  const std::map<std::string, std::string> fwd{{"rank", "3"}, {"pass", "forward"}};
  EXPECT_EQ(e.value("switchyard_dispatch_seconds_count", fwd), 4);
  EXPECT_NEAR(e.value("switchyard_dispatch_seconds_sum", fwd), 20.0062, 1e-9);
  auto bucket = [&](const char* le) {
    return e.value("switchyard_dispatch_seconds_bucket", {{"pass", "forward"}, {"le", le}});
  };
  EXPECT_EQ(bucket("0.0001"), 0);
  EXPECT_EQ(bucket("0.00025"), 1);
  EXPECT_EQ(bucket("0.0025"), 1);
  EXPECT_EQ(bucket("0.005"), 3);
  EXPECT_EQ(bucket("10"), 3);
  EXPECT_EQ(bucket("+Inf"), 4);
  EXPECT_EQ(e.value("switchyard_combine_seconds_count", {{"pass", "backward"}}), 1);
  EXPECT_EQ(e.value("switchyard_combine_seconds_count", {{"pass", "forward"}}), 0);
  EXPECT_EQ(e.value("switchyard_device_imbalance"), 1.25);
  EXPECT_EQ(e.value("switchyard_replans_total"), 2);
  EXPECT_EQ(e.value("switchyard_migrated_bytes_total"), 4096);
  for (const Sample& s : e.samples) EXPECT_EQ(s.labels.at("rank"), "3") << s.name;

  m.intra_node_bytes += 1;  // a later scrape sees later values
  EXPECT_EQ(parse_prometheus(body_of(http_get(server.port())))
                .value("switchyard_alltoall_sent_bytes_total", {{"link", "intra_node"}}),
            1001);
}

TEST(MetricsServer, RejectsBadRequestsAndKeepsServing) {
  sy::Metrics m;
  sy::MetricsServer server(m, loopback());
  const uint16_t port = server.port();
  // A head that never ends within the limit.
  const std::string huge = "GET /metrics HTTP/1.1\r\nX-Pad: " + std::string(9000, 'a') + "\r\n\r\n";
  EXPECT_EQ(status_of(http_exchange(port, huge)), 413);
  EXPECT_EQ(status_of(http_exchange(port, "GARBAGE\r\n\r\n")), 400);
  EXPECT_EQ(status_of(http_exchange(port, "GET /metrics\r\n\r\n")), 400);
  EXPECT_EQ(status_of(http_exchange(port, "GET  /metrics HTTP/1.1\r\n\r\n")), 400);
  EXPECT_EQ(status_of(http_exchange(port, "GET /metrics HTTP/9.9\r\n\r\n")), 400);
  EXPECT_EQ(status_of(http_exchange(port, "get /metrics HTTP/1.1\r\n\r\n")), 400);
  const std::string post = http_exchange(port, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(status_of(post), 405);
  EXPECT_EQ(header_of(post, "Allow"), "GET");
  EXPECT_EQ(status_of(http_get(port, "/")), 404);
  EXPECT_EQ(status_of(http_get(port, "/metrics/x")), 404);
  EXPECT_EQ(status_of(http_get(port, "/metrics?name[]=x")), 200);
  EXPECT_EQ(status_of(http_exchange(port, "GET /metrics HTTP/1.0\r\n\r\n")), 200);
  EXPECT_EQ(status_of(http_get(port)), 200);
}

TEST(MetricsServer, SilentClientDoesNotBlockOthersAndIsDropped) {
  sy::Metrics m;
  sy::MetricsServer server(m, loopback(std::chrono::milliseconds(300)));
  const auto start = std::chrono::steady_clock::now();
  const int silent = connect_loopback(server.port());
  const int half = connect_loopback(server.port());  // sends half a request, then stalls
  ASSERT_GT(::send(half, "GET /metr", 9, MSG_NOSIGNAL), 0);
  EXPECT_EQ(status_of(http_get(server.port())), 200);
  // The deadline closes both without an answer; a generous bound only guards against a hang.
  EXPECT_EQ(read_to_end(silent), "");
  EXPECT_EQ(read_to_end(half), "");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(9));
  ::close(silent);
  ::close(half);
  EXPECT_EQ(status_of(http_get(server.port())), 200);
}

// Whether the server closed fd within timeout_ms (true) or still holds it open (false).
bool closed_by_server(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return false;
  char c;
  return ::recv(fd, &c, 1, MSG_DONTWAIT) <= 0;
}

TEST(MetricsServer, ConnectionsBeyondTheLimitCloseTheOldestIdle) {
  sy::Metrics m;
  auto options = loopback(std::chrono::seconds(30), 2);
  sy::MetricsServer server(m, options);
  std::vector<int> held{connect_loopback(server.port()), connect_loopback(server.port())};
  // Served, not refused: the oldest idle connection makes way for it.
  EXPECT_EQ(status_of(http_get(server.port())), 200);
  EXPECT_TRUE(closed_by_server(held[0], 5000));
  EXPECT_FALSE(closed_by_server(held[1], 100));
  for (int fd : held) ::close(fd);
  EXPECT_EQ(status_of(http_get(server.port())), 200);
}

TEST(MetricsServer, EachAddressHoldsAtMostItsShare) {
  sy::Metrics m;
  auto options = loopback(std::chrono::seconds(30), 8);
  options.max_connections_per_address = 4;
  sy::MetricsServer server(m, options);
  std::vector<int> held;
  for (int i = 0; i < 6; ++i) {
    held.push_back(connect_loopback(server.port()));
    EXPECT_FALSE(closed_by_server(held.back(), 50));  // in place before the next one
  }
  // The fifth and sixth closed the first two; the last four stay open.
  EXPECT_TRUE(closed_by_server(held[0], 5000));
  EXPECT_TRUE(closed_by_server(held[1], 5000));
  for (int i = 2; i < 6; ++i) EXPECT_FALSE(closed_by_server(held[i], 50)) << i;
  EXPECT_EQ(status_of(http_get(server.port())), 200);
  for (int fd : held) ::close(fd);
}

TEST(MetricsServer, IdleConnectionsRenewedBeforeTheDeadlineDoNotLockOutScrapes) {
  // Before: eight idle connections from one address, each renewed before the read timeout and
  // reopened at once when closed, held every slot: 0 of 30 scrapes were served. Now that address
  // holds at most 4 of the 8 slots, so a scraper elsewhere (127.0.0.2) gets all 30. (From the
  // same address a scrape may lose its slot to the holder's next connection before its request
  // arrives: measured 29-30 of 30 under load, so that case is not asserted.)
  sy::Metrics m;
  sy::MetricsServer server(m, loopback(std::chrono::milliseconds(2000)));
  const uint16_t port = server.port();
  using Clock = std::chrono::steady_clock;
  std::atomic<bool> done{false};
  std::thread holder([&] {
    std::deque<std::pair<int, Clock::time_point>> open;
    while (!done) {
      const auto now = Clock::now();
      std::erase_if(open, [&](const std::pair<int, Clock::time_point>& h) {
        pollfd p{h.first, POLLIN, 0};
        const bool renew = ::poll(&p, 1, 0) > 0 || now - h.second > std::chrono::milliseconds(1500);
        if (renew) ::close(h.first);
        return renew;
      });
      while (open.size() < 8) open.emplace_back(connect_loopback(port, 1000), Clock::now());
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    for (auto& h : open) ::close(h.first);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  int served = 0;
  for (int i = 0; i < 30; ++i) {
    if (status_of(http_get(port, "/metrics", "127.0.0.2")) == 200) ++served;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  done = true;
  holder.join();
  EXPECT_EQ(served, 30);
}

TEST(MetricsServer, OptionsAreChecked) {
  sy::Metrics m;
  auto none = loopback();
  none.max_connections_per_address = 0;
  EXPECT_THROW({ sy::MetricsServer s(m, none); }, sy::Error);
}

TEST(MetricsServer, StopIsBoundedWithClientsConnected) {
  sy::Metrics m;
  sy::MetricsServer server(m, loopback(std::chrono::seconds(60)));
  const int silent = connect_loopback(server.port());
  EXPECT_EQ(status_of(http_get(server.port())), 200);
  server.stop();
  server.stop();  // idempotent
  EXPECT_EQ(read_to_end(silent), "");  // its connection went with the server
  ::close(silent);
}

TEST(MetricsServer, ReportsAnAddressItCannotListenOn) {
  sy::Metrics m;
  sy::MetricsServer first(m, loopback());
  auto busy = loopback();
  busy.port = first.port();
  EXPECT_THROW({ sy::MetricsServer s(m, busy); }, sy::Error);
  auto bad = loopback();
  bad.address = "not-an-address";
  EXPECT_THROW({ sy::MetricsServer s(m, bad); }, sy::Error);
}

}  // namespace
