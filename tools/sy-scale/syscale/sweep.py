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
"""
import itertools
import json

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


class SweepError(ValueError):
    """A sweep description that cannot be run; the message says what to change."""


def load_sweep(path):
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise SweepError(f"{path}: {e}") from e
    return validate_sweep(doc)


def validate_sweep(doc):
    if not isinstance(doc, dict):
        raise SweepError("a sweep is a JSON object")
    mode = doc.get("mode", "weak")
    if mode not in ("weak", "strong"):
        raise SweepError(f"mode '{mode}' is unknown; use weak or strong")
    axes = doc.get("axes", {})
    if not isinstance(axes, dict) or ("ranks" in axes) == ("nodes" in axes):
        raise SweepError('axes must be an object with "ranks": [...] (this machine) or '
                         '"nodes": [...] (the simulated cluster), not both')
    if "ranks_per_node" in axes and "nodes" not in axes:
        raise SweepError('"ranks_per_node" goes with "nodes" (the simulated cluster)')
    for name, values in axes.items():
        if name not in AXES:
            raise SweepError(f"axis '{name}' is unknown; known axes: {', '.join(sorted(AXES))}")
        if not isinstance(values, list) or not values:
            raise SweepError(f"axis '{name}' needs a non-empty list of values")
    for name in doc.get("args", {}):
        if name not in TRAIN_MOE_OPTIONS:
            raise SweepError(f"args.{name} is not a train_moe option; known: "
                             f"{', '.join(sorted(TRAIN_MOE_OPTIONS))}")
    if mode == "strong":
        if "global_tokens" not in doc:
            raise SweepError("strong scaling needs global_tokens")
        if "tokens_per_rank" in axes:
            raise SweepError("strong scaling derives tokens_per_rank; do not sweep it")
        for p in points(doc):
            if doc["global_tokens"] % p["ranks"]:
                raise SweepError(f"global_tokens {doc['global_tokens']} does not divide by "
                                 f"{p['ranks']} ranks")
    if doc.get("timeout_s", 1) <= 0 or doc.get("retries", 0) < 0:
        raise SweepError("timeout_s must be positive and retries >= 0")
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
