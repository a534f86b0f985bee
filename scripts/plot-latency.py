#!/usr/bin/env python3
"""Plot relay latency against achieved rate from `switchboard-bench relay --sweep --json`.

Reads one or more sweep reports and writes a self-contained SVG: one-way latency
(p50 solid, p99 dashed, p99.9 dotted; logarithmic, in ms) against achieved rate
(messages/s). Each report gets its own colour, labelled with its "label" field
(else the file name); a report's max_sustained_rate, if any, is marked with a thin
vertical line. Standard library only.

Usage: python3 scripts/plot-latency.py [--title TITLE] OUT.svg IN.json [IN2.json ...]
"""

import argparse
import json
import math
import os
import sys
import textwrap
from xml.sax.saxutils import escape

W, H = 800, 480
LEFT, TOP, RIGHT, BOTTOM = 70, 44, 600, 424  # plot area; the legend sits right of it
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"]
PERCENTILES = [("p50", "p50", None), ("p99", "p99", "7 4"), ("p999", "p99.9", "1.5 3")]
FONT = 'font-family="Helvetica, Arial, sans-serif"'


def fail(msg):
    print(f"plot-latency: {msg}", file=sys.stderr)
    sys.exit(2)


def number(v):
    """A finite float, or None for absent, null or non-numeric values."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        fail(f"{path} is not valid JSON: {e}")
    runs = doc.get("runs") if isinstance(doc, dict) else None
    if not isinstance(runs, list) or not runs:
        fail(f"{path} has no runs (expected output of `switchboard-bench relay --sweep --json`)")
    series = {}
    for key, _, _ in PERCENTILES:
        pts = []
        # Keep run order rather than sorting by rate: past saturation the achieved rate
        # can fall while latency climbs, and the line should show that hook. None marks
        # a gap; log scale cannot show zero (an empty histogram), so it is a gap too.
        for run in runs:
            lat = run.get("latency_us") if isinstance(run, dict) else None
            x = number(run.get("achieved_rate")) if isinstance(run, dict) else None
            y = number(lat.get(key)) if isinstance(lat, dict) else None
            pts.append((x, y / 1000.0) if x is not None and y and y > 0 else None)
        series[key] = pts
    if not any(p for pts in series.values() for p in pts):
        fail(f"{path} has runs but no achieved_rate/latency_us values to plot")
    label = doc.get("label") if isinstance(doc.get("label"), str) and doc["label"].strip() else None
    return {"label": label or os.path.basename(path), "series": series,
            "max_rate": number(doc.get("max_sustained_rate"))}


def nice_step(span, target=6):
    """A 1/2/5 x 10^k step giving about `target` intervals over `span`."""
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


def text(x, y, s, size=11, anchor="middle", extra="", fill="#222"):
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'{FONT} fill="{fill}"{extra}>{escape(s)}</text>')


def render(reports, title):
    xs = [p[0] for r in reports for pts in r["series"].values() for p in pts if p]
    xs += [r["max_rate"] for r in reports if r["max_rate"]]
    ys = [p[1] for r in reports for pts in r["series"].values() for p in pts if p]
    step = nice_step(max(xs) or 1)
    xmax = math.ceil(max(xs) / step) * step or step
    # Whole decades, so every gridline is a round 0.1 / 1 / 10 ... ms.
    dlo, dhi = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    dhi = max(dhi, dlo + 1)
    sx = lambda x: LEFT + (RIGHT - LEFT) * x / xmax
    sy = lambda y: BOTTOM - (BOTTOM - TOP) * (math.log10(y) - dlo) / (dhi - dlo)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}">',
           f'<rect width="{W}" height="{H}" fill="#fff"/>',
           f'<clipPath id="plot"><rect x="{LEFT}" y="{TOP}" width="{RIGHT - LEFT}" '
           f'height="{BOTTOM - TOP}"/></clipPath>',
           text(W / 2, 26, title, 16, extra=' font-weight="bold"')]
    for d in range(dlo, dhi + 1):  # decade gridlines, with unlabelled 2..9 ticks between
        y = sy(10.0 ** d)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{RIGHT}" y2="{y:.1f}" stroke="#ccc"/>')
        out.append(text(LEFT - 6, y + 4, f"{10.0 ** d:,g}", anchor="end"))
        for m in range(2, 10) if d < dhi else ():
            ym = sy(m * 10.0 ** d)
            out.append(f'<line x1="{LEFT - 3}" y1="{ym:.1f}" x2="{LEFT}" y2="{ym:.1f}" stroke="#888"/>')
    for i in range(int(round(xmax / step)) + 1):
        x = sx(i * step)
        out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{BOTTOM}" stroke="#eee"/>')
        out.append(text(x, BOTTOM + 16, f"{i * step:,.0f}"))
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{RIGHT - LEFT}" height="{BOTTOM - TOP}" '
               f'fill="none" stroke="#444"/>')
    out.append(text((LEFT + RIGHT) / 2, H - 18, "achieved rate (messages/s)", 13))
    out.append(text(20, (TOP + BOTTOM) / 2, "one-way latency (ms)", 13,
                    extra=f' transform="rotate(-90 20 {(TOP + BOTTOM) / 2})"'))

    for i, r in enumerate(reports):
        colour = COLOURS[i % len(COLOURS)]
        if r["max_rate"]:
            x = sx(r["max_rate"])
            out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{BOTTOM}" '
                       f'stroke="{colour}" stroke-width="1" stroke-dasharray="2 2" opacity="0.7"/>')
            # Label inside the plot, on whichever side of the line has room; stagger files.
            left = x > (LEFT + RIGHT) / 2
            out.append(text(x - 4 if left else x + 4, TOP + 14 + 14 * i,
                            f"max sustained {r['max_rate']:,.0f}/s", 10,
                            "end" if left else "start", fill=colour))
        for key, _, dash in PERCENTILES:
            pts, d, pen = r["series"][key], [], "M"
            for p in pts:
                if p is None:
                    pen = "M"  # a missing value breaks the line instead of bridging it
                    continue
                d.append(f"{pen}{sx(p[0]):.1f},{sy(p[1]):.1f}")
                pen = "L"
            style = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<path d="{" ".join(d)}" fill="none" stroke="{colour}" '
                       f'stroke-width="2"{style} clip-path="url(#plot)"/>')
            out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.8" fill="{colour}"/>'
                    for x, y in filter(None, pts)]

    # Legend: one colour swatch per file, then the dash style of each percentile.
    lx, ly = RIGHT + 16, TOP + 6
    for i, r in enumerate(reports):
        lines = textwrap.wrap(r["label"], 27) or [r["label"]]
        if len(lines) > 2:  # at most two lines per entry, so many files still fit
            lines = [lines[0], lines[1][:26] + "\u2026"]
        out.append(f'<rect x="{lx}" y="{ly}" width="14" height="10" '
                   f'fill="{COLOURS[i % len(COLOURS)]}"/>')
        for line in lines:
            out.append(text(lx + 20, ly + 9, line, 11, "start"))
            ly += 14
        ly += 6
    ly += 10
    for j, (_, name, dash) in enumerate(PERCENTILES):
        y = ly + 18 * j + 5
        style = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line x1="{lx}" y1="{y}" x2="{lx + 30}" y2="{y}" stroke="#444" '
                   f'stroke-width="2"{style}/>')
        out.append(f'<circle cx="{lx + 15}" cy="{y}" r="2.8" fill="#444"/>')
        out.append(text(lx + 38, y + 4, name, 11, "start"))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", metavar="OUT.svg")
    ap.add_argument("inputs", metavar="IN.json", nargs="+")
    ap.add_argument("--title", default="Relay latency vs rate")
    args = ap.parse_args()
    svg = render([load(p) for p in args.inputs], args.title)
    try:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(svg)
    except OSError as e:
        fail(f"cannot write {args.out}: {e.strerror}")


if __name__ == "__main__":
    main()
