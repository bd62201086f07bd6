"""Allreduce(SUM, IN_PLACE) latency and bandwidth of whichever MPI mpi4py is linked to.

Run under the mpiexec of the runtime to measure, e.g.
    .venv/bin/mpiexec -n 2 .venv/bin/python bench/allreduce.py
    /tmp/venv-ompi/bin/mpiexec --oversubscribe -n 2 /tmp/venv-ompi/bin/python bench/allreduce.py
Rank 0 prints one BENCH_JSON line: the library, and per message size the median and best time of
one float32 Allreduce (barrier before each timed batch) and the implied algorithm bandwidth
(bytes / time). Also times Iallreduce+Wait of the same buffer, for the overlap question.
--budget sets the seconds of calls per size and operation (default 0.4).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from mpi4py import MPI

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import emit  # noqa: E402

# 4 B .. 16 MiB, plus the two gradient buffers of the configs (f32, +3 for loss/weight/flag).
BIG = 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10 + 3
SMALL = 64 * 128 + 128 + 128 * 10 + 10 + 3
SIZES = sorted({1, 16, 256, 4096, 65536, 1 << 20, 1 << 22, BIG, SMALL})


def time_op(comm, buf, op, budget=0.4, max_iter=2000):
    """(median, best) seconds per call over batches, after warm-up."""
    for _ in range(5):
        op(buf)
    comm.Barrier()
    samples = []
    t_end = time.perf_counter() + budget
    while len(samples) < max_iter:
        comm.Barrier()
        t0 = time.perf_counter()
        op(buf)
        samples.append(time.perf_counter() - t0)
        # Every rank must agree when to stop, or the collective counts diverge.
        stop = np.array([time.perf_counter() > t_end], dtype=np.int8)
        comm.Allreduce(MPI.IN_PLACE, stop, op=MPI.MAX)
        if stop[0]:
            break
    s = np.array(samples)
    # The slowest rank defines the collective's time.
    med = comm.allreduce(float(np.median(s)), op=MPI.MAX)
    best = comm.allreduce(float(s.min()), op=MPI.MAX)
    return med, best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=0.4, help="seconds of calls per size and operation (default 0.4)")
    a = p.parse_args(argv)
    comm = MPI.COMM_WORLD
    rows = []
    for n in SIZES:
        buf = np.ones(n, dtype=np.float32)
        med, best = time_op(comm, buf, lambda b: comm.Allreduce(MPI.IN_PLACE, b, op=MPI.SUM), a.budget)
        imed, _ = time_op(comm, buf, lambda b: comm.Iallreduce(MPI.IN_PLACE, b, op=MPI.SUM).Wait(), a.budget)
        rows.append({"floats": n, "bytes": 4 * n, "median_us": med * 1e6, "best_us": best * 1e6,
                     "GBps": 4 * n / med / 1e9, "iallreduce_wait_median_us": imed * 1e6,
                     "label": "big gradient" if n == BIG else "small gradient" if n == SMALL else ""})
    if comm.rank == 0:
        emit({"library": MPI.Get_library_version().strip().splitlines()[0], "ranks": comm.size, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
