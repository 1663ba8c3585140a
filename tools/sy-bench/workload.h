// The benchmark's routing: every rank draws top-k distinct experts per token from a Zipf law
// (exponent 0: uniform), experts owned in contiguous blocks by the ranks, and payloads that are a
// pure function of (source rank, token, element) so every received byte can be checked.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/alltoall.h"

namespace switchyard::bench {

struct WorkloadOptions {
  int64_t tokens = 4096;  // per rank
  int64_t hidden = 1024;
  int experts = 64;
  int topk = 8;
  double zipf = 0.0;
  uint64_t seed = 1;
};

struct Workload {
  std::vector<int32_t> experts;  // [tokens, topk]
  std::vector<float> x;          // [tokens, hidden]
  comm::RouteLayout layout;      // one row per (token, destination rank)
  std::vector<int32_t> side;     // [send rows, 2]: source rank, token
};

int owner_of(int expert, int experts, int world);
float payload(int source, int64_t token, int64_t element);
Workload make_workload(const WorkloadOptions& options, int rank, int world);

}  // namespace switchyard::bench
