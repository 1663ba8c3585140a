"""A pytest run that collects no test exits with status 5 and says so, so that CTest (through
mpirun, which returns the first non-zero status of any rank) cannot pass an empty run."""

import subprocess
import sys
from pathlib import Path


def test_an_empty_selection_fails_loudly(comm):
    if comm.Get_rank() != 0:
        return  # a local check: one rank is enough
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(Path(__file__).parent), "-k", "no_test_has_this_name"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 5, run.stdout + run.stderr
    assert "no Python test was collected" in run.stderr
