"""How `mpinn predict`'s ranks put their rows into one output (docs/performance.md, "Predictions
in rounds"): three ways of writing the same outputs, timed under the same mpiexec.

    python bench/predict_output.py [--ranks 1,2] [--rows 4000000] [--classes 3] [--round 65536] [--repeat 3]
                                   [--dir DIR]

which runs itself under `mpiexec -n R` for each R of --ranks.

Each rank holds the outputs of its contiguous block of rows (a proba column per class, float64,
and an int64 label), made up here, and writes them, ``--round`` rows at a time:

- offsets (what mpinn does): rank 0 creates the file with contiguous datasets allocated at once
  (train/predict.py's ``_allocated``) and broadcasts their offsets; every rank writes its rows'
  bytes at their places (os.pwrite), fsyncs; one file.
- virtual: every rank writes its rows into its own part file with h5py, fsyncs; rank 0 writes an
  HDF5 virtual dataset file that maps the parts in row order; 1 + N files.
- gather: one Gatherv per round brings the round's rows to rank 0, which writes them with h5py
  (mpinn before: every row through rank 0).

Prints one row per way: seconds (the slowest rank, from a barrier to a barrier after the last
fsync; the best of --repeat runs, the ways alternated), the files written, and whether a reader
of the result sees the same arrays.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import h5py
import numpy as np

from mpinn.data.partition import even_bounds
from mpinn.train.predict import _allocated, _pwrite_all

if "--worker" in sys.argv:  # the launcher itself starts no MPI
    from mpi4py import MPI

    COMM = MPI.COMM_WORLD


def outputs(lo, hi, classes):
    rows = np.arange(lo, hi, dtype=np.float64)[:, None]
    proba = np.cos(rows * np.arange(1, classes + 1))  # any values a reader can check
    return proba, (np.arange(lo, hi) % classes).astype(np.int64)


def rounds(first, last, per_round):
    for lo in range(first, last, per_round):
        yield lo, min(lo + per_round, last)


def by_offsets(path, n, classes, first, last, per_round):
    layout = None
    if COMM.rank == 0:
        with h5py.File(path, "w") as f:
            layout = {"proba": _allocated(f, "proba", (n, classes), np.dtype(np.float64)),
                      "y_pred": _allocated(f, "y_pred", (n,), np.dtype(np.int64))}
    layout = COMM.bcast(layout)
    fd = os.open(path, os.O_WRONLY)
    for lo, hi in rounds(first, last, per_round):
        proba, labels = outputs(lo, hi, classes)
        _pwrite_all(fd, proba, layout["proba"] + lo * 8 * classes)
        _pwrite_all(fd, labels, layout["y_pred"] + lo * 8)
    os.fsync(fd)
    os.close(fd)
    return 1


def by_virtual_dataset(path, n, classes, first, last, per_round, bounds):
    part = f"{path}.part{COMM.rank}"
    with h5py.File(part, "w") as f:
        p = f.create_dataset("proba", (last - first, classes), np.float64)
        y = f.create_dataset("y_pred", (last - first,), np.int64)
        for lo, hi in rounds(first, last, per_round):
            p[lo - first:hi - first], y[lo - first:hi - first] = outputs(lo, hi, classes)
    _fsync(part)
    COMM.Barrier()
    if COMM.rank == 0:
        with h5py.File(path, "w") as f:
            for name, shape in (("proba", (n, classes)), ("y_pred", (n,))):
                layout = h5py.VirtualLayout(shape=shape, dtype=np.float64 if name == "proba" else np.int64)
                for r in range(COMM.size):
                    a, b = bounds[r], bounds[r + 1]
                    layout[a:b] = h5py.VirtualSource(os.path.basename(f"{path}.part{r}"), name,
                                                     shape=(b - a,) + shape[1:])
                f.create_virtual_dataset(name, layout)
        _fsync(path)
    return 1 + COMM.size


def by_gather(path, n, classes, first, last, per_round):
    f = h5py.File(path, "w") if COMM.rank == 0 else None
    if f is not None:
        p = f.create_dataset("proba", (n, classes), np.float64)
        y = f.create_dataset("y_pred", (n,), np.int64)
    size = COMM.size
    for lo in range(0, n, per_round * size):  # a round: per_round rows per rank, as mpinn's old rounds
        hi = min(lo + per_round * size, n)
        b = even_bounds(hi - lo, size, lo)
        proba, labels = outputs(b[COMM.rank], b[COMM.rank + 1], classes)
        counts = np.diff(b)
        got_p = np.empty((hi - lo, classes)) if f is not None else None
        got_y = np.empty(hi - lo, np.int64) if f is not None else None
        COMM.Gatherv(proba, [got_p, counts * classes] if f is not None else None, root=0)
        COMM.Gatherv(labels, [got_y, counts] if f is not None else None, root=0)
        if f is not None:
            p[lo:hi], y[lo:hi] = got_p, got_y
    if f is not None:
        f.close()
        _fsync(path)
    return 1


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def same_as_expected(path, n, classes):
    with h5py.File(path, "r") as f:  # a virtual dataset's parts are found beside it
        proba, labels = f["proba"][()], f["y_pred"][()]
    want_p, want_y = outputs(0, n, classes)
    return bool(np.array_equal(proba, want_p) and np.array_equal(labels, want_y))


def launch(args):
    """Run this script under mpiexec -n R for each R of --ranks, passing the other arguments."""
    import subprocess

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import bench_env

    rest = [a for a in sys.argv[1:] if a != "--ranks" and a != args.ranks]
    for ranks in (int(r) for r in args.ranks.split(",")):
        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        cmd = [mpiexec, "-n", str(ranks), sys.executable, os.path.abspath(__file__), "--worker", *rest]
        subprocess.run(cmd, check=True, env=bench_env(), timeout=3600)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", default="1,2", help="rank counts to launch, each under mpiexec (default 1,2)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rows", type=int, default=4_000_000)
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--round", type=int, default=65536, help="rows per rank per round")
    p.add_argument("--repeat", type=int, default=3, help="runs of each way; the best is shown")
    p.add_argument("--dir", help="where to write (default: a temporary directory beside this script's out/)")
    args = p.parse_args()
    if not args.worker:
        return launch(args)
    work = None
    if COMM.rank == 0:
        base = args.dir or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "out", "bench")
        os.makedirs(base, exist_ok=True)
        work = tempfile.mkdtemp(prefix="predict-output-", dir=base)
    work = COMM.bcast(work)
    n, bounds = args.rows, even_bounds(args.rows, COMM.size)
    first, last = bounds[COMM.rank], bounds[COMM.rank + 1]
    ways = {"offsets": lambda path: by_offsets(path, n, args.classes, first, last, args.round),
            "virtual": lambda path: by_virtual_dataset(path, n, args.classes, first, last, args.round, bounds),
            "gather": lambda path: by_gather(path, n, args.classes, first, last, args.round)}
    if COMM.rank == 0:
        print(f"{n:,} rows, {args.classes} float64 probabilities + an int64 label a row, {COMM.size} rank(s), "
              f"{args.round:,} rows per rank per round")
        print("| way | seconds | files | reader sees the same arrays |")
        print("|---|---|---|---|")
    best, files = {}, {}
    for _ in range(args.repeat):  # the ways alternated, so a burst of load hits each alike
        for name, write in ways.items():
            path = os.path.join(work, f"{name}.h5")
            for old in [path] + [f"{path}.part{r}" for r in range(COMM.size)]:
                if COMM.rank == 0 and os.path.exists(old):
                    os.remove(old)
            COMM.Barrier()
            start = time.perf_counter()
            files[name] = write(path)
            seconds = COMM.reduce(time.perf_counter() - start, op=MPI.MAX)
            COMM.Barrier()
            if COMM.rank == 0:
                best[name] = min(seconds, best.get(name, seconds))
    if COMM.rank == 0:
        for name in ways:
            same = same_as_expected(os.path.join(work, f"{name}.h5"), n, args.classes)
            print(f"| {name} | {best[name]:.2f} | {files[name]} | {'yes' if same else 'NO'} |", flush=True)
    COMM.Barrier()
    if COMM.rank == 0:
        shutil.rmtree(work)


if __name__ == "__main__":
    sys.exit(main())
