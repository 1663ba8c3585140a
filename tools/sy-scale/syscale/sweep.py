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
    "tokens_per_rank": "--tokens-per-rank",
    "experts": "--experts",
    "top_k": "--top-k",
    "skew": "--skew",
    "replan_every": "--replan-every",
    "redundant": "--redundant",
    "seed": "--seed",
    "lr": "--lr",
}
AXES = set(TRAIN_MOE_OPTIONS) | {"ranks"}


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
    if not isinstance(axes, dict) or "ranks" not in axes:
        raise SweepError('axes must be an object with at least "ranks": [...]')
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
        for ranks in axes["ranks"]:
            if doc["global_tokens"] % ranks:
                raise SweepError(f"global_tokens {doc['global_tokens']} does not divide by {ranks} ranks")
    if doc.get("timeout_s", 1) <= 0 or doc.get("retries", 0) < 0:
        raise SweepError("timeout_s must be positive and retries >= 0")
    return doc


def points(sweep):
    """Every combination of the axes, ranks varying fastest, as {option: value} dicts."""
    axes = sweep["axes"]
    names = [n for n in axes if n != "ranks"] + ["ranks"]
    out = []
    for values in itertools.product(*(axes[n] for n in names)):
        p = dict(sweep.get("args", {}))
        p.update(zip(names, values))
        if sweep.get("mode", "weak") == "strong":
            p["tokens_per_rank"] = sweep["global_tokens"] // p["ranks"]
        elif "tokens_per_rank" not in p and "tokens_per_rank" in sweep:
            p["tokens_per_rank"] = sweep["tokens_per_rank"]
        out.append(p)
    return out


def series_key(point):
    """What identifies a point's curve: every parameter except the rank count."""
    return tuple(sorted((k, v) for k, v in point.items() if k != "ranks"))
