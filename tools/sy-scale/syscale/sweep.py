"""A sweep description (JSON) and the points it expands to.

{
  "name": "weak-tiny",
  "mode": "weak",                 # weak: fixed tokens per rank; strong: fixed global tokens
  "tokens_per_rank": 256,         # weak mode (or an axis)
  "global_tokens": 1024,          # strong mode: tokens per rank = global_tokens / ranks
  "args": {"preset": "tiny", "steps": 20},   # train_moe options held fixed
  "axes": {"ranks": [1, 2, 4], "alltoall": ["flat", "hierarchical"]},
  "timeout_s": 120,               # per attempt of a point
  "retries": 1                    # attempts after the first failure
}

On the simulated cluster (tools/simcluster), sweep "nodes" (and "ranks_per_node") instead of
"ranks"; each point brings a cluster of that many nodes up with links shaped to "link_rate"
(e.g. "1gbit"), runs, and tears it down:
  "axes": {"nodes": [1, 2, 4], "ranks_per_node": [2]}, "link_rate": "1gbit"

"launcher": "srun" launches each point with Slurm's srun instead of mpirun: a Slurm cluster
(tools/slurm/slurmcluster) is brought up for the point (one node for "ranks", one slurmd per
simulated node for "nodes") and torn down after it. Default "mpirun".
"""
import itertools

from sytools import jsonfile

# Axes and fixed arguments that map onto train_moe options; "ranks" is mpirun's -np.
TRAIN_MOE_OPTIONS = {
    "preset": "--preset",
    "steps": "--steps",
    "dtype": "--dtype",
    "scoring": "--scoring",
    "alltoall": "--alltoall",
    "overlap": "--overlap",
    "chunks": "--chunks",
    "tokens_per_rank": "--tokens-per-rank",
    "experts": "--experts",
    "top_k": "--top-k",
    "skew": "--skew",
    "replan_every": "--replan-every",
    "redundant": "--redundant",
    "seed": "--seed",
    "lr": "--lr",
}
AXES = set(TRAIN_MOE_OPTIONS) | {"ranks", "nodes", "ranks_per_node"}
LAUNCHERS = ("mpirun", "srun")

# Bounds on the sizes a sweep may ask for. Every point is an mpirun of train_moe on this machine
# (or a simulated cluster of network namespaces on it), so:
MAX_RANKS = 1024            # ranks of one point (oversubscribed processes on one machine)
MAX_NODES = 64              # simulated nodes (each a namespace with shaped links)
MAX_TOKENS_PER_RANK = 1 << 20  # at dsmoe16b's H 2048 in fp32, 8 GiB of activations per rank
MAX_EXPERTS = 65536         # routes are uint16 expert ids
MAX_STEPS = 1_000_000
MAX_POINTS = 1000           # points of one sweep, each up to timeout_s long
MAX_AXIS_VALUES = 1000
MAX_RETRIES = 10
MAX_TIMEOUT_S = 7 * 24 * 3600

# What each option's values must be: ("int", lo, hi), ("number", lo, hi), "str", or
# ("int-or", word, lo, hi) for an integer or one keyword.
VALUE_KINDS = {
    "ranks": ("int", 1, MAX_RANKS),
    "nodes": ("int", 1, MAX_NODES),
    "ranks_per_node": ("int", 1, MAX_RANKS),
    "preset": "str", "dtype": "str", "scoring": "str", "alltoall": "str", "overlap": "str",
    "steps": ("int", 1, MAX_STEPS),
    "chunks": ("int-or", "auto", 1, 4096),
    "tokens_per_rank": ("int", 1, MAX_TOKENS_PER_RANK),
    "experts": ("int", 1, MAX_EXPERTS),
    "top_k": ("int", 1, MAX_EXPERTS),
    "skew": ("number", 0, 100),
    "replan_every": ("int", 0, MAX_STEPS),
    "redundant": ("int", 0, MAX_EXPERTS),
    "seed": ("int", 0, 2**63 - 1),
    "lr": ("number", 0, 1e6),
}


class SweepError(jsonfile.InputError, ValueError):
    """A sweep description that cannot be run; the message says what to change."""


def load_sweep(path):
    try:
        doc = jsonfile.read(path)
    except jsonfile.InputError as e:
        raise SweepError(str(e)) from None
    return validate_sweep(doc, path)


def _check_value(c, name, value, where):
    kind = VALUE_KINDS[name]
    if kind == "str":
        c.str(value, where)
        if not value:
            c.fail(where, "must not be empty")
    elif kind[0] == "int-or":
        if value != kind[1]:
            if isinstance(value, bool) or not isinstance(value, int):
                c.fail(where, f"must be an integer or '{kind[1]}', not {jsonfile.type_name(value)}")
            c.int(value, where, kind[2], kind[3])
    else:
        getattr(c, kind[0])(value, where, kind[1], kind[2])


def validate_sweep(doc, path=None):
    """The sweep, checked; SweepError (naming `path` when given) says what to change."""
    c = jsonfile.Checker(path, SweepError)
    if not isinstance(doc, dict):
        c.fail("", "a sweep is a JSON object")
    if "name" in doc:
        c.str(doc["name"], "name")
    mode = doc.get("mode", "weak")
    if mode not in ("weak", "strong"):
        c.fail("mode", f"'{jsonfile.short(mode)}' is unknown; use weak or strong")
    axes = doc.get("axes", {})
    if not isinstance(axes, dict) or ("ranks" in axes) == ("nodes" in axes):
        c.fail("axes", 'axes must be an object with "ranks": [...] (this machine) or '
               '"nodes": [...] (the simulated cluster), not both')
    if "ranks_per_node" in axes and "nodes" not in axes:
        c.fail("axes", '"ranks_per_node" goes with "nodes" (the simulated cluster)')
    count = 1
    for name, values in axes.items():
        if name not in AXES:
            c.fail("axes", f"axis '{name}' is unknown; known axes: {', '.join(sorted(AXES))}")
        if not isinstance(values, list) or not values:
            c.fail(f"axes.{name}", f"axis '{name}' needs a non-empty list of values")
        c.list(values, f"axes.{name}", 1, MAX_AXIS_VALUES)
        for i, v in enumerate(values):
            _check_value(c, name, v, f"axes.{name}[{i}]")
        count *= len(values)
    if count > MAX_POINTS:
        c.fail("axes", f"expand to {count} points, at most {MAX_POINTS} allowed (each point is "
               "a train_moe run); sweep fewer values")
    args = doc.get("args", {})
    c.obj(args, "args")
    for name, value in args.items():
        if name not in TRAIN_MOE_OPTIONS:
            c.fail("args", f"args.{name} is not a train_moe option; known: "
                   f"{', '.join(sorted(TRAIN_MOE_OPTIONS))}")
        _check_value(c, name, value, f"args.{name}")
    if "tokens_per_rank" in doc:
        _check_value(c, "tokens_per_rank", doc["tokens_per_rank"], "tokens_per_rank")
    if mode == "strong":
        if "global_tokens" not in doc:
            c.fail("", "strong scaling needs global_tokens")
        c.int(doc["global_tokens"], "global_tokens", 1, MAX_TOKENS_PER_RANK * MAX_RANKS)
        if "tokens_per_rank" in axes:
            c.fail("axes", "strong scaling derives tokens_per_rank; do not sweep it")
    if "link_rate" in doc:
        c.str(doc["link_rate"], "link_rate")
    if "launcher" in doc:
        c.str(doc["launcher"], "launcher")
        if doc["launcher"] not in LAUNCHERS:
            c.fail("launcher", f"{jsonfile.short(doc['launcher'])} is unknown; use "
                   f"{' or '.join(LAUNCHERS)}")
    c.number(doc.get("timeout_s", 1), "timeout_s", 0, MAX_TIMEOUT_S)
    if doc.get("timeout_s", 1) <= 0:
        c.fail("timeout_s", "timeout_s must be positive and retries >= 0")
    c.int(doc.get("retries", 0), "retries", 0, MAX_RETRIES)
    for p in points(doc):
        if p["ranks"] > MAX_RANKS:
            c.fail("axes", f"nodes x ranks_per_node = {p['ranks']} ranks, at most {MAX_RANKS}")
        if mode == "strong" and doc["global_tokens"] % p["ranks"]:
            c.fail("global_tokens", f"global_tokens {doc['global_tokens']} does not divide by "
                   f"{p['ranks']} ranks")
        if p.get("tokens_per_rank", 1) > MAX_TOKENS_PER_RANK:
            c.fail("global_tokens", f"{p['tokens_per_rank']} tokens per rank, at most "
                   f"{MAX_TOKENS_PER_RANK}")
    return doc


def points(sweep):
    """Every combination of the axes, the scale axis varying fastest, as {option: value} dicts;
    on the simulated cluster ranks = nodes x ranks_per_node."""
    axes = sweep["axes"]
    scale = "ranks" if "ranks" in axes else "nodes"
    names = [n for n in axes if n != scale] + [scale]
    out = []
    for values in itertools.product(*(axes[n] for n in names)):
        p = dict(sweep.get("args", {}))
        p.update(zip(names, values))
        if "nodes" in p:
            p.setdefault("ranks_per_node", 1)
            p["ranks"] = p["nodes"] * p["ranks_per_node"]
        if sweep.get("mode", "weak") == "strong":
            p["tokens_per_rank"] = sweep["global_tokens"] // p["ranks"]
        elif "tokens_per_rank" not in p and "tokens_per_rank" in sweep:
            p["tokens_per_rank"] = sweep["tokens_per_rank"]
        out.append(p)
    return out


def series_key(point):
    """What identifies a point's curve: every parameter except the scale (ranks or nodes)."""
    return tuple(sorted((k, v) for k, v in point.items()
                        if k not in ("ranks", "nodes", "tokens_per_rank")))
