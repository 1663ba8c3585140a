"""Runs one sweep point with mpirun under a time bound, retrying a failed point once."""
import os
import signal
import subprocess
import tempfile
import time
import json

from syscale.sweep import TRAIN_MOE_OPTIONS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))))
SIMCLUSTER = os.path.join(REPO, "tools", "simcluster", "simcluster")
CLUSTER_NAME = "syscale"

MPIRUN_FLAGS = ["--oversubscribe", "--mca", "mpi_yield_when_idle", "1",
                "--mca", "btl_vader_single_copy_mechanism", "none"]


def mpi_env():
    env = dict(os.environ)
    env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                "OPENBLAS_NUM_THREADS": "1"})
    return env


def command_for(point, train_moe, json_path):
    """mpirun here, or through simcluster's launcher when the point names nodes."""
    mpirun_args = [*MPIRUN_FLAGS, "-np", str(point["ranks"]), train_moe]
    for name, value in sorted(point.items()):
        if name in TRAIN_MOE_OPTIONS:
            mpirun_args += [TRAIN_MOE_OPTIONS[name], str(value)]
    mpirun_args += ["--json", json_path]
    if "nodes" in point:
        return [SIMCLUSTER, "--name", CLUSTER_NAME, "run", "--quiet", "--ranks-per-node",
                str(point["ranks_per_node"]), "--", *mpirun_args]
    return ["mpirun", *mpirun_args]


def cluster_up(nodes, rate):
    subprocess.run([SIMCLUSTER, "--name", CLUSTER_NAME, "down"], capture_output=True)
    up = subprocess.run([SIMCLUSTER, "--name", CLUSTER_NAME, "up", "--nodes", str(nodes),
                         "--rate", rate], capture_output=True, text=True)
    if up.returncode != 0:
        return False, "simcluster up failed: " + (up.stdout + up.stderr)[-400:]
    return True, ""


def cluster_down():
    subprocess.run([SIMCLUSTER, "--name", CLUSTER_NAME, "down"], capture_output=True)


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


def run_point(point, train_moe, timeout_s, retries, link_rate="1gbit"):
    """A result record: params, status, attempts, command, wall time, train_moe's summary. On the
    simulated cluster the cluster is brought up for the point and always torn down after it."""
    started = time.monotonic()
    record = {"params": point, "status": "failed", "attempts": 0, "errors": []}
    with tempfile.TemporaryDirectory(prefix="sy-scale-") as tmp:
        json_path = os.path.join(tmp, "point.json")
        cmd = command_for(point, train_moe, json_path)
        record["command"] = " ".join(cmd[:-2])
        if "nodes" in point:
            record["link_rate"] = link_rate
        for _ in range(1 + retries):
            record["attempts"] += 1
            if "nodes" in point:
                ok, message = cluster_up(point["nodes"], link_rate)
                try:
                    if ok:
                        ok, message = run_attempt(cmd, timeout_s)
                finally:
                    cluster_down()
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
