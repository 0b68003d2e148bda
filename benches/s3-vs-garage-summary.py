#!/usr/bin/env python3
"""Medians and ratios of the rows benches/s3-vs-garage.sh appended to OUT.

usage: s3-vs-garage-summary.py OUT [SINCE]   (SINCE: only rows after the last header
line containing this text, e.g. the binary's name; default: the last header)
Prints a markdown table: per phase, clusster's and Garage's medians (min-max), the ratio,
and the server CPU seconds per GiB moved (for the 1 GiB phases) with its ratio.
"""
import re
import statistics
import sys

path = sys.argv[1]
since = sys.argv[2] if len(sys.argv) > 2 else None
lines = open(path).read().splitlines()
start = 0
for i, line in enumerate(lines):
    if line.startswith("# s3-vs-garage") and (since is None or since in line):
        start = i
rows = {}  # (label, phase) -> list of (rate, cpu)
rss = {}
for line in lines[start:]:
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) < 3 or not re.fullmatch(r"[\w.-]+", cells[0]) or cells[0] == "phase":
        continue
    label, phase = cells[0], cells[1]
    if phase.startswith("server peak RSS"):
        rss.setdefault(label, []).append(float(cells[2].split()[0]))
        continue
    if "FAILED" in line:
        print(f"warning: {label} {phase} failed: {line}", file=sys.stderr)
        continue
    if "verify FAIL" in line:
        print(f"warning: {label} {phase} did not verify", file=sys.stderr)
    mbs = float(re.search(r"([\d.]+) MB/s", line).group(1))
    objs = float(re.search(r"([\d.]+) obj/s", line).group(1))
    cpu = float(re.search(r"srv cpu ([\d.]+) s", line).group(1))
    small = "4KiB" in phase
    rows.setdefault((label, phase), []).append((objs if small else mbs, cpu, small))


def spread(values, fmt):
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


labels = [label for label in dict.fromkeys(label for label, _ in rows) if label != "garage"]
for label in labels:
    print(f"\n{label} against Garage:\n")
    print(f"| phase | {label} | Garage | ratio | server CPU, {label} / Garage | ratio | n |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    phases = []
    for _, phase in rows:
        if phase not in phases:
            phases.append(phase)
    for phase in phases:
        ours, theirs = rows.get((label, phase), []), rows.get(("garage", phase), [])
        if not ours or not theirs:
            continue
        small = ours[0][2]
        unit = "obj/s" if small else "MB/s"
        fmt = lambda v: f"{v:,.0f}"
        rate = statistics.median(v for v, _, _ in ours) / statistics.median(v for v, _, _ in theirs)
        # The large phases move exactly 1 GiB, so their CPU seconds are per GiB; the
        # small ones are quoted as whole-phase seconds.
        cu = [c for _, c, _ in ours]
        ct = [c for _, c, _ in theirs]
        cpu_unit = "s" if small else "s/GiB"
        cfmt = lambda v: f"{v:.2f}"
        cratio = statistics.median(cu) / statistics.median(ct) if statistics.median(ct) else float("nan")
        print(
            f"| {phase} | {spread([v for v, _, _ in ours], fmt)} {unit} | {spread([v for v, _, _ in theirs], fmt)} {unit} "
            f"| {rate:.2f}× | {spread(cu, cfmt)} / {spread(ct, cfmt)} {cpu_unit} | {cratio:.2f}× | {len(ours)}, {len(theirs)} |"
        )
    if rss.get(label) and rss.get("garage"):
        a, b = rss[label], rss["garage"]
        fmt = lambda v: f"{v:.0f}"
        print(
            f"| server peak RSS | {spread(a, fmt)} MiB | {spread(b, fmt)} MiB "
            f"| {statistics.median(a) / statistics.median(b):.2f}× | | | {len(a)}, {len(b)} |"
        )
