#include "tools/sy-bench/gemm_bench.h"

#include <fmt/format.h>

#include <vector>

#include "kernels/cpu/openblas_core.h"

namespace switchyard::bench {

namespace {

struct BackendChoice {
  const char* name;
  kernels::ComputePrecision compute;
};

// Every backend configuration this build has for fp32 layers.
std::vector<BackendChoice> fp32_backends() {
  std::vector<BackendChoice> all{{"openblas", kernels::ComputePrecision::native}};
#ifdef SWITCHYARD_HAVE_ONEDNN
  all.push_back({"onednn", kernels::ComputePrecision::native});
  all.push_back({"onednn", kernels::ComputePrecision::bf16});
#endif
  return all;
}

}  // namespace

double gemm_rate(kernels::Backend<float>& backend, int64_t m, int64_t n, int64_t k, double seconds,
                 MPI_Comm comm) {
  std::vector<float> a(m * k, 0.5f), b(n * k, 0.25f), c(m * n);
  auto once = [&] {
    backend.gemm(false, true, m, n, k, 1.f, a.data(), k, b.data(), k, 0.f, c.data(), n,
                 kernels::ParamOperand::b);
  };
  once();  // primitive creation and parameter conversion are not the rate
  MPI_Barrier(comm);
  const double start = MPI_Wtime();
  int64_t reps = 0;
  while (MPI_Wtime() - start < seconds) {
    once();
    ++reps;
  }
  double rate = 2.0 * m * n * k * reps / (MPI_Wtime() - start) / 1e9;
  int world = 1;
  MPI_Comm_size(comm, &world);
  MPI_Allreduce(MPI_IN_PLACE, &rate, 1, MPI_DOUBLE, MPI_SUM, comm);
  return rate / world;
}

MachinePeak machine_gemm_peak(kernels::ComputePrecision compute, int64_t square, double seconds,
                              MPI_Comm comm) {
  MachinePeak best;
  for (const BackendChoice& choice : fp32_backends()) {
    if (choice.compute != compute) continue;
    auto backend = kernels::make_backend<float>({choice.name, choice.compute});
    const double rate = gemm_rate(*backend, square, square, square, seconds, comm);
    if (rate > best.gflops) best = {rate, choice.name};
  }
  return best;
}

int run_gemm_bench(const GemmBenchOptions& o, MPI_Comm comm) {
  int rank = 0, world = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &world);
  const kernels::OpenBlasCoreCheck core = kernels::check_openblas_core();
  if (o.coretype_only) {
    if (rank == 0 && core.too_old()) fmt::print("{}\n", core.recommended);
    return 0;
  }
  if (rank == 0) {
    fmt::print(
        "sy-bench gemm: {} rank(s), every figure GFLOP/s per rank with all ranks at once, "
        "sustained over {} s\nOpenBLAS core: {} (CPU ISA level {}, core's {}; recommended "
        "OPENBLAS_CORETYPE: {}){}\n\n",
        world, o.seconds, core.core, core.cpu_level, core.core_level,
        core.recommended.empty() ? "none" : core.recommended,
        core.too_old() ? " -- TOO OLD for this CPU" : "");
    fmt::print("{:<22} {:>14} {:>18} {:>18} {:>18}\n", "backend", "square", "expert fwd",
               "expert bwd-data", "expert dW");
    fmt::print("{:<22} {:>14} {:>18} {:>18} {:>18}\n", "", fmt::format("{0}x{0}x{0}", o.square),
               fmt::format("{}x{}x{}", o.rows, o.inter, o.hidden),
               fmt::format("{}x{}x{}", o.rows, o.hidden, o.inter),
               fmt::format("{}x{}x{}", o.inter, o.hidden, o.rows));
  }
  for (const BackendChoice& choice : fp32_backends()) {
    auto backend = kernels::make_backend<float>({choice.name, choice.compute});
    const double square = gemm_rate(*backend, o.square, o.square, o.square, o.seconds, comm);
    const double fwd = gemm_rate(*backend, o.rows, o.inter, o.hidden, o.seconds, comm);
    const double bwd = gemm_rate(*backend, o.rows, o.hidden, o.inter, o.seconds, comm);
    const double dw = gemm_rate(*backend, o.inter, o.hidden, o.rows, o.seconds, comm);
    if (rank == 0) {
      fmt::print("{:<22} {:>14.1f} {:>18.1f} {:>18.1f} {:>18.1f}\n",
                 fmt::format("{}/{}", choice.name, kernels::compute_precision_name(choice.compute)),
                 square, fwd, bwd, dw);
    }
  }
  if (rank == 0) {
    fmt::print(
        "\n(shapes are m x n x k of C[m,n] = A[m,k] B[n,k]^T; the expert dW figure stands for the "
        "weight gradients' GEMMs, whose depth is the tokens per expert)\n");
  }
  return 0;
}

}  // namespace switchyard::bench
