#!/usr/bin/env bash
# simcluster_test.sh <simcluster> <sy-bench>: 2 simulated nodes x 2 ranks over 200 Mbit/s links.
# Exit 0: pass; 1: fail; 77: skipped (network namespaces cannot be created here).
set -uo pipefail
SIMCLUSTER=$1
SYBENCH=$2
NAME="syci$$"
NAME=${NAME:0:12}
ITERS=3
log() { echo "simcluster_test: $*"; }
fail() {
  log "FAIL: $*"
  exit 1
}

# Skip, with the reason, where namespaces are out of reach; never a silent pass.
if [[ $(id -u) -ne 0 ]]; then
  log "SKIP: needs root (CAP_NET_ADMIN) to create network namespaces; running as uid $(id -u)"
  exit 77
fi
for tool in ip tc unshare mpirun; do
  command -v "$tool" >/dev/null || { log "SKIP: '$tool' not found"; exit 77; }
done
if ! err=$(ip netns add "$NAME-probe" 2>&1); then
  log "SKIP: cannot create a network namespace: $err"
  exit 77
fi
ip netns delete "$NAME-probe"

shm_before=$(ls /dev/shm | sort)
SVG=$(mktemp --suffix=.svg)
cleanup() {
  local rc=$?
  rm -f "$SVG"
  "$SIMCLUSTER" --name "$NAME" down >/dev/null 2>&1 || "$SIMCLUSTER" --name "$NAME" down
  # Nothing may be left behind: namespaces, links, /etc/netns entries, shared-memory segments.
  local left=""
  left+=$(ip netns list | awk '{print $1}' | grep "^$NAME-" | tr '\n' ' ')
  left+=$(ip -o link show | awk -F': ' '{print $2}' | grep "^$NAME" | tr '\n' ' ')
  left+=$(ls -d /etc/netns/"$NAME"-* 2>/dev/null | tr '\n' ' ')
  left+=$(ls -d /run/simcluster/"$NAME" 2>/dev/null)
  left+=$(comm -13 <(echo "$shm_before") <(ls /dev/shm | sort) | grep -E "switchyard|vader_segment\.$NAME|pmix" | tr '\n' ' ')
  if [[ -n ${left// /} ]]; then
    log "FAIL: left behind after down: $left"
    rc=1
  else
    log "teardown left nothing behind"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$SIMCLUSTER" --name "$NAME" up --nodes 2 --rate 200mbit || fail "simcluster up"
out=$(SWITCHYARD_INTRA=shm "$SIMCLUSTER" --name "$NAME" run --ranks-per-node 2 -- -np 4 \
  "$SYBENCH" alltoall --algo all --tokens 128 --hidden 256 --topk 6 --zipf 1.0 --iters $ITERS \
  --link-gbit 0.2 --link-dev data0 --link-svg "$SVG" 2>&1)
rc=$?
echo "$out"
[[ $rc -eq 0 ]] || fail "sy-bench exited with $rc (a byte or a sum was wrong, or the run failed)"
grep -q "4 ranks, 2 nodes (as launched)" <<<"$out" ||
  fail "MPI did not report one node per namespace (Topology::from_mpi)"
grep -q "intra-node: shm" <<<"$out" || fail "the intra-node transport is not shm"
grep -q "inter-node: mpi (messages in pieces of" <<<"$out" ||
  fail "inter-node MPI messages are not sent in eager-sized pieces"
# The link counters sampled inside the node namespaces saw every algorithm's inter-node bytes.
measured=$(awk '/^measured on the links/ { on = 1; next } on && $1 ~ /^(mpi|flat|hierarchical)$/ { n++; if ($6 + 0 <= 0) bad++ } END { printf "%d %d", n, bad }' <<<"$out")
[[ $measured == "6 0" ]] ||
  fail "measured link table: expected 6 rows with bytes on the wire, got (rows, empty) = $measured"

# The link timeline: a panel per algorithm, each with both nodes' sent and received rates, and
# some bins above zero (the payload crossed during the drawn iterations).
grep -q "^<svg" "$SVG" || fail "--link-svg wrote no SVG"
panels=$(grep -cE ">(mpi|flat|hierarchical): iteration" "$SVG")
lines=$(grep -c "<polyline" "$SVG")
[[ $panels -eq 3 && $lines -eq 12 ]] ||
  fail "link timeline: expected 3 panels of 4 lines, got $panels panels and $lines lines"
# Every node sends and receives across nodes in every algorithm's drawn iteration.
idle=$(grep -o 'data-peak-gbit="[0-9.]*"' "$SVG" | awk -F'"' '$2 + 0 < 0.02 { n++ } END { print n + 0 }')
[[ $idle -eq 0 ]] || fail "link timeline: $idle of the lines never rise above 0.02 Gbit/s"
log "link timeline: $panels panels, $lines lines, each with traffic"

# Payload sy-bench sent across nodes (MB per call, all ranks, every algorithm; iters + warm-up)
# against the bytes the shaped links' qdiscs counted (payload plus TCP/IP headers).
# (The first table only: the link tables below it repeat the rows.)
payload=$(awk -v calls=$((ITERS + 1)) '/^inter-node links at/ { exit } $1 ~ /^(mpi|flat|hierarchical)$/ && $2 ~ /^(dispatch|combine)$/ { s += $6 } END { printf "%d", s * 1e6 * calls }' <<<"$out")
counters=/run/simcluster/$NAME/last_run_counters.json
[[ -f $counters ]] || fail "no qdisc counters from the run"
read -r tx0 tx1 total < <(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(c["nodes"][0]["tx_bytes"], c["nodes"][1]["tx_bytes"], c["tx_bytes"])' "$counters")
log "payload across nodes (sy-bench): $payload bytes; shaped links carried: $total bytes (node 0 tx $tx0, node 1 tx $tx1)"
[[ $payload -gt 0 ]] || fail "sy-bench reports no bytes across nodes"
[[ $tx0 -gt 0 && $tx1 -gt 0 ]] || fail "a node sent nothing over its shaped link"
# At least 90% of the payload (a little less than 100%: sy-bench's figure counts payload only) and
# at most 30% more (headers, count exchanges, barriers): the payload went over the shaped links,
# and not much else did.
awk -v p="$payload" -v t="$total" 'BEGIN { exit !(t >= 0.9 * p && t <= 1.3 * p + 2e6) }' ||
  fail "shaped-link bytes ($total) do not match the inter-node payload ($payload)"
log "PASS"
