"""Results files (switchyard-scale/v1): provenance, derived efficiency, tables, CSV, comparison."""
import csv
import datetime
import os
import platform
import subprocess

from sytools import jsonfile

FORMAT = "switchyard-scale/v1"
# The figures of an ok point that the table, CSV, comparison and plots read.
RESULT_NUMBERS = ("tokens_per_s", "tokens_per_s_per_rank", "device_imbalance")
STEP_MS = ("median", "p10", "p90")
TABLE_SPLIT = ("dispatch", "combine", "backward")


def validate_results(doc, path, error=jsonfile.InputError):
    """The results document, checked for every field the table, CSV, comparison and plots read;
    `error` (naming the file) says which field is wrong."""
    c = jsonfile.Checker(path, error)
    c.obj(doc, "the document")
    if doc.get("format") != FORMAT:
        c.fail("", f"not a {FORMAT} results file (format is {jsonfile.short(doc.get('format'))})")
    for key in ("git_commit", "started"):
        c.str(c.field(doc, key, ""), key)
    c.obj(c.field(doc, "sweep", ""), "sweep")
    for i, p in enumerate(c.list(c.field(doc, "points", ""), "points")):
        where = f"points[{i}]"
        c.obj(p, where)
        params = c.obj(c.field(p, "params", where), f"{where}.params")
        c.int(c.field(params, "ranks", f"{where}.params"), f"{where}.params.ranks", 1)
        for key, value in params.items():
            if isinstance(value, (dict, list)):
                c.fail(f"{where}.params.{key}", "must be a number or a string")
        c.str(c.field(p, "command", where), f"{where}.command")
        status = c.str(c.field(p, "status", where), f"{where}.status")
        if "efficiency" in p:
            c.number(p["efficiency"], f"{where}.efficiency", 0)
        if status != "ok":
            errors = c.list(c.field(p, "errors", where), f"{where}.errors", min_len=1)
            c.str(errors[-1], f"{where}.errors[-1]")
            continue
        r = c.obj(c.field(p, "result", where), f"{where}.result")
        for key in RESULT_NUMBERS:
            # Ratios divide by these (efficiency, comparison): they must be positive.
            c.number(c.field(r, key, f"{where}.result"), f"{where}.result.{key}",
                     0 if key == "device_imbalance" else 1e-12)
        step = c.obj(c.field(r, "step_ms", f"{where}.result"), f"{where}.result.step_ms")
        for key in STEP_MS:  # the comparison divides by the median
            c.number(c.field(step, key, f"{where}.result.step_ms"),
                     f"{where}.result.step_ms.{key}", 1e-12 if key == "median" else 0)
        sent = c.obj(c.field(r, "bytes_per_step", f"{where}.result"),
                     f"{where}.result.bytes_per_step")
        for key in ("intra_node", "inter_node"):
            c.number(c.field(sent, key, f"{where}.result.bytes_per_step"),
                     f"{where}.result.bytes_per_step.{key}", 0)
        split = c.obj(c.field(r, "split_ms", f"{where}.result"), f"{where}.result.split_ms")
        for key in TABLE_SPLIT:
            c.field(split, key, f"{where}.result.split_ms")
        for key, value in split.items():
            c.number(value, f"{where}.result.split_ms.{key}", 0)
    return doc


def machine_description():
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {"hostname": platform.node(), "cpus": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
            "kernel": platform.release(), "machine": platform.machine(),
            "python": platform.python_version()}


def git_commit(repo):
    try:
        out = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def new_results(sweep, repo):
    return {"format": FORMAT, "sweep": sweep, "machine": machine_description(),
            "git_commit": git_commit(repo),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "points": []}


def add_efficiency(results):
    """Parallel efficiency of each ok point against the smallest-rank ok point of its series:
    weak scaling compares tokens/s per rank, strong scaling tokens/s per added rank."""
    from syscale.sweep import series_key
    strong = results["sweep"].get("mode", "weak") == "strong"
    base = {}
    for p in results["points"]:
        if p["status"] != "ok":
            continue
        key = series_key(p["params"])
        if key not in base or p["params"]["ranks"] < base[key]["params"]["ranks"]:
            base[key] = p
    for p in results["points"]:
        p.pop("efficiency", None)
        b = base.get(series_key(p["params"]))
        if p["status"] != "ok" or b is None:
            continue
        r, rb = p["result"], b["result"]
        if strong:
            speedup = r["tokens_per_s"] / rb["tokens_per_s"]
            p["efficiency"] = speedup / (p["params"]["ranks"] / b["params"]["ranks"])
        else:
            p["efficiency"] = r["tokens_per_s_per_rank"] / rb["tokens_per_s_per_rank"]


def row(p):
    """The figures of one point as a flat dict (CSV columns and table cells)."""
    out = {k: p["params"].get(k, "") for k in ("ranks", "tokens_per_rank")}
    out["params"] = " ".join(f"{k}={v}" for k, v in sorted(p["params"].items())
                             if k not in ("ranks", "tokens_per_rank"))
    out["status"] = p["status"]
    if p["status"] == "ok":
        r = p["result"]
        out.update({"step_ms_median": r["step_ms"]["median"], "step_ms_p10": r["step_ms"]["p10"],
                    "step_ms_p90": r["step_ms"]["p90"], "tokens_per_s": r["tokens_per_s"],
                    "tokens_per_s_per_rank": r["tokens_per_s_per_rank"],
                    "efficiency": p.get("efficiency", ""),
                    "device_imbalance": r["device_imbalance"],
                    "intra_node_MB_per_step": r["bytes_per_step"]["intra_node"] / 1e6,
                    "inter_node_MB_per_step": r["bytes_per_step"]["inter_node"] / 1e6})
        out.update({f"{k}_ms": v for k, v in r["split_ms"].items()})
    out["command"] = p["command"]
    return out


def write_csv(results, path):
    rows = [row(p) for p in results["points"]]
    columns = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def table(results):
    lines = [f"{'ranks':>5} {'tok/rank':>8} {'step ms (p10-p90)':>22} {'tokens/s':>10} "
             f"{'per rank':>9} {'eff':>5} {'disp ms':>8} {'comb ms':>8} {'bwd ms':>8} "
             f"{'inter MB':>9} {'imb':>5}  status  params"]
    for p in results["points"]:
        r = row(p)
        if p["status"] != "ok":
            lines.append(f"{r['ranks']:>5} {r['tokens_per_rank']:>8} {'-':>22} {'-':>10} {'-':>9} "
                         f"{'-':>5} {'-':>8} {'-':>8} {'-':>8} {'-':>9} {'-':>5}  FAILED  "
                         f"{r['params']} ({p['errors'][-1][:60]})")
            continue
        eff = f"{r['efficiency']:.2f}" if r["efficiency"] != "" else "-"
        spread = f"{r['step_ms_median']:.1f} ({r['step_ms_p10']:.1f}-{r['step_ms_p90']:.1f})"
        lines.append(f"{r['ranks']:>5} {r['tokens_per_rank']:>8} {spread:>22} "
                     f"{r['tokens_per_s']:>10.0f} {r['tokens_per_s_per_rank']:>9.0f} {eff:>5} "
                     f"{r['dispatch_ms']:>8.2f} {r['combine_ms']:>8.2f} {r['backward_ms']:>8.2f} "
                     f"{r['inter_node_MB_per_step']:>9.2f} {r['device_imbalance']:>5.2f}  ok      "
                     f"{r['params']}")
    return "\n".join(lines)


def compare(a, b):
    """Side by side: points matched by their parameters, with b / a ratios."""
    index = {tuple(sorted(p["params"].items())): p for p in a["points"]}
    lines = [f"A: {a['git_commit']} ({a['started']})", f"B: {b['git_commit']} ({b['started']})",
             f"{'point':<40} {'A tok/s':>10} {'B tok/s':>10} {'B/A':>6} {'A step ms':>10} "
             f"{'B step ms':>10} {'B/A':>6}"]
    for pb in b["points"]:
        key = tuple(sorted(pb["params"].items()))
        pa = index.get(key)
        name = " ".join(f"{k}={v}" for k, v in key)[:40]
        if pa is None or pa["status"] != "ok" or pb["status"] != "ok":
            lines.append(f"{name:<40} {'(only in B or failed)':>30}")
            continue
        ta, tb = pa["result"]["tokens_per_s"], pb["result"]["tokens_per_s"]
        sa, sb = pa["result"]["step_ms"]["median"], pb["result"]["step_ms"]["median"]
        lines.append(f"{name:<40} {ta:>10.0f} {tb:>10.0f} {tb / ta:>6.2f} {sa:>10.1f} {sb:>10.1f} "
                     f"{sb / sa:>6.2f}")
    return "\n".join(lines)
