#!/usr/bin/env bash
# torch_layer_bench_test.sh PYTHON SCRIPT LAUNCHER...: tools/sy-bench/torch_layer_bench.py at the
# tiny preset under LAUNCHER (mpirun and its flags) finds switchyard's layer and the PyTorch
# baseline in agreement (its correctness line), and refuses a bad flag in one line. The timing
# figures it prints are not checked: they measure the machine.
set -euo pipefail
python=$1
script=$2
shift 2
out=$("$@" "$python" "$script" --preset tiny --iters 2 --warmup 1 2>&1) || {
  echo "$out"
  exit 1
}
echo "$out"
[[ $(grep -c '^correctness .*: ok$' <<<"$out") -eq 1 ]] || {
  echo "want one correctness line ending in ': ok'"
  exit 1
}
set +e
msg=$("$python" "$script" --iters 0 2>&1)
rc=$?
set -e
[[ $rc -eq 2 && $msg == "torch_layer_bench: error: argument --iters: '0' is not an integer >= 1" ]] || {
  echo "--iters 0: rc $rc, message: $msg"
  exit 1
}
echo "torch_layer_bench_test: OK"
