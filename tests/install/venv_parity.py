"""Run by pip_venv_test.sh on every rank, with the venv's python: checks that `switchyard` and
its library come from the installed wheel (not the checkout, not $SWITCHYARD_LIB) and that the
wheel's version is the library's, then runs the given pytest files (the parity tests)."""

import importlib.metadata
import os
import sys
from pathlib import Path

import pytest

import switchyard

assert "SWITCHYARD_LIB" not in os.environ, "the test must run without SWITCHYARD_LIB"
package = Path(switchyard.__file__).resolve().parent
venv = Path(sys.prefix).resolve()
assert venv in package.parents, f"switchyard imported from {package}, not from the venv {venv}"
library = Path(switchyard._capi.lib._name).resolve()
assert library == package / "libswitchyard.so", f"library loaded from {library}, not {package}"
code = switchyard.version()
library_version = f"{code // 10000}.{code // 100 % 100}.{code % 100}"
wheel_version = importlib.metadata.version("switchyard")
assert wheel_version == library_version, (
    f"the wheel says version {wheel_version}, its library {library_version}: update "
    "pyproject.toml's version with runtime/switchyard.h's SY_VERSION_*")
print(f"venv parity: switchyard {wheel_version} from {package}", flush=True)
sys.exit(pytest.main(["-q", "--color=no", "-p", "no:cacheprovider", *sys.argv[1:]]))
