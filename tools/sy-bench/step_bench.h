// `sy-bench step`: one MoE layer's training step (forward, backward, gradient all-reduce) at one
// configuration, as a user would compare it with the layer they run today: tokens/s, forward and
// backward times, the routed experts' GEMM rate as a share of the machine's GEMM peak measured in
// the same run, and minor page faults per step. One layer in memory (sy-bench layer holds four),
// so the DeepSeekMoE-16B shape fits on one rank. The PyTorch baseline is
// tools/sy-bench/torch_layer_bench.py.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>

namespace switchyard::bench {

struct StepBenchOptions {
  std::string preset = "dsmoe16b";  // dsmoe16b | tiny: the shape; the flags below override it
  int64_t tokens = 256;             // per rank
  int64_t hidden = 0;               // 0: the preset's
  int experts = 0, shared = -1, topk = 0;
  int64_t inter = 0;
  double zipf = 0.0;  // routing skew: expert popularity ~ Zipf; 0: none
  std::string alltoall = "flat";
  std::string backend;  // "" = SWITCHYARD_BACKEND, else openblas
  std::string compute = "native";
  std::string wire = "native";
  int warmup = 2;
  int iters = 5;
};

int run_step_bench(const StepBenchOptions& options, MPI_Comm comm);

}  // namespace switchyard::bench
