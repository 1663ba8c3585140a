// Summaries of per-iteration timings, shared by the benchmarks.
#pragma once

#include <algorithm>
#include <vector>

namespace switchyard::bench {

// The middle value; of an even count, the mean of the two middle ones. 0 when empty.
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0.0 : (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
}

// 0 when empty.
inline double minimum(const std::vector<double>& v) {
  return v.empty() ? 0.0 : *std::min_element(v.begin(), v.end());
}

}  // namespace switchyard::bench
