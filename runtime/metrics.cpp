#include "runtime/metrics.h"

#include <algorithm>
#include <iterator>

#include <fmt/format.h>

namespace switchyard {

void LatencyHistogram::observe(double seconds) {
  const auto bucket = std::lower_bound(kLatencyBuckets.begin(), kLatencyBuckets.end(), seconds) -
                      kLatencyBuckets.begin();
  buckets_[static_cast<size_t>(bucket)].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(seconds, std::memory_order_relaxed);
}

HistogramSnapshot LatencyHistogram::snapshot() const {
  HistogramSnapshot s;
  uint64_t running = 0;
  for (size_t i = 0; i < kLatencyBuckets.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative[i] = running;
  }
  s.count = running + buckets_.back().load(std::memory_order_relaxed);
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

namespace {

void family(fmt::memory_buffer& out, const char* name, const char* type, const char* help) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void histogram(fmt::memory_buffer& out, const char* name, const std::string& labels,
               const LatencyHistogram& h) {
  const HistogramSnapshot s = h.snapshot();
  auto it = std::back_inserter(out);
  for (size_t i = 0; i < kLatencyBuckets.size(); ++i) {
    fmt::format_to(it, "{}_bucket{{{},le=\"{}\"}} {}\n", name, labels, kLatencyBuckets[i],
                   s.cumulative[i]);
  }
  fmt::format_to(it, "{}_bucket{{{},le=\"+Inf\"}} {}\n", name, labels, s.count);
  fmt::format_to(it, "{}_sum{{{}}} {}\n{}_count{{{}}} {}\n", name, labels, s.sum, name, labels,
                 s.count);
}

}  // namespace

std::string render_prometheus(const Metrics& m, int rank) {
  fmt::memory_buffer out;
  auto it = std::back_inserter(out);
  const std::string r = fmt::format("rank=\"{}\"", rank);
  family(out, "switchyard_alltoall_sent_bytes_total", "counter",
         "Bytes this rank sent in all-to-all calls (dispatch and combine, forward and backward), "
         "by link class.");
  fmt::format_to(it, "switchyard_alltoall_sent_bytes_total{{{},link=\"intra_node\"}} {}\n", r,
                 m.intra_node_bytes.load(std::memory_order_relaxed));
  fmt::format_to(it, "switchyard_alltoall_sent_bytes_total{{{},link=\"inter_node\"}} {}\n", r,
                 m.inter_node_bytes.load(std::memory_order_relaxed));
  family(out, "switchyard_dispatch_seconds", "histogram",
         "Seconds per dispatch all-to-all call, layout included (backward: the output gradients).");
  histogram(out, "switchyard_dispatch_seconds", r + ",pass=\"forward\"", m.dispatch_forward);
  histogram(out, "switchyard_dispatch_seconds", r + ",pass=\"backward\"", m.dispatch_backward);
  family(out, "switchyard_combine_seconds", "histogram",
         "Seconds per combine all-to-all call (backward: the input gradients).");
  histogram(out, "switchyard_combine_seconds", r + ",pass=\"forward\"", m.combine_forward);
  histogram(out, "switchyard_combine_seconds", r + ",pass=\"backward\"", m.combine_backward);
  family(out, "switchyard_device_imbalance", "gauge",
         "Max over mean (token, expert) pairs per device at the layer's last measure; 0 before.");
  fmt::format_to(it, "switchyard_device_imbalance{{{}}} {}\n", r,
                 m.device_imbalance.load(std::memory_order_relaxed));
  family(out, "switchyard_replans_total", "counter", "Expert placements applied (re-plans).");
  fmt::format_to(it, "switchyard_replans_total{{{}}} {}\n", r,
                 m.replans.load(std::memory_order_relaxed));
  family(out, "switchyard_migrated_bytes_total", "counter",
         "Expert bytes (weights and optimizer state) this rank sent to apply placements.");
  fmt::format_to(it, "switchyard_migrated_bytes_total{{{}}} {}\n", r,
                 m.migrated_bytes.load(std::memory_order_relaxed));
  return fmt::to_string(out);
}

}  // namespace switchyard
