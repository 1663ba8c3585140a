#!/usr/bin/env bash
# layer_trace_test.sh MPIEXEC SY_BENCH SY_TRACE: `sy-bench layer --trace` on 2 ranks with a tiny
# layer writes a valid merged trace holding the pipelined layer's two timed iterations; its
# experts are placed by the balance planner (no worse balanced than contiguous), and a redundant
# slot count that does not divide over the ranks is refused with what to pass instead.
set -euo pipefail
mpiexec=$1
bench=$2
sytrace=$3
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
read -ra mpirun_flags <<<"$(grep -v '^#' "$(dirname "$0")/../../tools/mpirun.flags")"
"$mpiexec" "${mpirun_flags[@]}" -np 2 "$bench" layer --tokens 48 --hidden 64 --inter 32 \
  --experts 8 --topk 2 --iters 2 \
  --chunks 3 --trace "$out/layer.json" >"$out/bench.txt"
grep -q "trace: the pipelined layer's 2 timed iterations written to $out/layer.json" "$out/bench.txt"
# "placement: balanced by the planner (...), device imbalance (...) A contiguous -> B"
placement=$(grep "^placement: balanced by the planner" "$out/bench.txt")
awk '{ if ($NF + 0 > $(NF - 3) + 0 || $NF + 0 < 1) exit 1 }' <<<"$placement" ||
  { echo "planned placement worse than contiguous: $placement"; exit 1; }
if "$mpiexec" "${mpirun_flags[@]}" -np 2 "$bench" layer --tokens 8 --hidden 16 --inter 8 --experts 8 \
  --topk 2 --iters 1 --redundant 1 >"$out/refused.txt" 2>&1; then
  echo "--redundant 1 over 2 ranks (9 slots) was accepted"; exit 1
fi
grep -q "does not divide; pass --redundant 0 " "$out/refused.txt" ||
  { cat "$out/refused.txt"; exit 1; }
"$sytrace" check "$out/layer.json"
report=$("$sytrace" report "$out/layer.json")
# Both timed iterations, every phase of the pipelined step, overlap measured.
grep -q "steps 0..1" <<<"$report"
for phase in dispatch experts combine shared combine_bwd experts_bwd dispatch_bwd grad_reduce; do
  grep -q " $phase" <<<"$report" || { echo "no $phase in the report"; exit 1; }
done
grep -q "communication overlapped with compute" <<<"$report"
echo "layer_trace_test: OK"
