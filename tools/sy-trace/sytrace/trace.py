"""Loading, checking and analysing a switchyard trace (format switchyard-trace/v1: Chrome trace
events, one process per rank, timestamps in microseconds aligned to rank 0's clock)."""
from collections import defaultdict

from sytools import jsonfile

FORMAT = "switchyard-trace/v1"
TRACKS = {1: "compute", 2: "dispatch", 3: "combine", 4: "collectives"}
COMPUTE_TRACK = 1
# The traffic and wait matrices are ranks x ranks lists: 4096 ranks keep them near 130 MB each, and
# no run of this runtime comes near that many ranks.
MAX_RANKS = 4096


class TraceError(jsonfile.InputError):
    pass


class Trace:
    def __init__(self, doc, path="trace"):
        c = jsonfile.Checker(path)
        c.obj(doc, "the document")
        meta = doc.get("otherData")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise TraceError(f"{path}: not a {FORMAT} trace (otherData.format is "
                             f"{jsonfile.short(found)}); write one with train_moe --trace PATH")
        self.meta = meta
        self.ranks = c.int(c.field(meta, "ranks", "otherData"), "otherData.ranks", 1, MAX_RANKS)
        self.nodes = c.int(c.field(meta, "nodes", "otherData"), "otherData.nodes", 1, self.ranks)
        self.node_of = c.list(c.field(meta, "node_of_rank", "otherData"), "otherData.node_of_rank")
        if len(self.node_of) != self.ranks:
            c.fail("otherData.node_of_rank", f"has {len(self.node_of)} entries, expected one per "
                   f"rank ({self.ranks})")
        for r, n in enumerate(self.node_of):
            c.int(n, f"otherData.node_of_rank[{r}]", 0, self.nodes - 1)
        clock = c.obj(c.field(meta, "clock", "otherData"), "otherData.clock")
        c.str(c.field(clock, "method", "otherData.clock"), "otherData.clock.method")
        residual = c.list(c.field(clock, "residual_ns", "otherData.clock"),
                          "otherData.clock.residual_ns", min_len=1)
        for i, v in enumerate(residual):
            c.number(v, f"otherData.clock.residual_ns[{i}]", 0)
        events = c.list(c.field(doc, "traceEvents", ""), "traceEvents")
        self.events = []
        for i, e in enumerate(events):
            c.obj(e, f"traceEvents[{i}]")
            if e.get("ph") == "X":
                self.events.append(self._event(c, e, f"traceEvents[{i}]"))
        self.steps = sorted({e["args"]["step"] for e in self.events})

    def _event(self, c, e, where):
        """A complete ("X") event with the fields the analyses read, of the right types."""
        c.str(c.field(e, "name", where), f"{where}.name")
        c.int(c.field(e, "pid", where), f"{where}.pid (rank)", 0, self.ranks - 1)
        tid = c.int(c.field(e, "tid", where), f"{where}.tid")
        if tid not in TRACKS:
            c.fail(f"{where}.tid", f"track {tid} is unknown; tracks are "
                   + ", ".join(f"{k} ({v})" for k, v in TRACKS.items()))
        c.number(c.field(e, "ts", where), f"{where}.ts")
        c.number(c.field(e, "dur", where), f"{where}.dur")
        args = c.obj(c.field(e, "args", where), f"{where}.args")
        c.int(c.field(args, "step", f"{where}.args"), f"{where}.args.step")
        if "call" in args:
            c.int(args["call"], f"{where}.args.call")
            for i, p in enumerate(c.list(c.field(args, "peers", f"{where}.args"),
                                         f"{where}.args.peers")):
                c.int(p, f"{where}.args.peers[{i}]", 0, self.ranks - 1)
        if "send_bytes" in args:
            sent = c.list(args["send_bytes"], f"{where}.args.send_bytes")
            if len(sent) != self.ranks:
                c.fail(f"{where}.args.send_bytes", f"has {len(sent)} entries, expected one per "
                       f"rank ({self.ranks})")
            for i, b in enumerate(sent):
                c.int(b, f"{where}.args.send_bytes[{i}]", 0)
        return e

    def comm_events(self):
        """Events that moved data between ranks (all-to-all calls and migrations)."""
        return [e for e in self.events if "send_bytes" in e["args"]]


def load(path):
    """The trace; TraceError (one line, naming the file) when it is not a readable, well-formed
    switchyard-trace/v1 file."""
    try:
        return Trace(jsonfile.read(path), path)
    except TraceError:
        raise
    except jsonfile.InputError as err:
        raise TraceError(str(err)) from None


def check(trace):
    """Problems with the trace as a list of strings (empty: well-formed). Events on one track of
    one rank must be in time order and must not overlap: each track is one sequential stream."""
    problems = []
    last_end = {}
    for e in trace.events:
        for field in ("name", "pid", "tid", "ts", "dur", "args"):
            if field not in e:
                problems.append(f"event without {field}: {e}")
        if not 0 <= e["pid"] < trace.ranks or e["tid"] not in TRACKS:
            problems.append(f"event on an unknown rank or track: {e}")
            continue
        key = (e["pid"], e["tid"])
        if e["dur"] < 0:
            problems.append(f"negative duration on rank {e['pid']} {TRACKS[e['tid']]}: {e}")
        if key in last_end and e["ts"] < last_end[key]:
            problems.append(f"rank {e['pid']} track {TRACKS[e['tid']]}: {e['name']} at "
                            f"{e['ts']} us starts before the previous event ends ({last_end[key]} us)")
        last_end[key] = e["ts"] + e["dur"]
    return problems


def phase_times(trace):
    """{rank: {phase: mean ms per step}}."""
    steps = max(len(trace.steps), 1)
    out = defaultdict(lambda: defaultdict(float))
    for e in trace.events:
        out[e["pid"]][e["name"]] += e["dur"] / 1e3 / steps
    return out


def link_class(trace, r, p):
    return "intra-node" if trace.node_of[r] == trace.node_of[p] else "inter-node"


def bandwidth(trace):
    """{class: (bytes, seconds, GB/s)}: bytes sent per link class over the time spent inside the
    calls that sent them (waiting for peers included, so this is achieved, not link, bandwidth);
    each call's time counts once per class it used. Rows a rank keeps for itself are a local copy,
    not link traffic, and are left out."""
    total = defaultdict(lambda: [0, 0.0])
    for e in trace.comm_events():
        r = e["pid"]
        used = defaultdict(int)
        for p, b in enumerate(e["args"]["send_bytes"]):
            if p != r:
                used[link_class(trace, r, p)] += b
        for cls, b in used.items():
            if b > 0:
                total[cls][0] += b
                total[cls][1] += e["dur"] / 1e6
    return {cls: (b, s, b / s / 1e9 if s > 0 else 0.0) for cls, (b, s) in total.items()}


def _union(intervals):
    merged = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def _intersection_length(a, b):
    i = j = 0
    total = 0.0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        total += max(0.0, hi - lo)
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def overlap(trace):
    """{rank: (communication ms, of it overlapped with compute ms)}: the union of the rank's
    communication tracks intersected with its compute track."""
    out = {}
    for r in range(trace.ranks):
        mine = [e for e in trace.events if e["pid"] == r]
        comm = _union([(e["ts"], e["ts"] + e["dur"]) for e in mine if e["tid"] != COMPUTE_TRACK])
        compute = _union([(e["ts"], e["ts"] + e["dur"]) for e in mine if e["tid"] == COMPUTE_TRACK])
        comm_ms = sum(hi - lo for lo, hi in comm) / 1e3
        out[r] = (comm_ms, _intersection_length(comm, compute) / 1e3)
    return out


def traffic(trace):
    """(rank x rank, node x node) bytes sent, row = sender, over all data-moving events."""
    ranks = [[0] * trace.ranks for _ in range(trace.ranks)]
    nodes = [[0] * trace.nodes for _ in range(trace.nodes)]
    for e in trace.comm_events():
        r = e["pid"]
        for p, b in enumerate(e["args"]["send_bytes"]):
            ranks[r][p] += b
            nodes[trace.node_of[r]][trace.node_of[p]] += b
    return ranks, nodes


def waits(trace):
    """Rank x rank wait matrix in ms: for every all-to-all call instance, rank r waits on each peer
    p it exchanges data with for max(0, start_p - start_r) (aligned clocks). Returns the matrix and
    the ranks ordered by how long the others waited on them in total, most first."""
    calls = defaultdict(dict)
    for e in trace.events:
        if "call" in e["args"]:
            calls[e["args"]["call"]][e["pid"]] = e
    matrix = [[0.0] * trace.ranks for _ in range(trace.ranks)]
    for by_rank in calls.values():
        for r, e in by_rank.items():
            for p in e["args"]["peers"]:
                if p in by_rank:
                    matrix[r][p] += max(0.0, by_rank[p]["ts"] - e["ts"]) / 1e3
    waited_on = [sum(matrix[r][p] for r in range(trace.ranks)) for p in range(trace.ranks)]
    order = sorted(range(trace.ranks), key=lambda p: -waited_on[p])
    return matrix, [(p, waited_on[p]) for p in order]


def step_events(trace, step):
    return [e for e in trace.events if e["args"]["step"] == step]
