// `sy-bench layer`: the whole MoE layer, forward and backward, with overlap off and on (and auto)
// in the same run, beside its communication alone and its computation alone, and the overlap
// efficiency eta = (T_off - T_on) / min(T_comm, T_compute).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>

namespace switchyard::bench {

struct LayerBenchOptions {
  int64_t tokens = 512;  // per rank
  int64_t hidden = 1024;
  int experts = 64;
  int shared = 2;
  int topk = 6;
  int64_t inter = 352;  // each routed expert's intermediate size
  double zipf = 1.0;    // routing skew (expert popularity ~ Zipf); 0: none
  std::string alltoall = "auto";
  // "balanced": the balance planner places the experts for the benchmark's own routing;
  // "contiguous": blocks of experts by index, as a layer without a planner would.
  std::string placement = "balanced";
  int redundant = 0;  // balanced: extra replicas of hot experts, (experts + redundant) % ranks == 0
  // Precision of the rows on the wire (MoeConfig.wire): native (fp32) or bf16.
  std::string wire = "native";
  std::string backend;             // kernel backend; "" = SWITCHYARD_BACKEND, else openblas
  std::string compute = "native";  // GEMM input precision: native (fp32) or bf16 (onednn)
  std::string chunks = "auto";     // token chunks of the pipelined layer: a count, or auto
  int iters = 5;
  std::string json;  // non-empty: rank 0 also writes the figures here
  // Non-empty: the pipelined layer's timed iterations are traced (runtime/trace.h), merged here.
  std::string trace;
};

// Prints the table on rank 0; returns 1 if the pipelined layer's results disagreed with the
// serial layer's on any rank.
int run_layer_bench(const LayerBenchOptions& options, MPI_Comm comm);

}  // namespace switchyard::bench
