#!/usr/bin/env bash
# intra_pairs_test.sh SCRIPT SY_BENCH
set -euo pipefail
script=$1
bench=$2
out=$(bash "$script" --pairs 2 --tokens "8 24" --np 2 --iters 3 --hidden 64 --sy-bench "$bench")
echo "$out"
# Header, then per size a dispatch and a combine row: tokens, MB, phase, two times, two ratios.
echo "$out" | awk '
  NR == 1 { if ($1 != "tokens") { print "no header"; exit 1 } next }
  {
    if (NF != 7) { print "row " NR " has " NF " fields"; exit 1 }
    for (i = 4; i <= 7; ++i) if (!($i + 0 > 0)) { print "row " NR " field " i " is not positive"; exit 1 }
    seen[$1 " " $3] = 1; ++rows
  }
  END {
    if (rows != 4 || !(("8 dispatch") in seen) || !(("24 combine") in seen)) { print "want 4 rows for 8 and 24 tokens"; exit 1 }
  }'
# A malformed option is refused with status 2 and says what was wrong.
set +e
msg=$(bash "$script" --pairs 0 --sy-bench "$bench" 2>&1)
rc=$?
set -e
[[ $rc -eq 2 && $msg == *"'0' is not a positive integer"* ]] || {
  echo "--pairs 0: rc $rc, message: $msg"
  exit 1
}
echo "intra_pairs_test: OK"
