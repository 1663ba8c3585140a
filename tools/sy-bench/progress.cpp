#include "tools/sy-bench/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace switchyard::bench {

std::string human_duration(double seconds) {
  if (!(seconds >= 0)) return "?";
  if (seconds < 60) return fmt::format("{:.1f} s", seconds);
  const int64_t s = std::llround(seconds);
  if (s < 3600) return fmt::format("{} min {:02d} s", s / 60, s % 60);
  return fmt::format("{} h {:02d} min", s / 3600, (s % 3600) / 60);
}

Progress::Progress(std::string what, int64_t total, bool enabled)
    : what_(std::move(what)),
      total_(std::max<int64_t>(total, 1)),
      enabled_(enabled),
      terminal_(enabled && isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()) {}

Progress::~Progress() {
  if (terminal_ && done_ > 0) std::fputc('\n', stderr);
}

void Progress::step(const std::string& note) {
  ++done_;
  if (!enabled_) return;
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double left = elapsed / static_cast<double>(done_) * static_cast<double>(total_ - done_);
  const std::string line =
      fmt::format("{}: {}/{}{}, {} elapsed, about {} left", what_, done_, total_,
                  note.empty() ? "" : " (" + note + ")", human_duration(elapsed),
                  human_duration(std::max(0.0, left)));
  if (terminal_) {
    // \r and clear-to-end-of-line: the line is rewritten in place.
    fmt::print(stderr, "\r{}\x1b[K", line);
    std::fflush(stderr);
    return;
  }
  if (done_ >= next_plain_ || done_ == total_) {
    fmt::print(stderr, "{}\n", line);
    next_plain_ = done_ + std::max<int64_t>(1, total_ / 10);
  }
}

}  // namespace switchyard::bench
