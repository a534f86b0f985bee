#!/usr/bin/env python3
"""Prints Switchboard's figures beside the floor relay's, as ratios.

Usage: scripts/floor-ratios.py DIR
DIR holds the reports scripts/bench.sh writes: NAME.json for Switchboard and
floor-NAME.json for the floor, from the same session. Scenarios missing from either side
are left out.
"""
import json
import os
import sys


def load(directory, name):
    path = os.path.join(directory, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def run(report):
    return report["runs"][0] if report and report.get("runs") else None


# (label, report name, how to read the figure, unit, target ratio or None)
FIGURES = [
    ("server CPU per relayed offer, closed loop", "relay-closed",
     lambda r: run(r)["server_cpu_us_per_msg"], "µs", 1.25),
    ("server CPU per relayed candidate, closed loop", "candidates-closed",
     lambda r: run(r)["server_cpu_us_per_msg"], "µs", None),
    ("server CPU per offer at 5,000 msg/s", "relay-5k",
     lambda r: run(r)["server_cpu_us_per_msg"], "µs", None),
    ("p99 one-way at 5,000 msg/s (from the intended send time)", "relay-5k",
     lambda r: run(r)["latency_us"]["p99"] / 1000, "ms", 2.0),
    ("server CPU per offer at 20,000 msg/s", "relay-20k",
     lambda r: run(r)["server_cpu_us_per_msg"], "µs", None),
    ("p99 one-way at 20,000 msg/s (from the intended send time)", "relay-20k",
     lambda r: run(r)["latency_us"]["p99"] / 1000, "ms", 2.0),
    ("p99.9 one-way at 20,000 msg/s", "relay-20k",
     lambda r: run(r)["latency_us"]["p999"] / 1000, "ms", None),
    ("joins/s (token + connect + join + close, 64 at once)", "join-storm",
     lambda r: r["storm"]["rate"], "/s", None),
    ("server CPU per join", "join-storm",
     lambda r: r["storm"]["server_cpu_us_per_join"], "µs", 1.25),
    ("RSS per idle joined connection", "idle",
     lambda r: r["idle"]["bytes_per_connection"], "B", None),
]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    directory = sys.argv[1]
    rows = []
    for label, name, read, unit, target in FIGURES:
        ours, floor = load(directory, name), load(directory, "floor-" + name)
        try:
            a, b = read(ours), read(floor)
        except (TypeError, KeyError, IndexError):
            continue
        if a is None or b is None:
            continue
        ratio = a / b if b else float("inf")
        goal = f"<= {target:g}x" if target else ""
        rows.append((label, f"{a:,.2f} {unit}", f"{b:,.2f} {unit}", f"{ratio:.2f}x", goal))
    if not rows:
        sys.exit(f"floor-ratios: no pairs of reports in {directory}")
    head = ("figure", "Switchboard", "floor", "ratio", "target")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    for row in [head] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))


if __name__ == "__main__":
    main()
