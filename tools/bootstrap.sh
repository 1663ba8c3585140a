#!/usr/bin/env bash
# One entry point from a fresh Debian 12 machine:
#   bash tools/bootstrap.sh run    install what is missing, build, run the training example
#   bash tools/bootstrap.sh test   install what is missing, build, run every test (then the
#                                  layer test under srun on a one-node Slurm cluster, the
#                                  multi-rank layer tests again under AddressSanitizer, the
#                                  parsers' fuzzers for a bounded time and the pipelined-layer
#                                  tests under ThreadSanitizer)
# Environment: RANKS (default 4), PRESET (default tiny), STEPS, BUILD_TYPE (release|debug).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
preset="${BUILD_TYPE:-release}"
build_dir="$root/build/$preset"
# The mpirun flags of every test and tool, written once in tools/mpirun.flags.
read -ra mpirun_flags <<<"$(grep -v '^#' "$root/tools/mpirun.flags")"

packages=(build-essential cmake ninja-build pkg-config git
          openmpi-bin libopenmpi-dev libucx-dev libboost-dev libfmt-dev nlohmann-json3-dev
          libcli11-dev libopenblas-dev libdnnl-dev libgtest-dev libgmock-dev libbenchmark-dev libssl-dev
          clang libclang-rt-14-dev libtsan2
          python3 python3-venv python3-torch python3-mpi4py python3-numpy python3-pytest
          slurmctld slurmd slurm-client munge)

install_dependencies() {
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    echo "bootstrap: all Debian packages present"
    return
  fi
  echo "bootstrap: installing ${missing[*]}"
  local sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

build() {
  cmake --preset "$preset" -S "$root" >/dev/null
  cmake --build "$build_dir" -j "$(nproc)"
}

# The multi-rank layer and overlap tests once more, built with AddressSanitizer and UBSan (the
# debug preset): a pipelined step that fails half-way must leak nothing and touch no freed buffer.
# Full unwinding lets the suppressions recognise what OpenMPI and UCX keep until exit.
sanitized_tests() {
  local dir="$root/build/debug"
  cmake --preset debug -S "$root" >/dev/null
  cmake --build "$dir" -j "$(nproc)" --target test_overlap_mpi test_layer_mpi
  export ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0
  export LSAN_OPTIONS="suppressions=$root/tests/lsan.supp"
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  export OMPI_MCA_mca_base_component_disable_dlclose=1
  for np in 1 2 3 4; do
    for t in test_overlap_mpi test_layer_mpi; do
      echo "sanitized: $t on $np rank(s)"
      mpirun "${mpirun_flags[@]}" -x ASAN_OPTIONS -x LSAN_OPTIONS \
        -x UBSAN_OPTIONS -x OMPI_MCA_mca_base_component_disable_dlclose -np "$np" \
        "$dir/tests/runtime/$t" --gtest_brief=1
    done
  done
}

# The parsers that read what peers and users send, fuzzed with clang's libFuzzer (ASan and UBSan)
# for FUZZ_SECONDS each (default 15), then the pipelined-layer tests (test_overlap_mpi, which holds
# the comm-queue tests too) on 1 and 2 ranks under ThreadSanitizer (the tsan preset), then the TCP
# store's and the metrics endpoint's tests under it. Any crash, sanitizer report or failed test
# fails the run. docs/hardening.md has the details.
fuzz_and_tsan_tests() {
  local fuzz_dir="$root/build/fuzz" seconds="${FUZZ_SECONDS:-15}"
  # sanitized_tests' settings (full unwinding on every malloc) would slow the fuzzers tenfold.
  unset ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS
  CC=clang CXX=clang++ cmake -S "$root/tests/fuzz" -B "$fuzz_dir" -G Ninja >/dev/null
  cmake --build "$fuzz_dir" -j "$(nproc)"
  for h in store_frames plan workload; do
    # New inputs go to the build folder; the committed seeds stay as they are.
    mkdir -p "$fuzz_dir/corpus/$h" "$fuzz_dir/artifacts/$h"
    echo "fuzz: $h for $seconds s"
    "$fuzz_dir/fuzz_$h" -max_total_time="$seconds" -rss_limit_mb=1024 -print_final_stats=1 \
      -artifact_prefix="$fuzz_dir/artifacts/$h/" "$fuzz_dir/corpus/$h" "$root/tests/fuzz/corpus/$h" \
      2>"$fuzz_dir/$h.log" || { tail -n 60 "$fuzz_dir/$h.log"; return 1; }
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$fuzz_dir/$h.log" || true
  done

  local dir="$root/build/tsan"
  cmake --preset tsan -S "$root" >/dev/null
  cmake --build "$dir" -j "$(nproc)" --target test_overlap_mpi test_tcp_store test_metrics_server
  # UCX's memory hooks (libucm) intercept the madvise of an exiting thread, after TSan has torn
  # down that thread's state: a crash, not a report. Switched off here; nothing else changes.
  export TSAN_OPTIONS="suppressions=$root/tests/tsan.supp halt_on_error=1 second_deadlock_stack=1"
  export UCX_MEM_MMAP_HOOK_MODE=none UCX_MEM_MALLOC_HOOKS=no
  for np in 1 2; do
    echo "tsan: test_overlap_mpi on $np rank(s)"
    mpirun "${mpirun_flags[@]}" -x TSAN_OPTIONS -x UCX_MEM_MMAP_HOOK_MODE -x UCX_MEM_MALLOC_HOOKS \
      -np "$np" \
      "$dir/tests/runtime/test_overlap_mpi" --gtest_brief=1
  done
  # The store's and the metrics endpoint's server threads too (cheap: their libraries are built).
  "$dir/tests/store/test_tcp_store" --gtest_brief=1
  "$dir/tests/metrics/test_metrics_server" --gtest_brief=1
}

# srun on a real one-node Slurm cluster (tools/slurm/slurmcluster: Debian's slurmctld, slurmd and
# MUNGE; PMIx): the layer test on 4 tasks, from_mpi's topology against srun's, and a sy-scale
# point launched with srun (its own cluster). Every cluster is torn down, whatever happens;
# SKIP where mount namespaces cannot be made (docs/slurm.md).
slurm_tests() {
  local sc="$root/tools/slurm/slurmcluster" name=syci rc=0 tmp
  if ! unshare --mount true 2>/dev/null; then
    echo "slurm: SKIP (no mount namespaces here; slurmd runs in one)"
    return 0
  fi
  "$sc" --name "$name" down >/dev/null 2>&1 || true
  "$sc" --name "$name" up --port 16847 || return 1
  {
    "$sc" --name "$name" run --timeout 60 -- -n 4 "$build_dir/tests/runtime/test_layer_mpi" \
      --gtest_brief=1 &&
      "$sc" --name "$name" run --timeout 30 -- -n 4 "$build_dir/tests/comm/test_comm_mpi" \
        --gtest_filter='Topology.FromMpi*' --gtest_brief=1
  } || rc=$?
  "$sc" --name "$name" down || rc=1
  ((rc == 0)) || return $rc
  tmp=$(mktemp -d)
  echo '{"launcher": "srun", "tokens_per_rank": 64, "args": {"preset": "tiny", "steps": 4},
         "axes": {"ranks": [2]}, "timeout_s": 60, "retries": 0}' >"$tmp/sweep.json"
  "$root/tools/sy-scale/sy-scale" run "$tmp/sweep.json" --out "$tmp/r.json" \
    --train-moe "$build_dir/examples/train_moe" | tail -n 2 || rc=1
  grep -q '"status": "ok"' "$tmp/r.json" || { echo "slurm: the sy-scale srun point failed"; rc=1; }
  rm -rf "$tmp"
  return $rc
}

mpi_env() {
  # OpenMPI refuses root without these; one BLAS thread per rank on a shared machine.
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
  # OpenBLAS picks its kernels from the CPU model when it loads; on a CPU newer than the library
  # knows it falls back to SSE3 kernels, ~5x slower. sy-bench names the core type that suits this
  # CPU when (only when) OpenBLAS's own choice does not; a value the user set is kept.
  if [[ -z "${OPENBLAS_CORETYPE:-}" ]]; then
    local coretype
    coretype="$("$build_dir/tools/sy-bench/sy-bench" gemm --coretype 2>/dev/null || true)"
    if [[ -n "$coretype" ]]; then
      echo "bootstrap: OpenBLAS chose kernels too old for this CPU; OPENBLAS_CORETYPE=$coretype"
      export OPENBLAS_CORETYPE="$coretype"
    fi
  fi
}

case "${1:-}" in
  run)
    install_dependencies
    build
    mpi_env
    set -x
    mpirun "${mpirun_flags[@]}" -np "${RANKS:-4}" "$build_dir/examples/train_moe" \
      --preset "${PRESET:-tiny}" \
      ${STEPS:+--steps "$STEPS"}
    ;;
  test)
    install_dependencies
    build
    mpi_env
    ctest --test-dir "$build_dir" --output-on-failure -j 1
    slurm_tests
    sanitized_tests
    fuzz_and_tsan_tests
    ;;
  *)
    echo "usage: bash tools/bootstrap.sh run|test" >&2
    exit 2
    ;;
esac
