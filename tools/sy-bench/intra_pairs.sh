#!/usr/bin/env bash
# Compares two intra-node transports of `sy-bench alltoall` (flat algorithm) on this machine, in
# separate processes run in alternation. One process that builds both (`--intra shm,mpi`) is not a
# fair judge here: whichever all-to-all it sets up second runs 3-8% faster, whatever it is, and
# whichever order it runs them in each iteration (measured with `--intra shm,shm,shm`). Here every
# process sets up one transport's all-to-all and then the MPI_Alltoallv baseline, so both transports
# stand in the same place.
#
#   tools/sy-bench/intra_pairs.sh [--pairs N] [--tokens "32 256 2048"] [--np 4] [--hidden 2048]
#                                 [--iters 40] [--transports shm,mpi] [--sy-bench PATH]
#
# Prints, per size and phase: each transport's median time over the pairs (each run's own figure is
# the median of its iterations, slowest rank) and the geometric mean over pairs of the time ratio
# B/A, raw and divided by the ratio of the two runs' own MPI_Alltoallv baselines (which takes out
# the machine's drift between the two runs). Ratios above 1: A is faster.
set -euo pipefail

pairs=6
tokens="32 256 2048"
np=4
hidden=2048
iters=40
transports=shm,mpi
here=$(cd "$(dirname "$0")" && pwd)
bench=${SY_BENCH:-$here/../../build/release/tools/sy-bench/sy-bench}

die() {
  echo "intra_pairs.sh: $*" >&2
  exit 2
}
while [[ $# -gt 0 ]]; do
  [[ $# -ge 2 ]] || die "$1 needs a value (see the usage at the top of $0)"
  case $1 in
    --pairs) pairs=$2 ;;
    --tokens) tokens=$2 ;;
    --np) np=$2 ;;
    --hidden) hidden=$2 ;;
    --iters) iters=$2 ;;
    --transports) transports=$2 ;;
    --sy-bench) bench=$2 ;;
    *) die "unknown option $1 (known: --pairs --tokens --np --hidden --iters --transports --sy-bench)" ;;
  esac
  shift 2
done
for n in "$pairs" "$np" "$hidden" "$iters" $tokens; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "'$n' is not a positive integer"
done
IFS=, read -r a b extra <<<"$transports"
[[ -n $a && -n $b && -z ${extra:-} ]] || die "--transports takes two names, e.g. shm,mpi"
[[ -x $bench ]] || die "no sy-bench at $bench: build it (cmake --build build/release) or pass --sy-bench"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1

# One run: "<dispatch ms> <combine ms> <baseline dispatch ms> <baseline combine ms> <MB sent/rank>".
one_run() {
  local out
  out=$(mpirun --oversubscribe --mca mpi_yield_when_idle 1 -np "$np" -x OPENBLAS_NUM_THREADS \
    "$bench" alltoall --algo flat --topk 1 --hidden "$hidden" --tokens "$1" --iters "$iters" \
    --intra "$2" 2>&1) || die "sy-bench failed:"$'\n'"$out"
  awk -v t="$2" '
    $1 == "mpi" { base[$2] = $3 }
    $1 == "flat/" t { flat[$2] = $3; mb = $5; if ($NF != 0) bad = 1 }
    END {
      if (bad || !("dispatch" in flat) || !("combine" in base)) exit 1
      print flat["dispatch"], flat["combine"], base["dispatch"], base["combine"], mb
    }' <<<"$out" || die "sy-bench printed no flat/$2 row or counted errors:"$'\n'"$out"
}

printf '%-8s %-10s %-9s %11s %11s %13s %17s\n' tokens "MB/rank" phase "$a ms" "$b ms" \
  "$b/$a time" "ditto, normalised"
for t in $tokens; do
  runs=()
  for ((i = 1; i <= pairs; ++i)); do
    echo "intra_pairs.sh: $t tokens, pair $i/$pairs" >&2
    # `|| exit`: die inside $(...) leaves only the subshell.
    run_a=$(one_run "$t" "$a") || exit 2
    run_b=$(one_run "$t" "$b") || exit 2
    runs+=("$run_a $run_b")
  done
  printf '%s\n' "${runs[@]}" | awk -v t="$t" '
    function median(v, n,   i, j, x) {
      for (i = 2; i <= n; ++i) { x = v[i]; for (j = i - 1; j >= 1 && v[j] > x; --j) v[j + 1] = v[j]; v[j + 1] = x }
      return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    {
      ++n; mb = $5
      # fields: A dispatch, combine, baseline dispatch, combine, MB, then the same for B
      for (p = 0; p < 2; ++p) {
        ta[p, n] = $(1 + p); tb[p, n] = $(6 + p)
        raw[p] += log($(6 + p) / $(1 + p))
        norm[p] += log(($(6 + p) / $(8 + p)) / ($(1 + p) / $(3 + p)))
      }
    }
    END {
      split("dispatch combine", name)
      for (p = 0; p < 2; ++p) {
        for (i = 1; i <= n; ++i) { va[i] = ta[p, i]; vb[i] = tb[p, i] }
        printf "%-8s %-10.2f %-9s %11.3f %11.3f %13.3f %17.3f\n", t, mb, name[p + 1],
          median(va, n), median(vb, n), exp(raw[p] / n), exp(norm[p] / n)
      }
    }'
done
