#!/usr/bin/env python3
"""insert.py: the "insertions" variant of a benchmark tree (mkdata.py has overwrites only).

  insert.py SRC DST PER_FILE MAX_LEN [SEED]

Copies every regular file of SRC (names not starting with ".") into DST with PER_FILE runs of
seeded random bytes inserted at seeded random offsets, each run 1..MAX_LEN bytes long. Bytes
after each insertion shift, which defeats fixed-block dedup: the case content-defined chunks
and rsync's rolling checksum are meant for. Prints and records in DST/.inserted the number of
bytes and places inserted; a second call with the same arguments is a no-op.
"""
import os
import random
import sys


def insert(src, dst, per_file, max_len, seed):
    want = f"insert {os.path.abspath(src)} {per_file} {max_len} {seed}\n"
    man = os.path.join(dst, ".manifest")
    record = os.path.join(dst, ".inserted")
    if os.path.exists(man) and open(man).read() == want and os.path.exists(record):
        print(open(record).read().strip())
        return
    os.makedirs(dst, exist_ok=True)
    rng = random.Random(seed)
    total = places = 0
    for name in sorted(os.listdir(src)):
        p = os.path.join(src, name)
        if name.startswith(".") or not os.path.isfile(p):
            continue
        data = open(p, "rb").read()
        # Offsets in the original file, sorted, so that each run lands where it was drawn.
        cuts = sorted(rng.randrange(0, len(data) + 1) for _ in range(per_file))
        out, last = [], 0
        for cut in cuts:
            run = rng.randbytes(rng.randint(1, max_len))
            out += [data[last:cut], run]
            total += len(run)
            places += 1
            last = cut
        out.append(data[last:])
        with open(os.path.join(dst, name), "wb") as f:
            f.write(b"".join(out))
    summary = f"inserted {total} bytes at {places} places"
    open(record, "w").write(summary + "\n")
    open(man, "w").write(want)
    print(summary)


if __name__ == "__main__":
    a = sys.argv[1:]
    def usage(message):
        # Exit code 2 for bad input, like the other benchmark tools.
        print(f"insert.py: {message}\n{__doc__}", file=sys.stderr)
        sys.exit(2)

    if len(a) not in (4, 5):
        usage("expected SRC DST PER_FILE MAX_LEN [SEED]")
    try:
        per_file, max_len = int(a[2]), int(a[3])
        seed = int(a[4]) if len(a) > 4 else 3
    except ValueError:
        usage("PER_FILE, MAX_LEN and SEED must be integers")
    if per_file < 0 or max_len < 1:
        usage("PER_FILE must be >= 0 and MAX_LEN >= 1")
    if not os.path.isdir(a[0]):
        usage(f"{a[0]}: not a directory (make the tree first with mkdata.py tree)")
    insert(a[0], a[1], per_file, max_len, seed)
