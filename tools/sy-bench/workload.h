// The benchmark's routing: every rank draws top-k distinct experts per token from a Zipf law
// (exponent 0: uniform), experts owned in contiguous blocks by the ranks, and payloads that are a
// pure function of (source rank, token, element) so every received byte can be checked.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/alltoall/alltoall.h"

namespace switchyard::bench {

struct WorkloadOptions {
  int64_t tokens = 4096;  // per rank
  int64_t hidden = 1024;
  int experts = 64;
  int topk = 8;
  double zipf = 0.0;
  uint64_t seed = 1;
  // Elements are bfloat16 (2 bytes) instead of fp32: payloads are then small integers (below
  // 256 / ranks) so that every sum stays exact in bf16 and can be checked bit for bit.
  bool bf16 = false;
};

struct Workload {
  std::vector<int32_t> experts;  // [tokens, topk]
  std::vector<float> x;          // [tokens, hidden], the payload values
  std::vector<uint16_t> x_bf16;  // [tokens, hidden], the same values as bf16 (bf16 runs only)
  int modulus = 1024;            // payloads are below this (see payload)
  comm::RouteLayout layout;      // one row per (token, destination rank)
  std::vector<int32_t> side;     // [send rows, 2]: source rank, token
};

int owner_of(int expert, int experts, int world);
// Integer-valued and below `modulus`, so the sums the benchmark checks are exact.
float payload(int source, int64_t token, int64_t element, int modulus = 1024);
// The bytes of one element as the wire carries it (fp32, or bf16 bit patterns).
size_t element_bytes(const WorkloadOptions& options);
Workload make_workload(const WorkloadOptions& options, int rank, int world);

}  // namespace switchyard::bench
