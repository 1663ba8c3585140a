"""Command line: check a trace, or report on it (tables on stdout, optional SVG plots and JSON);
plot bandwidth curves from sy-bench runs."""
import argparse
import json
import math
import os
import sys

from sytrace import bandwidth as bw_curves
from sytools import jsonfile
from sytrace import plots
from sytrace import trace as tr


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr ("sy-trace: ..."), exit code 2."""

    def error(self, message):
        self.exit(2, f"sy-trace: {message} (sy-trace --help for usage)\n")


def _bytes(v):
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= size:
            return f"{v / size:.1f} {unit}"
    return f"{v:.0f} B"


def _table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header)] + [line(r) for r in rows])


def _matrix_rows(matrix, fmt):
    return [[f"{i}"] + [fmt(v) for v in row] for i, row in enumerate(matrix)]


def _capacities(pairs):
    """{link class: GB/s} from CLASS=GBPS arguments (a link's measured capacity, e.g. from sy-bench
    on the same machine, or a simulated cluster's shaped rate: 1 Gbit/s = 0.125 GB/s)."""
    out = {}
    for pair in pairs or []:
        name, _, value = pair.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            raise UsageError(f"--capacity takes CLASS=GBPS (e.g. inter-node=0.125), got "
                             f"'{pair}'") from None
        if not math.isfinite(out[name]) or out[name] <= 0:
            raise UsageError(f"--capacity {name} must be a positive number of GB/s")
    return out


def report(args):
    capacity = _capacities(args.capacity)
    t = tr.load(args.trace)
    problems = tr.check(t)
    clock = t.meta["clock"]
    print(f"{args.trace}: {t.ranks} ranks on {t.nodes} node(s), {len(t.events)} events, "
          f"steps {t.steps[0]}..{t.steps[-1]}" if t.steps else f"{args.trace}: no events")
    print(f"clock alignment: {clock['method']}; residual (half the min round trip) up to "
          f"{max(clock['residual_ns']) / 1e3:.1f} us")
    for p in problems[:5]:
        print(f"warning: {p}")

    times = tr.phase_times(t)
    phases = [p for p in plots.PHASE_COLORS if any(p in times[r] for r in times)]
    print("\n== time per phase (mean ms per step) ==")
    print(_table(["rank"] + phases,
                 [[r] + [f"{times[r].get(p, 0):.3f}" for p in phases] for r in range(t.ranks)]))

    bw = tr.bandwidth(t)
    print("\n== bytes sent and achieved bandwidth per link class ==")
    print("(bytes over the time inside the calls that sent them, waiting included)")
    print(_table(["class", "bytes", "seconds", "GB/s", "capacity GB/s", "% of capacity"],
                 [[c, _bytes(b), f"{s:.3f}", f"{g:.2f}",
                   f"{capacity[c]:.3f}" if c in capacity else "-",
                   f"{100 * g / capacity[c]:.1f}" if c in capacity else "-"]
                  for c, (b, s, g) in sorted(bw.items())]))

    ov = tr.overlap(t)
    print("\n== communication overlapped with compute ==")
    print(_table(["rank", "comm ms", "overlapped ms", "%"],
                 [[r, f"{c:.1f}", f"{o:.1f}", f"{100 * o / c if c else 0:.1f}"]
                  for r, (c, o) in ov.items()]))

    ranks, nodes = tr.traffic(t)
    print("\n== traffic matrix, bytes sent (row: sender, column: receiver; diagonal: kept) ==")
    print(_table(["from\\to"] + list(range(t.ranks)), _matrix_rows(ranks, _bytes)))
    print("\nnode x node:")
    print(_table(["from\\to"] + list(range(t.nodes)), _matrix_rows(nodes, _bytes)))

    wait, waited_on = tr.waits(t)
    print("\n== stragglers: ms rank (row) waited for peer (column) to enter all-to-all calls ==")
    print(_table(["rank"] + list(range(t.ranks)), _matrix_rows(wait, lambda v: f"{v:.1f}")))
    top, top_ms = waited_on[0]
    total = sum(ms for _, ms in waited_on)
    print("others waited most on: " + ", ".join(f"rank {p} ({ms:.1f} ms)" for p, ms in waited_on))
    if total > 0:
        print(f"straggler: rank {top} ({100 * top_ms / total:.0f}% of all waiting)")

    step = args.step if args.step is not None else (t.steps[len(t.steps) // 2] if t.steps else 0)
    if args.plots:
        os.makedirs(args.plots, exist_ok=True)
        plots.heatmap(os.path.join(args.plots, "traffic_ranks.svg"),
                      "bytes sent, rank x rank (whole trace)", ranks, "sender rank",
                      "receiver rank", _bytes)
        plots.heatmap(os.path.join(args.plots, "traffic_nodes.svg"),
                      "bytes sent, node x node (whole trace)", nodes, "sender node",
                      "receiver node", _bytes)
        plots.heatmap(os.path.join(args.plots, "waits.svg"),
                      "ms waited for a peer to enter all-to-all calls", wait, "waiting rank",
                      "waited-on rank", lambda v: f"{v:.1f}")
        events = tr.step_events(t, step)
        if events:
            plots.timeline(os.path.join(args.plots, "timeline.svg"),
                           f"step {step}: phases per rank (aligned clocks)", t, events)
        print(f"\nplots: {args.plots}/traffic_ranks.svg traffic_nodes.svg waits.svg "
              f"timeline.svg (step {step})")
    if args.json:
        doc = {"ranks": t.ranks, "nodes": t.nodes, "steps": len(t.steps),
               "phase_ms_per_step": {str(r): dict(v) for r, v in times.items()},
               "bandwidth": {c: {"bytes": b, "seconds": s, "gb_per_s": g}
                             for c, (b, s, g) in bw.items()},
               "overlap_ms": {str(r): {"comm": c, "overlapped": o} for r, (c, o) in ov.items()},
               "traffic_ranks": ranks, "traffic_nodes": nodes, "wait_ms": wait,
               "waited_on": [{"rank": p, "ms": ms} for p, ms in waited_on],
               "problems": problems}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
    return 0


def check(args):
    t = tr.load(args.trace)
    problems = tr.check(t)
    for p in problems:
        print(p)
    print(f"{args.trace}: {len(t.events)} events on {t.ranks} ranks, "
          f"{'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def bandwidth(args):
    runs = bw_curves.load(args.runs)
    series = bw_curves.curves(runs)
    params = runs[0]["params"]
    print(f"{len(runs)} sy-bench alltoall run(s): hidden {params['hidden']}, experts "
          f"{params['experts']}, top-{params['topk']}, zipf {params['zipf']}; "
          f"busbw = algbw x (n-1)/n")
    print(bw_curves.table(series))
    bad = sum(row["errors"] for run in runs for row in run["results"])
    if bad:
        print(f"warning: {bad} wrong bytes or sums in these runs; their times do not count")
    if args.out:
        title = args.title or (f"all-to-all bus bandwidth, {runs[0]['ranks']} ranks on "
                               f"{runs[0]['nodes']} node(s)")
        bw_curves.plot(args.out, series, title)
        print(f"plot: {args.out}")
    return 0


def main(argv):
    parser = Parser(
        prog="sy-trace", description="Reports on a switchyard trace (train_moe --trace PATH).")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("report", help="phase times, bandwidth, overlap, traffic, stragglers")
    p.add_argument("trace")
    p.add_argument("--plots", help="write SVG heatmaps and a one-step timeline to this folder")
    p.add_argument("--step", type=int, help="step of the timeline (default: the middle one)")
    p.add_argument("--json", help="write the report's figures as JSON to this file")
    p.add_argument("--capacity", action="append", metavar="CLASS=GBPS",
                   help="a link class's measured capacity, to report achieved bandwidth against "
                        "(repeatable; classes: intra-node, inter-node)")
    p.set_defaults(run=report)
    p = sub.add_parser("check", help="validate: per-track timestamps in order, fields present")
    p.add_argument("trace")
    p.set_defaults(run=check)
    p = sub.add_parser("bandwidth",
                       help="bus bandwidth against message size from sy-bench alltoall --json runs")
    p.add_argument("runs", nargs="+", help="sy-bench alltoall --json files, one per message size")
    p.add_argument("--out", help="write the curves as SVG here")
    p.add_argument("--title", help="plot title")
    p.set_defaults(run=bandwidth)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except jsonfile.InputError as err:  # trace and bench files, named in the message
        parser.exit(2, f"sy-trace: {err}\n")
    except UsageError as err:
        parser.exit(2, f"sy-trace: {err}\n")
    except OSError as err:  # output files and folders (--json, --plots, --out)
        parser.exit(2, f"sy-trace: {err.filename or ''}: {err.strerror or err}\n")
    except Exception as err:  # last resort: a bug, still one line  # noqa: BLE001
        inputs = getattr(args, "trace", None) or " ".join(getattr(args, "runs", []))
        parser.exit(3, f"sy-trace: {inputs}: internal error ({type(err).__name__}: "
                       f"{str(err).splitlines()[0] if str(err) else ''}); please report it\n")
