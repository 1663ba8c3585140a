// sy-bench: communication benchmarks. `sy-bench alltoall` times dispatch and combine of each
// all-to-all algorithm on one synthetic MoE routing, checks every received byte and every combined
// sum, and reports each figure against the MPI_Alltoallv baseline measured in the same run.
// `sy-bench layer` times the whole MoE layer with overlap off and on (layer_bench.h);
// `sy-bench gemm` the kernel backends' GEMMs against the machine's measured peak (gemm_bench.h).
#include <fmt/format.h>
#include <mpi.h>
#include <cstdlib>

#include <CLI/CLI.hpp>

#include <exception>
#include <string>
#include <vector>

#include "comm/error.h"
#include "tools/sy-bench/alltoall_bench.h"
#include "tools/sy-bench/gemm_bench.h"
#include "tools/sy-bench/layer_bench.h"
#include "tools/sy-bench/step_bench.h"

int main(int argc, char** argv) {
  // A pipelined MoE layer (overlap on) moves data from a communication thread.
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  CLI::App app{"switchyard communication benchmarks"};
  app.require_subcommand(1);
  // Every communicator a benchmark builds takes its timeout from SWITCHYARD_TIMEOUT: the flag sets
  // it for this process before any is built.
  app.add_option_function<double>(
         "--timeout",
         [](double seconds) {
           setenv("SWITCHYARD_TIMEOUT", fmt::format("{}", seconds).c_str(), 1);
         },
         "seconds any wait for another rank may take before the benchmark fails naming it "
         "(default: SWITCHYARD_TIMEOUT, else 120)")
      ->check(CLI::Range(0.001, 7 * 86400.0));
  switchyard::bench::AllToAllBenchOptions o;
  CLI::App* alltoall = app.add_subcommand("alltoall", "dispatch and combine of each algorithm");
  alltoall->add_option("--algo", o.algo, "flat | hierarchical | mpi | all")
      ->check(CLI::IsMember({"flat", "hierarchical", "mpi", "all"}))
      ->capture_default_str();
  alltoall->add_option("--tokens", o.workload.tokens, "tokens per rank")
      ->check(CLI::Range(0, 1 << 22))
      ->capture_default_str();
  alltoall->add_option("--hidden", o.workload.hidden, "hidden size")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  alltoall->add_option("--experts", o.workload.experts, "routed experts")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  alltoall->add_option("--topk", o.workload.topk, "experts per token")
      ->check(CLI::Range(1, 1 << 10))
      ->capture_default_str();
  alltoall->add_option("--zipf", o.workload.zipf, "Zipf exponent of expert popularity (0: uniform)")
      ->capture_default_str();
  alltoall->add_option("--dtype", o.dtype, "element type of tokens and results (bf16: 2 bytes)")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
  alltoall->add_option("--iters", o.iters, "timed iterations (after one warm-up)")
      
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  alltoall
      ->add_option("--ranks-per-node", o.ranks_per_node,
                   "simulate nodes of this many consecutive ranks (0: the real topology)")
      ->capture_default_str();
  alltoall
      ->add_option("--link-gbit", o.link_gbit,
                   "rate of each inter-node link per direction in Gbit/s (e.g. simcluster's "
                   "--rate): also prints each phase's busiest link and the time it bounds")
      ->capture_default_str();
  alltoall
      ->add_option("--link-dev", o.link_dev,
                   "network interface carrying each node's inter-node traffic (simcluster: data0): "
                   "its byte counters, sampled on each node's first rank, give the measured use "
                   "of the busiest link per call (needs --link-gbit)")
      ->needs("--link-gbit");
  alltoall
      ->add_option(
          "--link-svg", o.link_svg,
          "also draw every algorithm's median iteration on the links (each node's sent "
          "and received rate in bins of 5 ms or more, dispatch and combine marked) as an SVG file "
          "(rank 0; needs --link-dev)")
      ->needs("--link-dev");
  alltoall
      ->add_option("--intra", o.intra,
                   "intra-node transports to compare in one run, e.g. shm,mpi: flat and "
                   "hierarchical run over each (rows algorithm/transport), interleaved with mpi")
      ->delimiter(',')
      ->check(CLI::IsMember({"mpi", "shm", "ucx"}));
  alltoall->add_option("--json", o.json,
                       "also write the table and the run's parameters as JSON to this file "
                       "(rank 0; plot several with tools/sy-trace/sy-trace bandwidth)");
  switchyard::bench::LayerBenchOptions l;
  CLI::App* layer = app.add_subcommand(
      "layer",
      "the MoE layer forward + backward with overlap off, on and auto, comm and compute "
      "alone, and the overlap efficiency");
  layer->add_option("--tokens", l.tokens, "tokens per rank")
      ->check(CLI::Range(0, 1 << 22))
      ->capture_default_str();
  layer->add_option("--hidden", l.hidden, "hidden size")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  layer->add_option("--experts", l.experts, "routed experts")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  layer->add_option("--shared", l.shared, "shared experts")
      ->check(CLI::Range(0, 64))
      ->capture_default_str();
  layer->add_option("--topk", l.topk, "experts per token")
      ->check(CLI::Range(1, 1 << 10))
      ->capture_default_str();
  layer->add_option("--inter", l.inter, "intermediate size of each routed expert")
      
      ->check(CLI::Range(1, 1 << 18))
      ->capture_default_str();
  layer->add_option("--zipf", l.zipf, "routing skew: expert popularity ~ Zipf (0: none)")
      ->capture_default_str();
  layer->add_option("--alltoall", l.alltoall, "flat | hierarchical | auto")
      ->check(CLI::IsMember({"flat", "hierarchical", "auto"}))
      ->capture_default_str();
  layer
      ->add_option("--placement", l.placement,
                   "balanced: the balance planner's placement for this routing; contiguous: "
                   "experts in blocks by index")
      ->check(CLI::IsMember({"balanced", "contiguous"}))
      ->capture_default_str();
  layer
      ->add_option("--redundant", l.redundant,
                   "balanced: extra replicas of hot experts; experts + redundant must divide "
                   "by the ranks")
      ->check(CLI::Range(0, 1 << 16))
      ->capture_default_str();
  layer
      ->add_option("--wire", l.wire,
                   "precision of the token rows on the wire: native (fp32) or bf16 (half the "
                   "bytes, rounded to bfloat16)")
      ->check(CLI::IsMember({"native", "bf16"}))
      ->capture_default_str();
  layer
      ->add_option("--backend", l.backend,
                   "kernel backend: openblas or onednn (default: SWITCHYARD_BACKEND, else "
                   "openblas)")
      ->check(CLI::IsMember({"openblas", "onednn"}));
  layer
      ->add_option("--compute", l.compute,
                   "GEMM input precision: native (fp32) or bf16 (onednn; fp32 accumulation)")
      ->check(CLI::IsMember({"native", "bf16"}))
      ->capture_default_str();
  layer->add_option("--chunks", l.chunks, "token chunks of the pipelined layer, or auto")
      ->capture_default_str();
  layer->add_option("--iters", l.iters, "timed iterations")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  layer->add_option("--json", l.json, "also write the figures as JSON to this file (rank 0)");
  layer->add_option("--trace", l.trace,
                    "trace the pipelined layer's timed iterations (overlap on) into this Chrome "
                    "trace file; read it with tools/sy-trace");
  switchyard::bench::GemmBenchOptions g;
  CLI::App* gemm = app.add_subcommand(
      "gemm", "each kernel backend's GEMM rate on a square and on the expert shapes");
  gemm->add_option("--hidden", g.hidden, "hidden size of the expert shapes")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  gemm->add_option("--inter", g.inter, "intermediate size of the expert shapes")
      
      ->check(CLI::Range(1, 1 << 18))
      ->capture_default_str();
  gemm->add_option("--rows", g.rows, "tokens per expert")
      ->check(CLI::Range(1, 1 << 22))
      ->capture_default_str();
  gemm->add_option("--square", g.square, "size of the square GEMM")
      ->check(CLI::Range(1, 1 << 15))
      ->capture_default_str();
  gemm->add_option("--seconds", g.seconds, "time per figure")
      ->check(CLI::Range(0.001, 3600.0))
      ->capture_default_str();
  gemm->add_flag("--coretype", g.coretype_only,
                 "print only the OPENBLAS_CORETYPE launchers should set: nothing when the kernels "
                 "OpenBLAS chose suit this CPU");
  switchyard::bench::StepBenchOptions st;
  CLI::App* step = app.add_subcommand(
      "step", "one layer's training step at one configuration: tokens/s, GEMM share of peak");
  step->add_option("--preset", st.preset, "dsmoe16b | tiny")
      ->check(CLI::IsMember({"dsmoe16b", "tiny"}))
      ->capture_default_str();
  step->add_option("--tokens", st.tokens, "tokens per rank")
      ->check(CLI::Range(0, 1 << 22))
      ->capture_default_str();
  step->add_option("--hidden", st.hidden, "hidden size (default: the preset's)")
      ->check(CLI::Range(0, 1 << 16));
  step->add_option("--experts", st.experts, "routed experts (default: the preset's)")
      ->check(CLI::Range(0, 1 << 16));
  step->add_option("--shared", st.shared, "shared experts (default: the preset's)")
      ->check(CLI::Range(-1, 64));
  step->add_option("--topk", st.topk, "experts per token (default: the preset's)")
      ->check(CLI::Range(0, 1 << 10));
  step->add_option("--inter", st.inter, "routed expert intermediate size (default: the preset's)")
      ->check(CLI::Range(0, 1 << 18));
  step->add_option("--zipf", st.zipf, "routing skew (0: none)")->capture_default_str();
  step->add_option("--alltoall", st.alltoall, "flat | hierarchical")
      ->check(CLI::IsMember({"flat", "hierarchical"}))
      ->capture_default_str();
  step->add_option("--backend", st.backend,
                   "kernel backend: openblas or onednn (default: SWITCHYARD_BACKEND, else "
                   "openblas)")
      ->check(CLI::IsMember({"openblas", "onednn"}));
  step->add_option("--compute", st.compute, "GEMM input precision: native or bf16 (onednn)")
      ->check(CLI::IsMember({"native", "bf16"}))
      ->capture_default_str();
  step->add_option("--wire", st.wire, "rows on the wire: native or bf16")
      ->check(CLI::IsMember({"native", "bf16"}))
      ->capture_default_str();
  step->add_option("--warmup", st.warmup, "untimed steps first")
      ->check(CLI::Range(0, 1000000))
      ->capture_default_str();
  step->add_option("--iters", st.iters, "timed steps")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  int rc = 0;
  try {
    app.parse(argc, argv);
    if (layer->parsed()) {
      rc = switchyard::bench::run_layer_bench(l, MPI_COMM_WORLD);
    } else if (step->parsed()) {
      rc = switchyard::bench::run_step_bench(st, MPI_COMM_WORLD);
    } else if (gemm->parsed()) {
      rc = switchyard::bench::run_gemm_bench(g, MPI_COMM_WORLD);
    } else {
      rc = switchyard::bench::run_alltoall_bench(o, MPI_COMM_WORLD);
    }
  } catch (const CLI::ParseError& e) {
    rc = rank == 0 ? app.exit(e) : (e.get_exit_code() != 0 ? 1 : 0);
  } catch (const std::exception& e) {
    fmt::print(stderr, "sy-bench (rank {}): {}\n", rank, e.what());
    // The other ranks may be waiting for this one in a collective: MPI_Finalize would hang.
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return rc;
}
