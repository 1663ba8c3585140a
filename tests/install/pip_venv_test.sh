#!/usr/bin/env bash
# pip install from a fresh virtual environment: builds the wheel of the repository (pyproject.toml,
# scikit-build-core; the library only), installs it into a new venv made by Debian's python3 with
# --system-site-packages (for python3-torch, -mpi4py, -pytest), and from outside the checkout,
# with SWITCHYARD_LIB and PYTHONPATH unset, runs tests/python/test_parity.py on 2 ranks, then
# examples/deepseek_swap/swap.py (3 steps).
# Usage: pip_venv_test.sh <source dir> <work dir> <mpiexec> [mpiexec flags...]
# Environment: PIP_WHEEL_ARGS (extra `pip wheel` arguments, e.g. --config-settings=...),
# CMAKE_BUILD_PARALLEL_LEVEL (compile jobs; default nproc).
set -euo pipefail
source_dir="$1" work="$2" mpiexec="$3"
shift 3
python=/usr/bin/python3
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
unset SWITCHYARD_LIB PYTHONPATH

# The CMake build folder (cmake/) stays between runs, so a rerun compiles only what changed;
# the venv and the wheel are made afresh every time.
mkdir -p "$work"
rm -rf "$work/venv" "$work/dist"
"$python" -m venv --system-site-packages "$work/venv"
pip="$work/venv/bin/pip"
start=$(date +%s)
# shellcheck disable=SC2086
"$pip" wheel --no-deps --disable-pip-version-check -q -w "$work/dist" \
  --config-settings=build-dir="$work/cmake" ${PIP_WHEEL_ARGS:-} "$source_dir"
echo "pip venv test: wheel built in $(($(date +%s) - start)) s: $(cd "$work/dist" && ls)"
"$pip" install --no-deps --no-index --disable-pip-version-check -q "$work"/dist/switchyard-*.whl

# From a folder outside the checkout, so that nothing but the venv can provide the package.
cd "$work"
"$mpiexec" "$@" -np 2 "$work/venv/bin/python" "$source_dir/tests/install/venv_parity.py" \
  "$source_dir/tests/python/test_parity.py"
# The model-swap example against the installed package too (its exit status checks agreement).
"$mpiexec" "$@" -np 2 "$work/venv/bin/python" "$source_dir/examples/deepseek_swap/swap.py" \
  --steps 3
