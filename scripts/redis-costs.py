#!/usr/bin/env python3
"""Prints what each relayed message cost Redis, command by command.

Usage: redis-cli info commandstats | scripts/redis-costs.py REPORT.json
REPORT.json is the generator's report of the run the statistics cover (reset them with
`CONFIG RESETSTAT` before it); its received messages divide Redis's calls and time.
Redis counts a script's own calls under their commands too (an `XADD` inside the append
script is counted under `xadd` and within the script's `eval`), so the rows overlap: the
scripts' rows are the whole, the others show where inside them the time went.
"""
import json
import sys


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip())
    try:
        with open(sys.argv[1]) as f:
            runs = json.load(f).get("runs") or [{}]
    except (OSError, ValueError, AttributeError) as e:
        sys.exit(f"redis-costs: cannot read the report {sys.argv[1]}: {e}")
    messages = runs[0].get("received") or 0
    if not messages:
        sys.exit("redis-costs: the report shows no message received")
    rows = []
    for line in sys.stdin:
        # cmdstat_eval:calls=38259,usec=1095889,usec_per_call=28.64,...
        if not line.startswith("cmdstat_"):
            continue
        name, _, fields = line.strip().partition(":")
        values = dict(f.split("=", 1) for f in fields.split(",") if "=" in f)
        calls, usec = int(values.get("calls", 0)), int(values.get("usec", 0))
        rows.append((usec / messages, calls / messages, name[len("cmdstat_"):]))
    rows.sort(reverse=True)
    print(f"Redis's time per message ({messages} messages), by command:")
    print(f"  {'command':<20} {'calls':>7} {'µs':>7}")
    for usec, calls, name in rows:
        if usec >= 0.05:
            print(f"  {name:<20} {calls:>7.2f} {usec:>7.1f}")


if __name__ == "__main__":
    main()
