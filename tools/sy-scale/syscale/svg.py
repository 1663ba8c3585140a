"""Plots as self-contained SVG files (no plotting library needed to make or view them)."""
from xml.sax.saxutils import escape

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]
W, H, LEFT, RIGHT, TOP, BOTTOM = 800, 420, 80, 280, 40, 60


def _frame(title, xlabel, ylabel, ymax):
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="{W}" height="{H}" fill="white"/>',
             f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>',
             f'<text x="{LEFT + (W - LEFT - RIGHT) / 2}" y="{H - 15}" text-anchor="middle">'
             f'{escape(xlabel)}</text>',
             f'<text transform="translate(18,{TOP + (H - TOP - BOTTOM) / 2}) rotate(-90)" '
             f'text-anchor="middle">{escape(ylabel)}</text>']
    for i in range(6):
        v = ymax * i / 5
        y = _y(v, ymax)
        parts.append(f'<line x1="{LEFT}" y1="{y}" x2="{W - RIGHT}" y2="{y}" stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4}" text-anchor="end">{v:.3g}</text>')
    parts.append(f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" '
                 f'stroke="black"/>')
    parts.append(f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}" stroke="black"/>')
    return parts


def _y(v, ymax):
    return H - BOTTOM - (H - TOP - BOTTOM) * (v / ymax if ymax > 0 else 0)


def line_chart(path, title, xlabel, ylabel, series):
    """series: {label: [(x, y), ...]}; x positions are the distinct x values, evenly spaced."""
    xs = sorted({x for pts in series.values() for x, _ in pts})
    ymax = max([y for pts in series.values() for _, y in pts] + [1e-12]) * 1.1
    parts = _frame(title, xlabel, ylabel, ymax)
    step = (W - LEFT - RIGHT) / max(len(xs), 1)
    xpos = {x: LEFT + step * (i + 0.5) for i, x in enumerate(xs)}
    for x in xs:
        parts.append(f'<text x="{xpos[x]}" y="{H - BOTTOM + 18}" text-anchor="middle">{x}</text>')
    for i, (label, pts) in enumerate(sorted(series.items())):
        color = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{xpos[x]:.1f},{_y(y, ymax):.1f}" for x, y in sorted(pts))
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, y in pts:
            parts.append(f'<circle cx="{xpos[x]:.1f}" cy="{_y(y, ymax):.1f}" r="3.5" fill="{color}"/>')
        ly = TOP + 16 * i
        parts.append(f'<rect x="{W - RIGHT + 12}" y="{ly}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{W - RIGHT + 28}" y="{ly + 9}">{escape(label[:40])}</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def stacked_bars(path, title, ylabel, bars, components):
    """bars: [(label, {component: value})], stacked in the order of `components`."""
    ymax = max([sum(v.get(c, 0) for c in components) for _, v in bars] + [1e-12]) * 1.1
    parts = _frame(title, "point", ylabel, ymax)
    step = (W - LEFT - RIGHT) / max(len(bars), 1)
    for i, (label, values) in enumerate(bars):
        x = LEFT + step * i + step * 0.15
        base = 0.0
        for j, c in enumerate(components):
            v = values.get(c, 0.0)
            y_top, y_bottom = _y(base + v, ymax), _y(base, ymax)
            parts.append(f'<rect x="{x:.1f}" y="{y_top:.1f}" width="{step * 0.7:.1f}" '
                         f'height="{max(y_bottom - y_top, 0):.1f}" fill="{PALETTE[j % len(PALETTE)]}"/>')
            base += v
        parts.append(f'<text x="{x + step * 0.35:.1f}" y="{H - BOTTOM + 18}" text-anchor="middle" '
                     f'font-size="10">{escape(label)}</text>')
    for j, c in enumerate(components):
        ly = TOP + 16 * j
        parts.append(f'<rect x="{W - RIGHT + 12}" y="{ly}" width="10" height="10" '
                     f'fill="{PALETTE[j % len(PALETTE)]}"/>')
        parts.append(f'<text x="{W - RIGHT + 28}" y="{ly + 9}">{escape(c)}</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")
