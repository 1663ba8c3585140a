#!/usr/bin/env python3
"""Fault drills: one rank crashes, hangs or is slow in one phase of a training step
(SWITCHYARD_FAULT=<rank>:<phase>:<action>); the others must fail within the timeout plus a few
seconds, each naming that rank, and nothing may hang.

    fault_drill.py mpi   --train-moe PATH          train_moe under mpirun, 3 ranks, every phase
    fault_drill.py store --example PATH/train.py   the PyTorch example without MPI (TCP store)
    fault_drill.py mpi-python                      tests/faults/python_exit.py under mpirun: a
                                                   script that catches the error and returns;
                                                   the package must end the job at exit

Every run is bounded (LIVENESS_S); a run that outlives it is killed and counted as a hang. Prints
one row per scenario (trials, hangs, errors naming the rank, seconds to the end of the job) and
exits 1 when any scenario misses. Under mpirun the launcher would end the job as soon as a rank
dies; --mca orte_abort_on_non_zero_status 0 keeps the survivors running so that their own
detection is what is tested (their MPI_Abort then ends the job).
"""

import argparse
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "tools"))
from mpirun_flags import mpirun  # noqa: E402  (tools/mpirun.flags, written once)

TIMEOUT_S = 1.5   # the runtime's timeout in every drill
LIVENESS_S = 40   # a run still going after this is a hang
FAULTY = 1        # the rank that fails
MPI_PHASES = ["gate", "dispatch", "experts", "combine", "backward", "grad_reduce", "replan",
              "migration", "checkpoint"]
STORE_PHASES = ["gate", "dispatch", "combine", "backward", "grad_reduce"]
NAMES_FAULTY = re.compile(rf"rank\(s\) {FAULTY}\b|rank {FAULTY}\b")


def run(argv, env):
    """Runs argv (one process or a list of per-rank argvs) within LIVENESS_S; returns
    (exit codes, combined output, seconds, hung)."""
    start = time.monotonic()
    procs = [subprocess.Popen(a, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for a, e in zip(argv, env)]
    outputs, codes, hung = [], [], False
    for p in procs:
        remaining = max(0.1, LIVENESS_S - (time.monotonic() - start))
        try:
            out, _ = p.communicate(timeout=remaining)
        except subprocess.TimeoutExpired:
            hung = True
            for q in procs:
                q.kill()
            out, _ = p.communicate()
        outputs.append(out)
        codes.append(p.returncode)
    return codes, outputs, time.monotonic() - start, hung


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mpi_drill(train_moe, phase, action):
    env = dict(os.environ, SWITCHYARD_FAULT=f"{FAULTY}:{phase}:{action}", OPENBLAS_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    argv = mpirun("--mca", "orte_abort_on_non_zero_status", "0", "-x", "SWITCHYARD_FAULT",
                  "-np", "3", train_moe, "--steps", "3", "--timeout", str(TIMEOUT_S),
                  "--replan-every", "1", "--redundant", "2")
    with tempfile.TemporaryDirectory() as checkpoints:
        argv += ["--save", checkpoints, "--save-every", "1"]
        codes, outputs, seconds, hung = run([argv], [env])
    out = outputs[0]
    errors = [line for line in out.splitlines() if line.startswith("train_moe: ")]
    return {"hung": hung, "failed": codes[0] != 0, "completed": codes[0] == 0, "errors": errors,
            "seconds": seconds, "output": out}


def store_drill(example, phase, action, ranks=3):
    base = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
                WORLD_SIZE=str(ranks), SWITCHYARD_JOB_SECRET=secrets.token_hex(16),
                SWITCHYARD_MASTER_PORT=str(free_port()), OPENBLAS_NUM_THREADS="1",
                SWITCHYARD_FAULT=f"{FAULTY}:{phase}:{action}")
    argvs = [[sys.executable, example, "--launcher", "env", "--steps", "4", "--timeout",
              str(TIMEOUT_S)] for _ in range(ranks)]
    envs = [dict(base, RANK=str(r), LOCAL_RANK=str(r)) for r in range(ranks)]
    # The faulty rank is not waited for when it hangs: the launcher (here: this script) kills it
    # once the survivors have ended.
    start = time.monotonic()
    procs = [subprocess.Popen(a, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for a, e in zip(argvs, envs)]
    hung, errors, outputs, codes = False, [], [], []
    for r, p in enumerate(procs):
        if r == FAULTY:
            continue
        try:
            out, _ = p.communicate(timeout=max(0.1, LIVENESS_S - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            hung = True
            p.kill()
            out, _ = p.communicate()
        outputs.append(out)
        codes.append(p.returncode)
        errors += [line for line in out.splitlines() if line.startswith("train.py: rank ")]
    seconds = time.monotonic() - start
    procs[FAULTY].kill()
    outputs.append(procs[FAULTY].communicate()[0])
    # failed: every survivor ended with an error; completed: every survivor ended normally.
    return {"hung": hung, "failed": all(c not in (0, None) for c in codes),
            "completed": all(c == 0 for c in codes), "errors": errors, "seconds": seconds,
            "output": "\n".join(outputs), "survivors": ranks - 1}


def mpi_python_drill(phase, action):
    """A script that returns normally after the error: without the package's MPI_Abort at exit
    the survivors would hang in MPI_Finalize waiting for the stuck rank."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "python_exit.py")
    env = dict(os.environ, SWITCHYARD_FAULT=f"{FAULTY}:{phase}:{action}", OPENBLAS_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    argv = mpirun("--mca", "orte_abort_on_non_zero_status", "0", "-x", "SWITCHYARD_FAULT",
                  "-x", "SWITCHYARD_LIB", "-np", "3", "/usr/bin/python3", script, str(TIMEOUT_S))
    codes, outputs, seconds, hung = run([argv], [env])
    errors = [line for line in outputs[0].splitlines() if line.startswith("python_exit.py: rank ")]
    return {"hung": hung, "failed": codes[0] != 0, "completed": codes[0] == 0, "errors": errors,
            "seconds": seconds, "output": outputs[0]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["mpi", "store", "mpi-python"])
    parser.add_argument("--train-moe")
    parser.add_argument("--example")
    parser.add_argument("--phases", help="comma-separated subset of the phases")
    args = parser.parse_args()
    phases = {"mpi": MPI_PHASES, "store": STORE_PHASES, "mpi-python": ["dispatch", "backward"]}[
        args.mode]
    if args.phases:
        phases = [p for p in args.phases.split(",") if p in phases]
    missed = []
    print(f"{'scenario':34s} {'trials':>6s} {'hangs':>5s} {'named':>5s} {'seconds':>7s}")
    for i, phase in enumerate(phases):
        # A slow rank (delay within the timeout) must not fail the step: checked once per mode.
        # Without MPI every run starts three Python processes with torch (~4 s here): a hang is
        # drilled in two phases there, a crash in every one.
        hang = args.mode != "store" or phase in ("dispatch", "grad_reduce")
        for action in ["crash"] + (["hang"] if hang else []) + (["delay:0.2"] if i == 0 else []):
            if args.mode == "mpi":
                r = mpi_drill(args.train_moe, phase, action)
                expect_errors = 1  # the first survivor's MPI_Abort may end the others first
            elif args.mode == "mpi-python":
                r = mpi_python_drill(phase, action)
                expect_errors = 1
            else:
                r = store_drill(args.example, phase, action)
                expect_errors = r["survivors"]
            named = [e for e in r["errors"] if NAMES_FAULTY.search(e)]
            if action.startswith("delay"):
                # Slower than usual but within the timeout: the step must simply complete.
                ok = not r["hung"] and not r["errors"] and r["completed"]
            else:
                ok = (not r["hung"] and r["failed"] and len(named) >= expect_errors and
                      len(named) == len(r["errors"]) and r["seconds"] < TIMEOUT_S + 25)
            scenario = f"{args.mode} rank {FAULTY} {action} in {phase}"
            print(f"{scenario:34s} {1:6d} {int(r['hung']):5d} {len(named):5d} "
                  f"{r['seconds']:7.1f}{'' if ok else '  MISSED'}", flush=True)
            if not ok:
                missed.append(scenario)
                print(r["output"][-3000:], file=sys.stderr)
    if missed:
        sys.exit(f"fault_drill: {len(missed)} scenario(s) missed: {', '.join(missed)}")


if __name__ == "__main__":
    main()
