// Measures what the store's limits are for (not a test: prints figures, see docs/hardening.md):
//   store_probe rss [connections]   VmRSS growth while `connections` unauthenticated peers each
//                                   announce a 1 MiB handshake frame and stall
//   store_probe accept [seconds]    CPU time the store burns while accept() fails with EMFILE
// Only the store's public API, so the same program measures a build before and after a change.
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "comm/bootstrap/tcp_store_server.h"

namespace {

using namespace std::chrono_literals;
using switchyard::comm::TcpStoreServer;

long rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

int loopback_socket(uint16_t port, bool do_connect = true) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || !do_connect) return fd;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

int rss(int connections) {
  TcpStoreServer server("127.0.0.1", 0, "probe-secret");
  const long before = rss_kib();
  std::vector<int> fds;
  for (int i = 0; i < connections; ++i) {
    const int fd = loopback_socket(server.port());
    if (fd < 0) break;
    const unsigned char header[5] = {0, 0, 0x10, 0, 1};  // a 1 MiB frame, then one byte of it
    if (::send(fd, header, sizeof header, MSG_NOSIGNAL) != sizeof header) break;
    fds.push_back(fd);
  }
  std::this_thread::sleep_for(1s);  // lets the server read every header
  const long after = rss_kib();
  std::printf(
      "rss: %zu unauthenticated connections announcing 1 MiB frames: VmRSS %ld -> %ld KiB "
      "(+%.1f MiB)\n",
      fds.size(), before, after, static_cast<double>(after - before) / 1024.0);
  for (int fd : fds) ::close(fd);
  return 0;
}

int accept_spin(int seconds) {
  TcpStoreServer server("127.0.0.1", 0, "probe-secret");
  const int client = loopback_socket(server.port(), false);  // its fd exists before the limit
  // Every descriptor below a lowered limit in use: the store's accept() fails with EMFILE.
  rlimit old{};
  getrlimit(RLIMIT_NOFILE, &old);
  rlimit low = old;
  low.rlim_cur = 64;
  std::vector<int> fillers;
  if (setrlimit(RLIMIT_NOFILE, &low) != 0) return std::perror("setrlimit"), 1;
  for (int fd; (fd = ::open("/dev/null", O_RDONLY)) >= 0;) fillers.push_back(fd);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(server.port());
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return std::perror("connect"), 1;
  }
  const double cpu0 = cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu = cpu_seconds() - cpu0;
  std::printf(
      "accept: descriptors exhausted for %.1f s: the process used %.3f s of CPU (%.0f%% of "
      "a core)\n",
      wall, cpu, 100.0 * cpu / wall);
  std::fflush(stdout);  // f21ef03's server may then hang in its destructor (docs/hardening.md)
  for (int fd : fillers) ::close(fd);
  setrlimit(RLIMIT_NOFILE, &old);
  ::close(client);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  const int n = argc > 2 ? std::atoi(argv[2]) : 0;
  if (mode == "rss") return rss(n > 0 ? n : 200);
  if (mode == "accept") return accept_spin(n > 0 ? n : 3);
  std::fprintf(stderr, "usage: store_probe rss [connections] | accept [seconds]\n");
  return 2;
}
