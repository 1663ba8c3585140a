// How busy this machine's CPUs were over a stretch of time, from /proc/stat. On a simulated
// cluster every rank, and the kernel's network stack that carries the "inter-node" links, share
// the same cores: communication then costs CPU that overlap cannot hide from the compute.
#pragma once

#include <cstdint>

namespace switchyard::bench {

class CpuUsage {
 public:
  // Starts a stretch (reads the counters).
  void begin();
  // Ends it and adds it to the total.
  void end();
  // Cores busy on average over the stretches so far (user, system and interrupt time of all
  // processes); 0 when /proc/stat could not be read.
  double busy_cores() const;
  int cores() const { return cores_; }

 private:
  struct Sample {
    uint64_t busy = 0, total = 0;
    int cpus = 0;
  };
  static Sample read();
  Sample start_;
  Sample sum_;
  int cores_ = 0;
};

// This process's minor page faults so far (getrusage): a step that allocates fresh memory, or
// touches memory freed back to the kernel, pays one per page.
int64_t minor_page_faults();

}  // namespace switchyard::bench
