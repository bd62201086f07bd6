"""Per-rank memory and time of the train/test split and one epoch's batch schedule.

    python bench/schedule_memory.py --ranks 1000 --rank 0

The split and the schedule are pure functions of (seed, n, shard), so rank 0 of a 1,000-rank
job is simulated in this one process: for n = 10^6 ... 10^9 rows it builds rank 0's block
shard, splits off --test-fraction of the rows and runs one epoch of the global shuffle (every
step's local rows, batch = --batch-per-rank x ranks). "peak MB" is tracemalloc's peak over
split + epoch (numpy reports its buffers to tracemalloc), in a run apart from the timed one.
The sklearn permutation is measured up to --sklearn-max rows: it holds all n rows on every rank.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from mpinn.data.partition import make_shard  # noqa: E402
from mpinn.data.schedule import BatchSchedule, split_rows  # noqa: E402


def one_run(n, ranks, rank, permutation, fraction, batch):
    """(split seconds, epoch seconds, steps, rank's training rows) of one split + epoch."""
    t0 = time.perf_counter()
    shard = make_shard(n, rank, ranks)
    train, _ = split_rows(n, fraction, 0, shard, permutation)
    t1 = time.perf_counter()
    sched = BatchSchedule(train, batch, "global", np.random.RandomState(0), shard, permutation=permutation)
    steps = rows = 0
    for part in sched.epoch(0):
        steps += 1
        rows += len(part)
    t2 = time.perf_counter()
    assert rows == train.local.size
    return t1 - t0, t2 - t1, steps, rows


def peak_bytes(*args):
    tracemalloc.start()
    try:
        one_run(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=1000)
    ap.add_argument("--rank", type=int, default=0)
    ap.add_argument("--sizes", default="1e6,1e7,1e8,1e9", help="row counts n, comma-separated")
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--batch-per-rank", type=int, default=200)
    ap.add_argument("--sklearn-max", type=float, default=1e7, help="measure the sklearn permutation up to this n")
    args = ap.parse_args(argv)
    batch = args.batch_per_rank * args.ranks
    print(f"rank {args.rank} of {args.ranks}, block shard, --test-fraction {args.test_fraction:g}, "
          f"global batch {batch}; one epoch of --shuffle global")
    print("| n | permutation | rows on the rank | steps | peak MB | split s | epoch s |")
    print("|---|---|---|---|---|---|---|")
    for n in (int(float(s)) for s in args.sizes.split(",")):
        for permutation in ("sklearn", "keyed"):
            if permutation == "sklearn" and n > args.sklearn_max:
                continue
            run = (n, args.ranks, args.rank, permutation, args.test_fraction, batch)
            split_s, epoch_s, steps, rows = one_run(*run)
            peak = peak_bytes(*run)
            print(f"| {n:.0e} | {permutation} | {rows:,} | {steps:,} | {peak / 2**20:.1f} | {split_s:.2f} | "
                  f"{epoch_s:.2f} |", flush=True)


if __name__ == "__main__":
    main()
