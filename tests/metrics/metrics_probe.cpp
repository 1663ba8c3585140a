// Measures whether scrapes get through while one address holds idle connections (not a test:
// prints the figure in docs/hardening.md):
//   metrics_probe [idle connections] [scrapes]
// The idle connections come from loopback, like the scrapes; each is renewed (closed and reopened)
// before the server's read timeout would drop it, and reopened at once when the server closes it.
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <thread>
#include <utility>

#include "runtime/metrics.h"
#include "runtime/metrics_server.h"
#include "tests/metrics/metrics_client.h"

int main(int argc, char** argv) {
  using namespace std::chrono_literals;
  using Clock = std::chrono::steady_clock;
  const int idle = argc > 1 ? std::atoi(argv[1]) : 8;
  const int scrapes = argc > 2 ? std::atoi(argv[2]) : 30;
  switchyard::Metrics metrics;
  switchyard::MetricsServerOptions options;  // the defaults, as train_moe serves them
  switchyard::MetricsServer server(metrics, options);
  const uint16_t port = server.port();
  const auto renew_after = options.read_timeout * 3 / 4;

  std::atomic<bool> done{false};
  std::thread holder([&] {
    std::deque<std::pair<int, Clock::time_point>> held;
    while (!done) {
      // Renewed before the deadline, and reopened at once when the server closed one.
      std::erase_if(held, [&](const std::pair<int, Clock::time_point>& h) {
        pollfd p{h.first, POLLIN, 0};
        const bool renew = ::poll(&p, 1, 0) > 0 || Clock::now() - h.second > renew_after;
        if (renew) ::close(h.first);
        return renew;
      });
      while (static_cast<int>(held.size()) < idle) {
        held.emplace_back(switchyard::testing::connect_loopback(port, 1000), Clock::now());
      }
      std::this_thread::sleep_for(2ms);
    }
    for (auto& [fd, since] : held) ::close(fd);
  });
  std::this_thread::sleep_for(200ms);  // the idle connections are in place
  int served = 0;
  for (int i = 0; i < scrapes; ++i) {
    if (switchyard::testing::status_of(switchyard::testing::http_get(port)) == 200) ++served;
    std::this_thread::sleep_for(100ms);
  }
  done = true;
  holder.join();
  std::printf(
      "metrics: %d idle connections from one address renewed every %lld ms (and at once when "
      "closed): %d of %d "
      "scrapes served\n",
      idle, static_cast<long long>(renew_after.count()), served, scrapes);
  return 0;
}
