// Progress of a long loop of known length, on stderr (stdout keeps the tables). On a terminal one
// line is rewritten in place: done / total, elapsed time and the time left at the rate so far.
// Elsewhere (logs, CI) a plain line about every tenth of the way and at the end, so that a log
// stays short but still shows that the run is alive.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace switchyard::bench {

class Progress {
 public:
  // enabled: whether this process reports (rank 0); the others count silently.
  Progress(std::string what, int64_t total, bool enabled);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // One more unit done; note (may be empty) is shown beside the count, e.g. "warm-up".
  void step(const std::string& note = "");

 private:
  std::string what_;
  int64_t total_;
  int64_t done_ = 0;
  int64_t next_plain_ = 1;  // where the next plain line is due
  bool enabled_;
  bool terminal_;
  std::chrono::steady_clock::time_point start_;
};

// "4.2 s", "3 min 07 s", "1 h 02 min": a duration as people read it.
std::string human_duration(double seconds);

}  // namespace switchyard::bench
