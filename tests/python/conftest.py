"""Shared fixtures. Every rank of the mpirun job runs every test in the same order, since the
layer's calls are collective. mpi4py is imported only by fixtures, so that a pytest run that
selects no test never initialises MPI (test_guards.py runs one)."""

import sys

import pytest


@pytest.fixture(scope="session")
def comm():
    from mpi4py import MPI

    return MPI.COMM_WORLD


@pytest.fixture(scope="session")
def context(comm):
    import switchyard

    # A short bound on every wait: a rank that failed early makes its peers' next collective
    # call fail within seconds instead of hanging the test.
    with switchyard.Context(comm, timeout_ms=20000) as ctx:
        yield ctx


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("switchyard: no Python test was collected; check the paths and -k expression in "
              "tests/python/CMakeLists.txt", file=sys.stderr)
