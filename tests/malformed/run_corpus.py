#!/usr/bin/env python3
"""Runs every tool on every file of its malformed-input corpus (tests/malformed/<corpus>/) and on
the malformed option values of OPTION_CASES, and fails unless each run exits non-zero (not by a
signal, not past its time bound) with exactly one non-empty line on stderr that names the file
(or the option) and holds no Python traceback. The tools' last-resort handlers also print one
line ("internal error"), but an input that reaches one counts as a failure: validation missed it.

Big and deeply nested inputs are generated at run time (GENERATED), not committed. Before the
corpus runs, each tool must accept the well-formed files of good/, so a broken command line in
this script cannot pass the test by failing for the wrong reason.

  run_corpus.py --sy-plan build/release/tools/sy-plan/sy-plan [--only trace,plan] [-v]
"""
import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.realpath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
GOOD = os.path.join(HERE, "good")
SY_TRACE = [sys.executable, os.path.join(REPO, "tools", "sy-trace", "sy-trace")]
SY_SCALE = [sys.executable, os.path.join(REPO, "tools", "sy-scale", "sy-scale")]
TIMEOUT_S = 20
MEMORY_BYTES = 2 << 30


def good(name):
    return os.path.join(GOOD, name)


# corpus folder -> commands run on each of its files ({file}: the file, {tmp}: a scratch folder,
# {sy_plan}: the sy-plan executable, {good:NAME}: a well-formed file of good/).
def corpus_commands(sy_plan):
    plan = [sy_plan, "plan", "--nodes", "1", "--gpus-per-node", "2", "--redundant", "0",
            "--out", "{tmp}/plan.json"]
    return {
        "trace": [SY_TRACE + ["check", "{file}"],
                  SY_TRACE + ["report", "{file}", "--plots", "{tmp}/plots",
                              "--json", "{tmp}/report.json"]],
        "bandwidth": [SY_TRACE + ["bandwidth", "{file}", "--out", "{tmp}/bw.svg"],
                      SY_TRACE + ["bandwidth", good("bench.json"), "{file}"]],
        "scale": [SY_SCALE + ["check", "{file}"],
                  # /bin/false is executable: a sweep that passes validation runs its points,
                  # which fail, and the run exits 0, so the test notices.
                  SY_SCALE + ["run", "{file}", "--out", "{tmp}/r.json", "--train-moe",
                              "/bin/false"]],
        "scale-results": [SY_SCALE + ["table", "{file}"],
                          SY_SCALE + ["compare", good("results.json"), "{file}"],
                          SY_SCALE + ["plot", "{file}", "--out", "{tmp}/plots"]],
        "workload": [plan + ["--workload", "{file}"],
                     [sy_plan, "score", "{file}", good("plan.json")]],
        "plan": [[sy_plan, "score", good("workload.json"), "{file}"],
                 plan + ["--workload", good("workload.json"), "--current", "{file}"]],
    }


# (command, text stderr must contain): malformed option values. Sizes a user passes are bounded.
def option_cases(sy_plan):
    w, p = good("workload.json"), good("plan.json")

    def plan(*extra, nodes="1", gpus="2", redundant="0"):
        return [sy_plan, "plan", "--workload", w, "--nodes", nodes, "--gpus-per-node", gpus,
                "--redundant", redundant, "--out", "{tmp}/plan.json", *extra]

    return [
        (plan(redundant="100000000"), "--redundant"),
        (plan(redundant="-1"), "--redundant"),
        (plan(redundant="1000"), "redundant"),       # more replicas than devices to hold them
        (plan(redundant="1"), "redundant"),          # 5 slots do not divide over 2 devices
        (plan(redundant="99999999999999999999"), "--redundant"),
        (plan(nodes="0"), "--nodes"),
        (plan(nodes="-4"), "--nodes"),
        (plan(nodes="100000000"), "--nodes"),
        (plan(nodes="abc"), "--nodes"),
        (plan(gpus="0"), "--gpus-per-node"),
        (plan(gpus="99999999"), "--gpus-per-node"),
        (plan(nodes="4096", gpus="1024"), "devices"),
        (plan("--epsilon", "nan"), "--epsilon"),
        (plan("--epsilon", "-1"), "--epsilon"),
        (plan("--min-gain", "-0.5"), "--min-gain"),
        (plan("--mode", "sideways"), "sideways"),
        (plan("--frobnicate"), "--frobnicate"),
        ([sy_plan, "plan", "--workload", w, "--nodes", "1", "--gpus-per-node", "2", "--out",
          "{tmp}/x.json"], "--redundant"),
        (plan(redundant="0")[:-2] + ["--out", "/nonexistent/dir/plan.json"],
         "/nonexistent/dir/plan.json"),
        (plan(redundant="0")[:-2] + ["--out", "{tmp}"], "{tmp}"),
        ([sy_plan, "score", w], "plan"),
        ([sy_plan, "bench", "--scenarios", "/nonexistent/scenarios.json", "--reference", p],
         "/nonexistent/scenarios.json"),
        ([sy_plan, "frobnicate"], "frobnicate"),
        ([sy_plan], "subcommand"),
        (SY_TRACE + ["report", good("trace.json"), "--capacity", "intra-node=fast"], "--capacity"),
        (SY_TRACE + ["report", good("trace.json"), "--capacity", "intra-node=-1"], "--capacity"),
        (SY_TRACE + ["report", good("trace.json"), "--capacity", "intra-node=nan"], "--capacity"),
        (SY_TRACE + ["report", good("trace.json"), "--step", "many"], "--step"),
        (SY_TRACE + ["report", good("trace.json"), "--json", "/nonexistent/dir/r.json"],
         "/nonexistent/dir/r.json"),
        (SY_TRACE + ["report", good("trace.json"), "--plots", "/dev/null/plots"],
         "/dev/null/plots"),
        (SY_TRACE + ["bandwidth", good("bench.json"), "--out", "/nonexistent/dir/bw.svg"],
         "/nonexistent/dir/bw.svg"),
        (SY_TRACE + ["frobnicate"], "frobnicate"),
        (SY_SCALE + ["run", good("sweep.json"), "--out", "{tmp}/r.json", "--train-moe",
                     "/nonexistent/train_moe"], "/nonexistent/train_moe"),
        (SY_SCALE + ["plot", good("results.json"), "--out", "/dev/null"], "/dev/null"),
        (SY_SCALE + ["table"], "results"),
    ]


# Commands that must succeed on the well-formed files (the harness's own check).
def good_commands(sy_plan):
    return [
        SY_TRACE + ["check", good("trace.json")],
        SY_TRACE + ["report", good("trace.json"), "--plots", "{tmp}/plots", "--json",
                    "{tmp}/r.json"],
        SY_TRACE + ["bandwidth", good("bench.json"), "--out", "{tmp}/bw.svg"],
        SY_SCALE + ["check", good("sweep.json")],
        SY_SCALE + ["table", good("results.json")],
        SY_SCALE + ["compare", good("results.json"), good("results.json")],
        SY_SCALE + ["plot", good("results.json"), "--out", "{tmp}/plots"],
        [sy_plan, "plan", "--workload", good("workload.json"), "--nodes", "1", "--gpus-per-node",
         "2", "--redundant", "0", "--current", good("plan.json"), "--out", "{tmp}/plan.json"],
        [sy_plan, "score", good("workload.json"), good("plan.json")],
    ]


def generated(folder):
    """Inputs too big or too deep to commit, written into folder: {name: path}."""
    rng = random.Random(19)
    files = {
        "garbage.bin": bytes(rng.randrange(256) for _ in range(1 << 16)),
        "deep_lists.json": b"[" * 200000 + b"]" * 200000,
        "deep_objects.json": b'{"a":' * 100000 + b"1" + b"}" * 100000,
        "deep_unclosed.json": b"[" * 1000000,
        "long_string.json": b'{"format": "' + b"x" * (8 << 20) + b'"}',
        "huge_number.json": b'{"format": 1' + b"0" * 100000 + b"}",
        "zeros.bin": bytes(1 << 20),
    }
    out = {}
    for name, data in files.items():
        out[name] = os.path.join(folder, name)
        with open(out[name], "wb") as f:
            f.write(data)
    out["a_directory"] = os.path.join(folder, "a_directory")
    os.mkdir(out["a_directory"])
    out["nonexistent.json"] = os.path.join(folder, "nonexistent.json")
    return out


def limit_child():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def expand(cmd, **values):
    out = []
    for arg in cmd:
        for key, value in values.items():
            arg = arg.replace("{" + key + "}", value)
        out.append(arg)
    return out


def run(cmd):
    """(exit code or None on time-out, stderr text)."""
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=TIMEOUT_S, preexec_fn=limit_child,
                              env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    except subprocess.TimeoutExpired as err:
        return None, (err.stderr or b"").decode("utf-8", "replace")
    return proc.returncode, proc.stderr.decode("utf-8", "replace")


def judge(rc, stderr, names):
    """What is wrong with one run's outcome (None: it is the one-line refusal we want)."""
    lines = stderr.strip("\n").split("\n") if stderr.strip() else []
    if rc is None:
        return f"still running after {TIMEOUT_S} s"
    if "Traceback" in stderr:
        return "traceback"
    if rc < 0:
        return f"killed by signal {-rc}"
    if rc == 0:
        return "exit code 0"
    if len(lines) != 1:
        return f"{len(lines)} lines on stderr"
    if not any(n in lines[0] for n in names):
        return f"the message does not name {names[0]}"
    if "internal error" in lines[0]:  # the tools' last-resort handler: validation missed it
        return "an internal error, not a validation message"
    return None


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sy-plan", required=True, help="the sy-plan executable")
    parser.add_argument("--only", help="comma-separated corpora (and 'options') to run")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every run")
    args = parser.parse_args(argv)
    sy_plan = os.path.realpath(args.sy_plan)
    only = set(args.only.split(",")) if args.only else None
    failures, counts, tracebacks, runs = [], {}, set(), 0
    with tempfile.TemporaryDirectory(prefix="sy-malformed-") as tmp:
        gen = tempfile.mkdtemp(dir=tmp)
        extra = generated(gen)
        scratch = os.path.join(tmp, "scratch")

        def one(label, cmd, names):
            nonlocal runs
            if os.path.isdir(scratch):
                shutil.rmtree(scratch)
            os.mkdir(scratch)
            rc, stderr = run(expand(cmd, tmp=scratch))
            runs += 1
            names = [n.replace("{tmp}", scratch) for n in names]
            problem = judge(rc, stderr, names)
            if problem == "traceback":
                tracebacks.add(label.split(" :: ")[0])
            if args.verbose or problem:
                shown = " ".join(expand(cmd, tmp=scratch))
                first = stderr.strip().splitlines()[-1] if stderr.strip() else ""
                print(f"{'FAIL' if problem else 'ok  '} {label}: {problem or first[:150]}"
                      + (f"\n     $ {shown}\n     stderr: {first[:300]}" if problem else ""))
            if problem:
                failures.append(label)
            return rc

        for cmd in good_commands(sy_plan):
            if os.path.isdir(scratch):
                shutil.rmtree(scratch)
            os.mkdir(scratch)
            rc, stderr = run(expand(cmd, tmp=scratch))
            if rc != 0:
                print(f"FAIL well-formed input refused ({rc}): {' '.join(cmd)}\n{stderr}")
                failures.append("good: " + " ".join(cmd))

        for corpus, commands in corpus_commands(sy_plan).items():
            if only and corpus not in only:
                continue
            folder = os.path.join(HERE, corpus)
            files = [(n, os.path.join(folder, n)) for n in sorted(os.listdir(folder))
                     if not n.endswith(".u16")]  # routes files are referenced, not inputs
            files += sorted(extra.items())
            counts[corpus] = len(files)
            for name, path in files:
                for i, cmd in enumerate(commands):
                    one(f"{corpus}/{name} :: command {i + 1}", expand(cmd, file=path),
                        [path, name])

        if not only or "options" in only:
            cases = option_cases(sy_plan)
            counts["options"] = len(cases)
            for i, (cmd, names) in enumerate(cases):
                one(f"options/{i + 1} :: {' '.join(cmd[1:])[-70:]}", cmd, [names])

    print(f"\n{runs} runs over " + ", ".join(f"{k}: {v} inputs" for k, v in counts.items()))
    print(f"inputs that ended in a traceback: {len(tracebacks)}")
    print(f"{len(failures)} failed run(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
