#!/usr/bin/env python3
"""summarize.py RAW.tsv INSERTED_BYTES: the Markdown table of a WAN benchmark run.

RAW.tsv rows (written by run.sh): profile, step, run, seconds, wire bytes A->B, wire bytes
B->A (linkem's forwarded Ethernet frame bytes), the tool's own byte count (rsync "Total bytes
sent"), the step's figure (Mbit/s for iperf3, MB/s of the 1 GiB tree, files/s), verified.
Steps run several times are summarized by their median (and min-max); "n/a" rows (the
clusster transfer before it exists) stay n/a.
"""
import statistics
import sys

STEPS = [
    ("iperf3-tcp-1", "iperf3 TCP, 1 stream", "Mbit/s"),
    ("iperf3-tcp-8", "iperf3 TCP, 8 streams", "Mbit/s"),
    ("rsync-cold", "rsync cold, 1 GiB (64 × 16 MiB)", "MB/s"),
    ("rsync-overwrite", "rsync after 1 % overwrite (256 places)", ""),
    ("rsync-resend", "rsync re-send, unchanged", ""),
    ("rsync-insert", "rsync after insertions", ""),
    ("rsync-small", "rsync 100,000 × 10 KiB files", "files/s"),
    ("clusster-cold", "clusster cold", ""),
    ("clusster-overwrite", "clusster after 1 % overwrite", ""),
    ("clusster-resend", "clusster re-send", ""),
    ("clusster-insert", "clusster after insertions", ""),
    ("clusster-small", "clusster 100,000 small files", ""),
]


def num(s):
    return float(s) if s not in ("", "n/a") else None


def spread(values, fmt):
    """median, with the range when there are several runs"""
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}–{fmt(max(values))})"


def mb(b):
    return f"{b / 1e6:,.1f} MB" if b >= 1e5 else f"{b / 1e3:,.1f} kB"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    raw, inserted = sys.argv[1], int(sys.argv[2])
    rows = {}
    profiles = []
    for line in open(raw):
        f = line.rstrip("\n").split("\t")
        if len(f) != 9:
            sys.exit(f"{raw}: malformed row {line!r}")
        profile, step = f[0], f[1]
        if profile not in profiles:
            profiles.append(profile)
        rows.setdefault((profile, step), []).append(f)
    print("| profile | step | runs | time, s | figure | wire A→B | wire B→A | tool's count | verified |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for profile in profiles:
        for step, title, unit in STEPS:
            runs = rows.get((profile, step))
            if not runs:
                continue
            secs = [num(r[3]) for r in runs]
            ab = [num(r[4]) for r in runs]
            ba = [num(r[5]) for r in runs]
            tool = [num(r[6]) for r in runs]
            value = [num(r[7]) for r in runs]
            figure = spread(value, lambda v: f"{v:,.1f} {unit}".strip()) if unit else ""
            if step in ("rsync-insert", "clusster-insert") and ab[0] is not None:
                figure = f"wire {statistics.median(ab) / inserted:.2f}× the {inserted:,} B inserted"
            if step.endswith("-resend") and ab[0] is not None:
                figure = f"wire {statistics.median(ab) / (1 << 30) * 100:.3f} % of 1 GiB"
            if all(r[8] == "n/a" for r in runs) and step.startswith("clusster"):
                print(f"| {profile} | {title} | – | n/a | n/a | n/a | n/a | n/a | n/a |")
                continue
            print(
                f"| {profile} | {title} | {len(runs)} | {spread(secs, lambda v: f'{v:.2f}')} | {figure} | "
                f"{spread(ab, mb)} | {spread(ba, mb)} | {spread(tool, mb)} | "
                f"{', '.join(sorted(set(r[8] for r in runs)))} |"
            )


if __name__ == "__main__":
    main()
