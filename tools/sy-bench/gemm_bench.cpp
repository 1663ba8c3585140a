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

namespace {

// GFLOP/s per rank of `once` (2 m n k flops a call), all ranks at once for at least `seconds`,
// after one untimed call (primitive creation and parameter conversion are not the rate); the
// mean over ranks.
template <typename Call>
double sustained_rate(int64_t m, int64_t n, int64_t k, double seconds, MPI_Comm comm, Call once) {
  once(0);
  MPI_Barrier(comm);
  const double start = MPI_Wtime();
  int64_t reps = 0;
  while (MPI_Wtime() - start < seconds) once(++reps);
  double rate = 2.0 * m * n * k * reps / (MPI_Wtime() - start) / 1e9;
  int world = 1;
  MPI_Comm_size(comm, &world);
  MPI_Allreduce(MPI_IN_PLACE, &rate, 1, MPI_DOUBLE, MPI_SUM, comm);
  return rate / world;
}

}  // namespace

double gemm_rate(kernels::Backend<float>& backend, int64_t m, int64_t n, int64_t k, double seconds,
                 MPI_Comm comm) {
  std::vector<float> a(m * k, 0.5f), b(n * k, 0.25f), c(m * n);
  return sustained_rate(m, n, k, seconds, comm, [&](int64_t) {
    backend.gemm(false, true, m, n, k, 1.f, a.data(), k, b.data(), k, 0.f, c.data(), n,
                 kernels::ParamOperand::b);
  });
}

double weight_grad_rate(kernels::Backend<float>& backend, int64_t m, int64_t n, int64_t k,
                        float beta, double seconds, MPI_Comm comm) {
  std::vector<float> a(k * m, 0.5f), b(k * n, 0.25f);
  std::vector<std::vector<float>> grads(kColdGradients, std::vector<float>(m * n, 0.125f));
  return sustained_rate(m, n, k, seconds, comm, [&](int64_t rep) {
    backend.gemm(true, false, m, n, k, 1.f, a.data(), m, b.data(), n, beta,
                 grads[rep % kColdGradients].data(), n);
  });
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
    fmt::print("{:<22} {:>14} {:>18} {:>18} {:>18} {:>14} {:>14}\n", "backend", "square",
               "expert fwd", "expert bwd-data", "expert dW", "dW cold, add", "dW cold, write");
    const std::string dw = fmt::format("{}x{}x{}", o.inter, o.hidden, o.rows);
    fmt::print("{:<22} {:>14} {:>18} {:>18} {:>18} {:>14} {:>14}\n", "",
               fmt::format("{0}x{0}x{0}", o.square),
               fmt::format("{}x{}x{}", o.rows, o.inter, o.hidden),
               fmt::format("{}x{}x{}", o.rows, o.hidden, o.inter), dw, dw, dw);
  }
  for (const BackendChoice& choice : fp32_backends()) {
    auto backend = kernels::make_backend<float>({choice.name, choice.compute});
    const double square = gemm_rate(*backend, o.square, o.square, o.square, o.seconds, comm);
    const double fwd = gemm_rate(*backend, o.rows, o.inter, o.hidden, o.seconds, comm);
    const double bwd = gemm_rate(*backend, o.rows, o.hidden, o.inter, o.seconds, comm);
    const double dw = gemm_rate(*backend, o.inter, o.hidden, o.rows, o.seconds, comm);
    const double dw_add = weight_grad_rate(*backend, o.inter, o.hidden, o.rows, 1.f, o.seconds, comm);
    const double dw_write =
        weight_grad_rate(*backend, o.inter, o.hidden, o.rows, 0.f, o.seconds, comm);
    if (rank == 0) {
      fmt::print("{:<22} {:>14.1f} {:>18.1f} {:>18.1f} {:>18.1f} {:>14.1f} {:>14.1f}\n",
                 fmt::format("{}/{}", choice.name, kernels::compute_precision_name(choice.compute)),
                 square, fwd, bwd, dw, dw_add, dw_write);
    }
  }
  if (rank == 0) {
    fmt::print(
        "\n(shapes are m x n x k of C[m,n] = A[m,k] B[n,k]^T; the expert dW figure stands for the "
        "weight gradients' GEMMs, whose depth is the tokens per expert; the cold ones are those "
        "GEMMs as the backward runs them, C[m,n] = A[k,m]^T B[k,n] into {} distinct gradients in "
        "turn, added to (beta 1) or written as fresh gradient memory (beta 0))\n",
        kColdGradients);
  }
  return 0;
}

}  // namespace switchyard::bench
