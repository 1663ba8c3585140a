# tools/gpu/steps.sh: the time-limited steps and the summary shared by tools/gpu-check (build, then
# run) and tools/gpu/run-programs (run prebuilt programs, as a bundle from tools/gpu-bundle does).
# Source it after setting: budget (seconds for everything), logs (a folder). Each step's output
# goes to its own log, of which the last lines are printed; finish prints one line per step, copies
# the logs to $OUT when that is set (the device tool's output folder), and exits.
gpu_start=$SECONDS
gpu_summary=()
gpu_status=0
mkdir -p "$logs"

gpu_left() { echo $((budget - (SECONDS - gpu_start))); }

# step <name> <log> <seconds, 0 for all that is left> <command...>
step() {
  local name="$1" log="$2" cap="$3"
  shift 3
  local remaining
  remaining=$(gpu_left)
  if ((cap > 0 && cap < remaining)); then remaining=$cap; fi
  if ((remaining <= 5)); then
    gpu_summary+=("$name: NOT RUN (time limit of ${budget}s reached)")
    gpu_status=1
    return 1
  fi
  local t0=$SECONDS
  echo "== gpu: $name (up to ${remaining}s)"
  timeout --signal=TERM --kill-after=10 "$remaining" "$@" >"$logs/$log" 2>&1
  local rc=$?
  local took=$((SECONDS - t0))
  tail -n 25 "$logs/$log"
  if ((rc == 0)); then
    gpu_summary+=("$name: ok (${took}s)")
  elif ((rc == 124 || rc == 137)); then
    gpu_summary+=("$name: TIMED OUT after ${took}s (log $logs/$log)")
    gpu_status=1
  else
    gpu_summary+=("$name: FAILED, exit $rc after ${took}s (log $logs/$log)")
    gpu_status=1
  fi
  return $rc
}

# finish [status]: the summary, the logs to $OUT, exit with status (default: 1 if a step failed).
finish() {
  echo
  echo "== gpu summary ($((SECONDS - gpu_start))s of ${budget}s)"
  local line
  for line in "${gpu_summary[@]}"; do echo "  $line"; done
  if [[ -n "${OUT:-}" && -d "${OUT:-}" ]]; then cp "$logs"/*.log "$OUT"/ 2>/dev/null; fi
  exit "${1:-$gpu_status}"
}
