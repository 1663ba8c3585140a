// `sy-bench gemm`: what the machine's GEMMs can do, per kernel backend, on every rank at once (so
// that ranks sharing cores share them as the layer's do): a large square GEMM (the machine's
// measured peak) and the layer's expert shapes. Also says which kernels OpenBLAS runs and which
// OPENBLAS_CORETYPE suits the CPU (`--coretype` prints only the one launchers should set: nothing
// when OpenBLAS's own choice suits the CPU).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>

#include "kernels/backend.h"

namespace switchyard::bench {

struct GemmBenchOptions {
  int64_t hidden = 2048;  // expert shapes: [rows, hidden] x [hidden, inter] and back
  int64_t inter = 1408;
  int64_t rows = 24;      // tokens per expert (dsmoe16b: 256 tokens x top-6 / 64 experts)
  int64_t square = 1024;  // the peak's GEMM is square x square x square
  double seconds = 0.5;   // per figure
  bool coretype_only = false;
};

// GFLOP/s per rank of backend on C[m,n] = A[m,k] B^T ([n,k] stored, B a parameter), all ranks at
// once for at least `seconds`; the mean over ranks.
double gemm_rate(kernels::Backend<float>& backend, int64_t m, int64_t n, int64_t k, double seconds,
                 MPI_Comm comm);

// GFLOP/s per rank of backend on weight gradients as the layer's backward makes them:
// C[m,n] = A[k,m]^T B[k,n] + beta C (A and B the activations of k tokens), into one of
// kColdGradients distinct C in turn, so that every C comes from memory as a parameter-sized
// gradient does. beta 1 adds to a gradient; beta 0 writes fresh gradient memory
// (sy_layer_bind_fresh_grad), which some backends do without reading C.
double weight_grad_rate(kernels::Backend<float>& backend, int64_t m, int64_t n, int64_t k,
                        float beta, double seconds, MPI_Comm comm);
inline constexpr int kColdGradients = 8;

struct MachinePeak {
  double gflops = 0;    // per rank, all ranks at once
  std::string backend;  // the backend that reached it
};

// The best fp32 (native) rate of every backend this build has on a square GEMM: the figure the
// layer's GEMM rates are shares of. With compute bf16, the bf16 rate of the onednn backend.
MachinePeak machine_gemm_peak(kernels::ComputePrecision compute, int64_t square, double seconds,
                              MPI_Comm comm);

int run_gemm_bench(const GemmBenchOptions& options, MPI_Comm comm);

}  // namespace switchyard::bench
