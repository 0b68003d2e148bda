#!/usr/bin/env python3
"""summarize.py RAW.tsv INSERTED_BYTES: the Markdown table of a WAN benchmark run.
summarize.py --proc PROC.tsv: the clusster pushes' CPU time and peak RSS (clusster.sh's rows:
profile, step, run, wall s, the status's elapsed_secs, CPU s of daemon a, of daemon b, of linkem,
VmHWM MiB of a, of b, bytes wanted, chunks wanted/offered, chunks sent as deltas, UDP datagrams
B's kernel dropped for a full socket receive buffer).

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
    ("clusster-cold", "clusster cold, 1 GiB", "MB/s"),
    ("clusster-overwrite", "clusster after 1 % overwrite", ""),
    ("clusster-resend", "clusster re-send", ""),
    ("clusster-revert", "clusster back to orig (not a target)", ""),
    ("clusster-insert", "clusster after insertions", ""),
    ("clusster-small", "clusster 100,000 small files", "files/s"),
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


def proc(path):
    rows = {}
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        if len(f) != 14:
            sys.exit(f"{path}: malformed row {line!r}")
        rows.setdefault((f[0], f[1]), []).append(f)
    print(
        "| profile | step | runs | wall s | status elapsed s | CPU s daemon a | CPU s daemon b | CPU s linkem |"
        " peak RSS a, MiB | peak RSS b, MiB | bytes wanted | chunks wanted/offered | delta chunks | UDP rcvbuf drops at b |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (profile, step), runs in rows.items():
        cells = [spread([num(r[i]) for r in runs], lambda v: f"{v:.2f}") for i in (3, 4, 5, 6, 7)]
        rss = [spread([num(r[i]) for r in runs], lambda v: f"{v:.0f}") for i in (8, 9)]
        wanted = spread([num(r[10]) for r in runs], mb)
        chunks = ", ".join(sorted(set(r[11] for r in runs)))
        delta = ", ".join(sorted(set(r[12] for r in runs)))
        drops = spread([num(r[13]) for r in runs], lambda v: f"{v:,.0f}")
        print(
            f"| {profile} | {step} | {len(runs)} | {' | '.join(cells)} | {' | '.join(rss)} | {wanted} | {chunks} |"
            f" {delta} | {drops} |"
        )


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--proc":
        return proc(sys.argv[2])
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
