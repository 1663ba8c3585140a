// Live metrics of the MoE layer: counters, latency histograms and gauges that the training thread
// updates with relaxed atomic adds and stores only (no lock, no allocation, no I/O), and that another
// thread (runtime/metrics_server.h) reads at any time and renders as Prometheus text. Off unless a
// Metrics is attached (MoeLayer::set_metrics); the layer's hooks then cost one branch each.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

namespace switchyard {

// Buckets of the all-to-all latency histograms, upper bounds in seconds: 100 us to 10 s, about
// three per decade (a dsmoe16b dispatch takes 10-1500 ms here, a tiny layer's well under 1 ms).
inline constexpr std::array<double, 16> kLatencyBuckets = {
    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0};

struct HistogramSnapshot {
  std::array<uint64_t, kLatencyBuckets.size()> cumulative{};  // observations <= each bound
  uint64_t count = 0;                                         // all observations (the +Inf bucket)
  double sum = 0;
};

class LatencyHistogram {
 public:
  void observe(double seconds);
  // Count and buckets are always consistent (count is derived from the buckets); the sum is read
  // separately and may lag or lead by the one observation in flight, as in Prometheus' own clients.
  HistogramSnapshot snapshot() const;

 private:
  std::array<std::atomic<uint64_t>, kLatencyBuckets.size() + 1> buckets_{};  // last: above all
  std::atomic<double> sum_{0.0};
};

struct Metrics {
  // Bytes this rank sent in all-to-all calls (the layer's TrafficCounters, never reset).
  std::atomic<int64_t> intra_node_bytes{0};
  std::atomic<int64_t> inter_node_bytes{0};
  // One observation per all-to-all call, timed as PhaseTimes times it (layout included). Backward's
  // dispatch call sends output gradients (the trace's combine_bwd), its combine call the input
  // gradients (dispatch_bwd).
  LatencyHistogram dispatch_forward, dispatch_backward, combine_forward, combine_backward;
  // Max over mean (token, expert) pairs per device, from the layer's last measure_device_load();
  // 0 until first measured.
  std::atomic<double> device_imbalance{0.0};
  // Placements applied (re-plans adopted) and the expert bytes this rank sent to migrate them.
  std::atomic<int64_t> replans{0};
  std::atomic<int64_t> migrated_bytes{0};
};

// Prometheus text exposition format 0.0.4 of m, every sample labelled rank="<rank>".
std::string render_prometheus(const Metrics& m, int rank);

// Observes the time from construction to destruction into (metrics->*histogram); does nothing, not
// even read the clock, when metrics is null.
class LatencyTimer {
 public:
  LatencyTimer(Metrics* metrics, LatencyHistogram Metrics::*histogram)
      : histogram_(metrics != nullptr ? &(metrics->*histogram) : nullptr) {
    if (histogram_ != nullptr) start_ = std::chrono::steady_clock::now();
  }
  ~LatencyTimer() {
    if (histogram_ == nullptr) return;
    histogram_->observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
  }
  LatencyTimer(const LatencyTimer&) = delete;
  LatencyTimer& operator=(const LatencyTimer&) = delete;

 private:
  LatencyHistogram* histogram_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace switchyard
