"""Runs one sweep point with mpirun (or Slurm's srun) under a time bound, retrying a failed point
once."""
import os
import signal
import subprocess
import tempfile
import time
import json

import sys

from syscale.sweep import TRAIN_MOE_OPTIONS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))))
sys.path.insert(0, os.path.join(REPO, "tools"))
from mpirun_flags import mpirun_flags  # noqa: E402  (tools/mpirun.flags, written once)
SIMCLUSTER = os.path.join(REPO, "tools", "simcluster", "simcluster")
SLURMCLUSTER = os.path.join(REPO, "tools", "slurm", "slurmcluster")
CLUSTER_NAME = "syscale"
SLURM_PORT = "16837"  # slurmctld's port of a one-node Slurm cluster (slurmd: the next one)

MPIRUN_FLAGS = mpirun_flags()


def mpi_env():
    env = dict(os.environ)
    env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                "OPENBLAS_NUM_THREADS": "1"})
    return env


def command_for(point, train_moe, json_path, launcher="mpirun"):
    """mpirun here, or through simcluster's launcher when the point names nodes; with launcher
    "srun", srun on the point's Slurm cluster (slurmcluster run)."""
    program = [train_moe]
    for name, value in sorted(point.items()):
        if name in TRAIN_MOE_OPTIONS:
            program += [TRAIN_MOE_OPTIONS[name], str(value)]
    program += ["--json", json_path]
    if launcher == "srun":
        if "nodes" in point:
            shape = ["-N", str(point["nodes"]), "--ntasks-per-node", str(point["ranks_per_node"])]
        else:
            shape = ["-n", str(point["ranks"])]
        return [SLURMCLUSTER, "--name", CLUSTER_NAME, "run", "--quiet", "--", *shape, *program]
    mpirun_args = [*MPIRUN_FLAGS, "-np", str(point["ranks"]), *program]
    if "nodes" in point:
        return [SIMCLUSTER, "--name", CLUSTER_NAME, "run", "--quiet", "--ranks-per-node",
                str(point["ranks_per_node"]), "--", *mpirun_args]
    return ["mpirun", *mpirun_args]


def cluster_up(point, rate, launcher="mpirun"):
    """The point's cluster: simulated nodes for mpirun, a Slurm cluster (on simulated nodes when
    the point names nodes) for srun. Each node declares at least as many CPUs as it gets ranks."""
    cluster_down(launcher)
    if launcher == "srun":
        cmd = [SLURMCLUSTER, "--name", CLUSTER_NAME, "up"]
        if "nodes" in point:
            cpus = max(8, point["ranks_per_node"])
            cmd += ["--sim-nodes", str(point["nodes"]), "--rate", rate]
        else:
            cpus = max(8, point["ranks"])
            cmd += ["--port", SLURM_PORT]
        cmd += ["--cpus", str(cpus)]
    else:
        cmd = [SIMCLUSTER, "--name", CLUSTER_NAME, "up", "--nodes", str(point["nodes"]),
               "--rate", rate]
    try:
        up = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False, f"{os.path.basename(cmd[0])} up took over 120 s"
    if up.returncode != 0:
        return False, f"{os.path.basename(cmd[0])} up failed: " + (up.stdout + up.stderr)[-400:]
    return True, ""


def cluster_down(launcher="mpirun"):
    tool = SLURMCLUSTER if launcher == "srun" else SIMCLUSTER
    subprocess.run([tool, "--name", CLUSTER_NAME, "down"], capture_output=True, timeout=120)


def run_attempt(cmd, timeout_s):
    """(ok, message): the process group is killed at the time bound, so no rank outlives it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=mpi_env(),
                            start_new_session=True, text=True)
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return False, f"timed out after {timeout_s} s"
    if proc.returncode != 0:
        return False, f"exit code {proc.returncode}: " + output[-600:]
    return True, ""


def run_point(point, train_moe, timeout_s, retries, link_rate="1gbit", launcher="mpirun"):
    """A result record: params, status, attempts, command, wall time, train_moe's summary. On the
    simulated cluster, and for srun, the cluster is brought up for the point and always torn down
    after it."""
    started = time.monotonic()
    record = {"params": point, "status": "failed", "attempts": 0, "errors": []}
    with tempfile.TemporaryDirectory(prefix="sy-scale-") as tmp:
        json_path = os.path.join(tmp, "point.json")
        cmd = command_for(point, train_moe, json_path, launcher)
        record["command"] = " ".join(cmd[:-2])
        record["launcher"] = launcher
        if "nodes" in point:
            record["link_rate"] = link_rate
        for _ in range(1 + retries):
            record["attempts"] += 1
            if "nodes" in point or launcher == "srun":
                ok, message = cluster_up(point, link_rate, launcher)
                try:
                    if ok:
                        ok, message = run_attempt(cmd, timeout_s)
                finally:
                    cluster_down(launcher)
            else:
                ok, message = run_attempt(cmd, timeout_s)
            if ok:
                with open(json_path) as f:
                    record["result"] = json.load(f)
                record["status"] = "ok"
                break
            record["errors"].append(message)
    record["wall_s"] = time.monotonic() - started
    return record
