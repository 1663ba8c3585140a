"""Command line: run a sweep, print its table, compare two result files, plot a result file."""
import argparse
import json
import os
import sys
import time

from sytools import jsonfile
from syscale import results as res
from syscale import svg
from syscale.runner import run_point
from syscale.sweep import SweepError, load_sweep, points, series_key

# This file is <repo>/tools/sy-scale/syscale/cli.py.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.realpath(__file__)))))
# Forward phases, then backward (its gradient all-reduce included) and the optimizer: they add up
# to the step.
SPLIT = ["gate", "dispatch", "experts", "combine", "shared", "backward", "optimizer"]


def default_train_moe():
    return os.environ.get("SY_TRAIN_MOE",
                          os.path.join(REPO, "build", "release", "examples", "train_moe"))


class Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr ("sy-scale: ..."), exit code 2."""

    def error(self, message):
        self.exit(2, f"sy-scale: {message} (sy-scale --help for usage)\n")


def check(args):
    sweep = load_sweep(args.sweep)
    todo = points(sweep)
    print(f"{args.sweep}: {len(todo)} point(s), ranks "
          f"{', '.join(str(r) for r in sorted({p['ranks'] for p in todo}))}")
    return 0


def run(args):
    sweep = load_sweep(args.sweep)
    if not os.path.isfile(args.train_moe) or not os.access(args.train_moe, os.X_OK):
        raise SweepError(f"{args.train_moe} is not an executable train_moe; build first "
                         "(bash tools/bootstrap.sh test) or pass --train-moe")
    todo = points(sweep)
    results = res.new_results(sweep, REPO)
    results["train_moe"] = args.train_moe
    started = time.monotonic()
    for i, point in enumerate(todo):
        label = " ".join(f"{k}={v}" for k, v in sorted(point.items()) if k != "args")
        print(f"[{i + 1}/{len(todo)}] {label} ...", end=" ", flush=True)
        record = run_point(point, args.train_moe, sweep.get("timeout_s", 300),
                           sweep.get("retries", 1), sweep.get("link_rate", "1gbit"),
                           sweep.get("launcher", "mpirun"))
        results["points"].append(record)
        elapsed = time.monotonic() - started
        eta = elapsed / (i + 1) * (len(todo) - i - 1)
        status = "ok" if record["status"] == "ok" else f"FAILED ({record['errors'][-1][:80]})"
        print(f"{status} in {record['wall_s']:.1f} s after {record['attempts']} attempt(s); "
              f"{len(todo) - i - 1} left, about {eta:.0f} s", flush=True)
    res.add_efficiency(results)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    res.write_csv(results, os.path.splitext(args.out)[0] + ".csv")
    print()
    print(res.table(results))
    print(f"\nresults: {args.out} and {os.path.splitext(args.out)[0]}.csv")
    if args.plots:
        plot_files(results, args.plots)
    failed = sum(p["status"] != "ok" for p in results["points"])
    print(f"{len(todo) - failed} points ok, {failed} failed")
    return 0


def plot_files(results, folder):
    os.makedirs(folder, exist_ok=True)
    ok = [p for p in results["points"] if p["status"] == "ok"]
    by_series = {}
    for p in ok:
        label = " ".join(f"{k}={v}" for k, v in series_key(p["params"])
                         if k not in ("preset", "steps")) or "all"
        by_series.setdefault(label, []).append(p)
    mode = results["sweep"].get("mode", "weak")
    svg.line_chart(os.path.join(folder, "throughput.svg"), f"tokens/s ({mode} scaling)", "ranks",
                   "tokens/s, all ranks",
                   {k: [(p["params"]["ranks"], p["result"]["tokens_per_s"]) for p in v]
                    for k, v in by_series.items()})
    svg.line_chart(os.path.join(folder, "efficiency.svg"), f"parallel efficiency ({mode} scaling)",
                   "ranks", "efficiency vs the fewest ranks",
                   {k: [(p["params"]["ranks"], p.get("efficiency", 0)) for p in v]
                    for k, v in by_series.items()})
    svg.stacked_bars(os.path.join(folder, "split.svg"), "time per step by phase (mean over ranks)",
                     "ms", [(f"{p['params']['ranks']}r/{p['params'].get('tokens_per_rank', '')}t",
                             p["result"]["split_ms"]) for p in ok], SPLIT)
    print(f"plots: {', '.join(os.path.join(folder, n) for n in ('throughput.svg', 'efficiency.svg', 'split.svg'))}")


def load_results(path):
    try:
        return res.validate_results(jsonfile.read(path), path, SweepError)
    except SweepError:
        raise
    except jsonfile.InputError as e:
        raise SweepError(str(e)) from None


def main(argv):
    parser = Parser(prog="sy-scale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_check = sub.add_parser("check", help="validate a sweep and count its points; runs nothing")
    p_check.add_argument("sweep", help="sweep description (JSON)")
    p_run = sub.add_parser("run", help="run every point of a sweep")
    p_run.add_argument("sweep", help="sweep description (JSON)")
    p_run.add_argument("--out", required=True, help="results file (JSON; a CSV is written beside)")
    p_run.add_argument("--plots", help="folder for throughput, efficiency and split plots (SVG)")
    p_run.add_argument("--train-moe", default=default_train_moe(), help="train_moe executable")
    p_table = sub.add_parser("table", help="print the table of a results file")
    p_table.add_argument("results")
    p_cmp = sub.add_parser("compare", help="two results files side by side, with ratios")
    p_cmp.add_argument("a")
    p_cmp.add_argument("b")
    p_plot = sub.add_parser("plot", help="plots of a results file")
    p_plot.add_argument("results")
    p_plot.add_argument("--out", required=True, help="folder for the SVG files")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            return check(args)
        if args.command == "run":
            return run(args)
        if args.command == "table":
            print(res.table(load_results(args.results)))
        elif args.command == "compare":
            print(res.compare(load_results(args.a), load_results(args.b)))
        elif args.command == "plot":
            plot_files(load_results(args.results), args.out)
        return 0
    except SweepError as e:  # input files, named in the message
        print(f"sy-scale: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # output files and folders (--out, --plots)
        print(f"sy-scale: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    except Exception as e:  # last resort: a bug, still one line  # noqa: BLE001
        inputs = " ".join(str(getattr(args, k)) for k in ("sweep", "results", "a", "b")
                          if hasattr(args, k))
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"sy-scale: {inputs}: internal error ({type(e).__name__}: {first}); please report "
              "it", file=sys.stderr)
        return 3
