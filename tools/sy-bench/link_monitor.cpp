#include "tools/sy-bench/link_monitor.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <stdexcept>

namespace switchyard::bench {

namespace {

int open_counter(const std::string& device, const char* name) {
  const std::string path = fmt::format("/sys/class/net/{}/statistics/{}", device, name);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw std::runtime_error(fmt::format(
        "--link-dev: cannot read {} (no interface '{}' here; under tools/simcluster the shaped "
        "link is data0)",
        path, device));
  }
  return fd;
}

int64_t read_counter(int fd) {
  char text[32] = {};
  const ssize_t n = ::pread(fd, text, sizeof(text) - 1, 0);
  return n > 0 ? std::strtoll(text, nullptr, 10) : 0;
}

}  // namespace

double monotonic_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

LinkMonitor::LinkMonitor(const std::string& device, double interval_s)
    : tx_fd_(open_counter(device, "tx_bytes")), rx_fd_(open_counter(device, "rx_bytes")) {
  samples_.push_back(read());
  thread_ = std::thread([this, interval_s] { run(interval_s); });
}

LinkMonitor::~LinkMonitor() {
  stop_ = true;
  thread_.join();
  ::close(tx_fd_);
  ::close(rx_fd_);
}

LinkMonitor::Sample LinkMonitor::read() const {
  return {monotonic_seconds(), read_counter(tx_fd_), read_counter(rx_fd_)};
}

void LinkMonitor::run(double interval_s) {
  // The ranks oversubscribe the cores; a sampler at normal priority would wait for a time slice
  // and stretch its intervals to milliseconds. Real-time priority (root) keeps them short; it
  // takes almost nothing (one wake-up and two small reads per interval).
  sched_param param{};
  param.sched_priority = 1;
  realtime_ = pthread_setschedparam(pthread_self(), SCHED_FIFO, &param) == 0;
  const auto interval = std::chrono::duration<double>(interval_s);
  while (!stop_) {
    std::this_thread::sleep_for(interval);
    const Sample s = read();
    std::lock_guard lock(mutex_);
    samples_.push_back(s);
  }
}

LinkWindow LinkMonitor::window(double begin, double end) const {
  std::lock_guard lock(mutex_);
  // Samples bracket the window: the last one at or before `begin` is the baseline; bytes counted
  // by the first sample at or after `end` may belong to the window's end, so it is included.
  const auto after_begin = std::partition_point(samples_.begin(), samples_.end(),
                                                [&](const Sample& s) { return s.t <= begin; });
  const size_t first =
      after_begin == samples_.begin() ? 0 : static_cast<size_t>(after_begin - samples_.begin()) - 1;
  const auto at_end =
      std::partition_point(samples_.begin() + static_cast<ptrdiff_t>(first), samples_.end(),
                           [&](const Sample& s) { return s.t < end; });
  const size_t last = std::min(static_cast<size_t>(at_end - samples_.begin()), samples_.size() - 1);
  auto activity = [&](int64_t Sample::*counter) {
    LinkActivity a;
    a.bytes = static_cast<double>(samples_[last].*counter - samples_[first].*counter);
    size_t moved_first = SIZE_MAX, moved_last = SIZE_MAX;
    for (size_t i = first + 1; i <= last; ++i) {
      if (samples_[i].*counter == samples_[i - 1].*counter) continue;
      if (moved_first == SIZE_MAX) moved_first = i;
      moved_last = i;
    }
    if (moved_first != SIZE_MAX) {
      a.active_s =
          std::min(samples_[moved_last].t, end) - std::max(samples_[moved_first - 1].t, begin);
    }
    return a;
  };
  return {activity(&Sample::tx), activity(&Sample::rx)};
}

}  // namespace switchyard::bench
