// Samples one network interface's byte counters on a background thread, so that a benchmark can
// say how busy an inter-node link really was during a phase: the simulated cluster shapes each
// node's data link, and its counters count what the shaper let through (headers included).
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace switchyard::bench {

// Seconds on the monotonic clock that LinkMonitor stamps its samples with.
double monotonic_seconds();

// What one direction of a link did inside a time window.
struct LinkActivity {
  double bytes = 0;     // counted by the interface in the window
  double active_s = 0;  // from the last sample before the first byte to the last byte's sample
};

struct LinkWindow {
  LinkActivity tx, rx;
};

class LinkMonitor {
 public:
  // Reads /sys/class/net/<device>/statistics/{tx,rx}_bytes every `interval_s` until destroyed.
  // Throws std::runtime_error naming the file when the device has no such counters.
  LinkMonitor(const std::string& device, double interval_s);
  ~LinkMonitor();
  LinkMonitor(const LinkMonitor&) = delete;
  LinkMonitor& operator=(const LinkMonitor&) = delete;

  // Activity in [begin, end] (monotonic_seconds), from the samples taken so far.
  LinkWindow window(double begin, double end) const;
  // Whether the sampler got real-time priority (its intervals are then close to the asked one).
  bool realtime() const { return realtime_; }

 private:
  struct Sample {
    double t;
    int64_t tx, rx;
  };
  Sample read() const;
  void run(double interval_s);

  int tx_fd_ = -1, rx_fd_ = -1;
  mutable std::mutex mutex_;
  std::vector<Sample> samples_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> realtime_{false};
  std::thread thread_;
};

}  // namespace switchyard::bench
