// A picture of the inter-node links over time: for one iteration of each algorithm, every node's
// sent and received rate in bins of 5 ms or more, with the dispatch and combine calls marked. A
// stall (one direction silent while the other runs) shows at a glance, where a table of averages
// hides it.
#pragma once

#include <string>
#include <vector>

namespace switchyard::bench {

struct LinkSeries {
  int node = 0;
  bool received = false;     // rx (switch -> node); false: tx
  std::vector<double> gbit;  // per bin
};

struct LinkPanel {
  std::string title;  // e.g. "hierarchical, iteration 4 (the median)"
  double bin_ms = 5.0;
  double dispatch_ms = 0;  // the dispatch call's length; combine follows
  double total_ms = 0;     // dispatch start to combine end
  std::vector<LinkSeries> series;
};

// Writes a self-contained SVG (no plotting library), panels stacked, y from 0 to a little above
// link_gbit. Throws std::runtime_error naming the path when it cannot be written.
void write_link_timeline_svg(const std::string& path, const std::vector<LinkPanel>& panels,
                             double link_gbit, const std::string& caption);

}  // namespace switchyard::bench
