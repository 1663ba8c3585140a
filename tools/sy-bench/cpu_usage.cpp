#include "tools/sy-bench/cpu_usage.h"

#include <cctype>
#include <fstream>
#include <string>

#include <sys/resource.h>

namespace switchyard::bench {

CpuUsage::Sample CpuUsage::read() {
  // First line: "cpu  user nice system idle iowait irq softirq steal ...", summed over CPUs.
  std::ifstream stat("/proc/stat");
  std::string label;
  uint64_t user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  if (!(stat >> label >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal) ||
      label != "cpu") {
    return {};
  }
  const uint64_t busy = user + nice + system + irq + softirq + steal;
  // The per-CPU lines that follow: the cores those sums are over.
  int cpus = 0;
  std::string line;
  while (std::getline(stat, line)) {
    if (line.rfind("cpu", 0) == 0 && line.size() > 3 && std::isdigit(line[3])) ++cpus;
  }
  return {busy, busy + idle + iowait, cpus};
}

void CpuUsage::begin() { start_ = read(); }

void CpuUsage::end() {
  const Sample now = read();
  if (now.total <= start_.total) return;
  sum_.busy += now.busy - start_.busy;
  sum_.total += now.total - start_.total;
  cores_ = now.cpus;
}

double CpuUsage::busy_cores() const {
  return sum_.total == 0 ? 0.0 : static_cast<double>(sum_.busy) / sum_.total * cores_;
}

int64_t minor_page_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

}  // namespace switchyard::bench
