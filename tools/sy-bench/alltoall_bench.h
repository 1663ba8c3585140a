// `sy-bench alltoall`: the driver behind the subcommand.
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

#include "tools/sy-bench/workload.h"

namespace switchyard::bench {

struct AllToAllBenchOptions {
  std::string algo = "all";
  std::string dtype = "fp32";
  WorkloadOptions workload;
  int iters = 20;
  int ranks_per_node = 0;
  // Rate of each inter-node link per direction (Gbit/s); > 0 adds the link-bound table.
  double link_gbit = 0.0;
  // Network interface whose byte counters measure the link during each call (simcluster: data0);
  // needs link_gbit. Empty: no measurement.
  std::string link_dev;
  // Non-empty (needs link_dev): rank 0 draws each algorithm's median iteration on the links, every
  // node's sent and received rate in bins of 5 ms or more, as an SVG picture here.
  std::string link_svg;
  // Intra-node transports to compare (e.g. shm and mpi): flat and hierarchical run once over each,
  // labelled algorithm/transport, interleaved in one run. Empty: the configured one (environment).
  std::vector<std::string> intra;
  std::string json;  // non-empty: rank 0 also writes the table and the parameters here
};

// Prints the table on rank 0; returns 1 if any byte or sum was wrong on any rank.
int run_alltoall_bench(const AllToAllBenchOptions& options, MPI_Comm comm);

}  // namespace switchyard::bench
