"""switchyard.Context.from_env's checks, local to each rank (the multi-process runs without MPI
are store_launch.py's): a missing variable or secret is named, and nothing imports mpi4py."""

import subprocess
import sys

import pytest

import switchyard


@pytest.fixture
def torchrun_env(monkeypatch):
    for name in ("MASTER_ADDR", "MASTER_PORT", "SWITCHYARD_MASTER_PORT", "RANK", "WORLD_SIZE",
                 "LOCAL_RANK", "SWITCHYARD_JOB_SECRET"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_missing_address_is_named(torchrun_env):
    with pytest.raises(switchyard.SwitchyardError, match="MASTER_ADDR") as info:
        switchyard.Context.from_env()
    assert info.value.status_name == "SY_INVALID_ARGUMENT"


def test_missing_secret_is_named(torchrun_env):
    torchrun_env.setenv("MASTER_ADDR", "127.0.0.1")
    torchrun_env.setenv("MASTER_PORT", "29500")
    torchrun_env.setenv("RANK", "0")
    torchrun_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(switchyard.SwitchyardError, match="SWITCHYARD_JOB_SECRET"):
        switchyard.Context.from_env()


def test_malformed_rank_is_named(torchrun_env):
    torchrun_env.setenv("RANK", "zero")
    with pytest.raises(switchyard.SwitchyardError, match="RANK='zero' is not an integer"):
        switchyard.Context.from_env(master_addr="127.0.0.1")


def test_one_rank_context_without_mpi_in_a_fresh_process():
    """A fresh interpreter (this one may have MPI initialised): one rank, no mpi4py import."""
    code = ("import sys, switchyard; "
            "c = switchyard.Context.from_env(master_addr='127.0.0.1', master_port=0, rank=0, "
            "world_size=1, secret='s'); "
            "assert (c.rank, c.size) == (0, 1); c.close(); "
            "assert 'mpi4py' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
