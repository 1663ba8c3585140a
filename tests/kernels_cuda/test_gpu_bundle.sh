#!/usr/bin/env bash
# test_gpu_bundle.sh BUILD: tools/gpu-bundle packs the GPU programs of BUILD with the libraries a
# bare CUDA machine lacks, and the bundle's `run` runs them: exit 77 without a device (every GPU
# test skipped, naming CUDA's reason), 0 on a GPU. Any other status, or a bundle without the BLAS
# libraries, fails.
set -u
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$root/tools/gpu-bundle" "${1:?usage: test_gpu_bundle.sh BUILD}" "$work/bundle" || exit 1
for lib in libopenblas libdnnl; do
  tar tzf "$work/bundle/lib.tar.gz" | grep -q "/$lib" || { echo "FAIL: no $lib in the bundle"; exit 1; }
done
logs="$work/logs" bash "$work/bundle/run"
rc=$?
echo "bundle's run: exit $rc"
[[ $rc == 0 || $rc == 77 ]]
