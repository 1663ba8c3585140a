"""SVG plots of a trace (self-contained files, no plotting library): heatmaps of rank x rank
matrices and a timeline of one step."""
from xml.sax.saxutils import escape

from sytrace.trace import TRACKS

# One color per phase; a backward phase shares its forward counterpart's hue, lighter.
PHASE_COLORS = {
    "gate": "#1f77b4", "gate_bwd": "#8fbbda",
    "dispatch": "#ff7f0e", "combine_bwd": "#ffbf86",
    "experts": "#2ca02c", "experts_bwd": "#95d095",
    "combine": "#d62728", "dispatch_bwd": "#eb9394",
    "shared": "#9467bd", "shared_bwd": "#c9b3de",
    "grad_reduce": "#8c564b", "replan": "#7f7f7f", "migration": "#e377c2",
}


def _write(path, parts):
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n</svg>\n")


def _header(width, height, title):
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="sans-serif" font-size="12">',
            f'<rect width="{width}" height="{height}" fill="white"/>',
            f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>']


def heatmap(path, title, matrix, row_label, col_label, fmt):
    """matrix[row][col] shaded white (0) to dark blue (max), each cell labelled with fmt(value)."""
    n_rows, n_cols = len(matrix), len(matrix[0]) if matrix else 0
    cell = max(28, min(70, 560 // max(n_rows, n_cols, 1)))
    left, top = 90, 60
    width, height = left + cell * n_cols + 30, top + cell * n_rows + 50
    vmax = max([v for row in matrix for v in row] + [1e-12])
    parts = _header(width, height, title)
    for r, row in enumerate(matrix):
        for c, v in enumerate(row):
            t = v / vmax
            shade = f"rgb({int(255 - 225 * t)},{int(255 - 170 * t)},{int(255 - 75 * t)})"
            x, y = left + c * cell, top + r * cell
            parts.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{shade}" '
                         f'stroke="#999"/>')
            parts.append(f'<text x="{x + cell / 2}" y="{y + cell / 2 + 4}" text-anchor="middle" '
                         f'font-size="{10 if cell < 50 else 11}" fill="{"white" if t > 0.6 else "black"}">'
                         f'{escape(fmt(v))}</text>')
        parts.append(f'<text x="{left - 6}" y="{top + r * cell + cell / 2 + 4}" '
                     f'text-anchor="end">{r}</text>')
    for c in range(n_cols):
        parts.append(f'<text x="{left + c * cell + cell / 2}" y="{top - 6}" '
                     f'text-anchor="middle">{c}</text>')
    parts.append(f'<text x="{left + cell * n_cols / 2}" y="{top - 24}" text-anchor="middle">'
                 f'{escape(col_label)}</text>')
    parts.append(f'<text transform="translate(20,{top + cell * n_rows / 2}) rotate(-90)" '
                 f'text-anchor="middle">{escape(row_label)}</text>')
    _write(path, parts)


def timeline(path, title, trace, events):
    """Ranks as rows, each split into one lane per track; phases as colored bars; time in ms from
    the earliest event shown."""
    left, right, top, lane, gap = 170, 150, 50, 14, 10
    width = 1000
    lanes = sorted(TRACKS)
    row_h = lane * len(lanes) + gap
    shown = [p for p in PHASE_COLORS if any(e["name"] == p for e in events)]
    height = top + max(row_h * trace.ranks, 16 * len(shown)) + 50
    t0 = min(e["ts"] for e in events)
    t1 = max(e["ts"] + e["dur"] for e in events)
    scale = (width - left - right) / max(t1 - t0, 1e-9)
    parts = _header(width, height, title)
    for i in range(6):
        t = (t1 - t0) * i / 5
        x = left + t * scale
        parts.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 40}" '
                     f'stroke="#ddd"/>')
        parts.append(f'<text x="{x:.1f}" y="{height - 26}" text-anchor="middle">'
                     f'{t / 1e3:.1f}</text>')
    parts.append(f'<text x="{left + (width - left - right) / 2}" y="{height - 8}" '
                 f'text-anchor="middle">ms</text>')
    for r in range(trace.ranks):
        y = top + r * row_h
        parts.append(f'<text x="8" y="{y + row_h / 2 + 2}" font-weight="bold">rank {r} '
                     f'(node {trace.node_of[r]})</text>')
        for k, tid in enumerate(lanes):
            parts.append(f'<text x="{left - 6}" y="{y + k * lane + 10}" text-anchor="end" '
                         f'font-size="9" fill="#666">{TRACKS[tid]}</text>')
    for e in events:
        x = left + (e["ts"] - t0) * scale
        y = top + e["pid"] * row_h + lanes.index(e["tid"]) * lane
        w = max(e["dur"] * scale, 0.5)
        color = PHASE_COLORS.get(e["name"], "#000")
        parts.append(f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{lane - 2}" '
                     f'fill="{color}"><title>{escape(e["name"])} {e["dur"] / 1e3:.3f} ms'
                     f'</title></rect>')
    for j, p in enumerate(shown):
        ly = top + 16 * j
        parts.append(f'<rect x="{width - right + 14}" y="{ly}" width="10" height="10" '
                     f'fill="{PHASE_COLORS[p]}"/>')
        parts.append(f'<text x="{width - right + 30}" y="{ly + 9}">{escape(p)}</text>')
    _write(path, parts)
