#!/usr/bin/env bash
# layer_trace_test.sh MPIEXEC SY_BENCH SY_TRACE: `sy-bench layer --trace` on 2 ranks with a tiny
# layer writes a valid merged trace holding the pipelined layer's two timed iterations.
set -euo pipefail
mpiexec=$1
bench=$2
sytrace=$3
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$mpiexec" --oversubscribe --mca mpi_yield_when_idle 1 --mca btl_vader_single_copy_mechanism none \
  -np 2 "$bench" layer --tokens 48 --hidden 64 --inter 32 --experts 8 --topk 2 --iters 2 \
  --chunks 3 --trace "$out/layer.json" >"$out/bench.txt"
grep -q "trace: the pipelined layer's 2 timed iterations written to $out/layer.json" "$out/bench.txt"
"$sytrace" check "$out/layer.json"
report=$("$sytrace" report "$out/layer.json")
# Both timed iterations, every phase of the pipelined step, overlap measured.
grep -q "steps 0..1" <<<"$report"
for phase in dispatch experts combine shared combine_bwd experts_bwd dispatch_bwd grad_reduce; do
  grep -q " $phase" <<<"$report" || { echo "no $phase in the report"; exit 1; }
done
grep -q "communication overlapped with compute" <<<"$report"
echo "layer_trace_test: OK"
