"""Bandwidth curves from several `sy-bench alltoall --json` runs (one message size each): bus
bandwidth against bytes per rank, one curve per algorithm and phase, as a table and an SVG."""
import math
from xml.sax.saxutils import escape

from sytools import jsonfile

FORMAT = "switchyard-bench-alltoall/v1"
ALGO_COLORS = {"mpi": "#7f7f7f", "flat": "#1f77b4", "hierarchical": "#d62728"}
PHASE_DASH = {"dispatch": "", "combine": "6,4"}


class BenchError(jsonfile.InputError):
    pass


ROW_NUMBERS = ("median_ms", "algbw_gb_per_s", "busbw_gb_per_s", "speedup")


def validate(doc, path):
    """The run, checked for the fields the table and plot read; BenchError names the file."""
    c = jsonfile.Checker(path)
    c.obj(doc, "the document")
    if doc.get("format") != FORMAT:
        raise BenchError(f"{path}: format is {jsonfile.short(doc.get('format'))}, want {FORMAT!r} "
                         "(write it with sy-bench alltoall --json)")
    c.int(c.field(doc, "ranks", ""), "ranks", 1)
    c.int(c.field(doc, "nodes", ""), "nodes", 1)
    c.number(c.field(doc, "message_bytes_per_rank", ""), "message_bytes_per_rank", 1)
    params = c.obj(c.field(doc, "params", ""), "params")
    for key in ("hidden", "experts", "topk", "zipf"):
        c.number(c.field(params, key, "params"), f"params.{key}")
    for i, row in enumerate(c.list(c.field(doc, "results", ""), "results", min_len=1)):
        where = f"results[{i}]"
        c.obj(row, where)
        c.str(c.field(row, "algorithm", where), f"{where}.algorithm")
        c.str(c.field(row, "phase", where), f"{where}.phase")
        for key in ROW_NUMBERS:
            c.number(c.field(row, key, where), f"{where}.{key}", 0)
        c.int(c.field(row, "errors", where), f"{where}.errors", 0)
    return doc


def load(paths):
    """The runs, smallest message first; raises BenchError naming a file that is not a sy-bench
    alltoall JSON."""
    runs = []
    for path in paths:
        try:
            doc = validate(jsonfile.read(path), path)
        except BenchError:
            raise
        except jsonfile.InputError as err:
            raise BenchError(str(err)) from None
        doc["path"] = path
        runs.append(doc)
    return sorted(runs, key=lambda d: d["message_bytes_per_rank"])


def curves(runs):
    """{label: [(bytes per rank, result row, run)]}, one curve per algorithm and phase; the label
    names ranks x nodes too when the runs mix them."""
    shapes = {(r["ranks"], r["nodes"]) for r in runs}
    out = {}
    for run in runs:
        for row in run["results"]:
            label = f"{row['algorithm']} {row['phase']}"
            if len(shapes) > 1:
                label += f" ({run['ranks']} ranks, {run['nodes']} nodes)"
            out.setdefault(label, []).append((run["message_bytes_per_rank"], row, run))
    return out


def table(series):
    header = ["algorithm", "phase", "ranks", "nodes", "bytes/rank", "median ms", "algbw GB/s",
              "busbw GB/s", "speed-up", "errors"]
    rows = []
    for points in series.values():
        for size, row, run in points:
            rows.append([row["algorithm"], row["phase"], run["ranks"], run["nodes"], f"{size:.0f}",
                         f"{row['median_ms']:.3f}", f"{row['algbw_gb_per_s']:.3f}",
                         f"{row['busbw_gb_per_s']:.3f}", f"{row['speedup']:.2f}x", row["errors"]])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    return "\n".join("  ".join(str(c).rjust(w) for c, w in zip(r, widths))
                     for r in [header] + rows)


def _bytes_label(v):
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= size:
            return f"{v / size:.3g} {unit}"
    return f"{v:.0f} B"


def plot(path, series, title):
    """busbw (linear, from 0) against bytes per rank (log scale); dispatch solid, combine dashed."""
    width, height, left, right, top, bottom = 820, 460, 70, 230, 45, 55
    sizes = sorted({size for pts in series.values() for size, _, _ in pts})
    ymax = max([row["busbw_gb_per_s"] for pts in series.values() for _, row, _ in pts] + [1e-9])
    ymax *= 1.1
    lo, hi = math.log10(sizes[0]), math.log10(sizes[-1])
    if hi - lo < 1e-9:  # one size: centre it
        lo, hi = lo - 0.5, hi + 0.5
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(size):
        return left + (math.log10(size) - lo) / (hi - lo) * plot_w

    def y(gbps):
        return top + plot_h * (1 - gbps / ymax)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{left + plot_w / 2}" y="24" text-anchor="middle" font-size="15">'
             f'{escape(title)}</text>']
    for i in range(6):
        v = ymax * i / 5
        parts.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + plot_w}" y2="{y(v):.1f}" '
                     f'stroke="#e5e5e5"/>')
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    for size in sizes:
        parts.append(f'<line x1="{x(size):.1f}" y1="{top}" x2="{x(size):.1f}" '
                     f'y2="{top + plot_h}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{x(size):.1f}" y="{top + plot_h + 18}" text-anchor="middle">'
                     f'{_bytes_label(size)}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
                 f'stroke="#333"/>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 12}" text-anchor="middle">'
                 f'message size: bytes per rank (tokens x top-k x hidden x 4), log scale</text>')
    parts.append(f'<text transform="translate(18,{top + plot_h / 2}) rotate(-90)" '
                 f'text-anchor="middle">bus bandwidth, GB/s</text>')
    for k, (label, points) in enumerate(series.items()):
        algo, phase = points[0][1]["algorithm"], points[0][1]["phase"]
        color = ALGO_COLORS.get(algo, "#2ca02c")
        dash = PHASE_DASH.get(phase, "2,2")
        coords = " ".join(f"{x(s):.1f},{y(r['busbw_gb_per_s']):.1f}" for s, r, _ in points)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2" '
                     f'stroke-dasharray="{dash}"/>')
        for s, r, _ in points:
            parts.append(f'<circle cx="{x(s):.1f}" cy="{y(r["busbw_gb_per_s"]):.1f}" r="3" '
                         f'fill="{color}"><title>{escape(label)}: {_bytes_label(s)}, '
                         f'{r["busbw_gb_per_s"]:.3f} GB/s, {r["median_ms"]:.3f} ms</title></circle>')
        ly = top + 8 + 18 * k
        parts.append(f'<line x1="{left + plot_w + 14}" y1="{ly}" x2="{left + plot_w + 44}" '
                     f'y2="{ly}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>')
        parts.append(f'<text x="{left + plot_w + 50}" y="{ly + 4}">{escape(label)}</text>')
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n</svg>\n")
