"""Dynamic load balancing with one slow rank: samples/s of --balance dynamic vs the static shard.

    .venv/bin/python bench/balance.py [--ranks 2] [--slow 1:3] [--rows 20000] [--epochs 6] [--pairs 5]

Writes a synthetic file, then trains it twice under `mpiexec -n RANKS` with MPINN_SLOW=SLOW
(rank 1 sleeps twice its compute time after each step's compute: a node 3x slower): once with
the static block shard, once with --balance dynamic. Prints each run's samples/s (mean over the
epochs after the first), the ratio, the shares per epoch, the seconds spent moving rows, and
whether the two runs trained the same weights. Then measures the two ways of moving rows to a
new owner for the shares the dynamic run settled on: re-reading them from the HDF5 file (what
mpinn does) and sending them from the old owner (an MPI Sendrecv of the same bytes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import ROOT, bench_env  # noqa: E402

BIN = Path(sys.executable).parent


def train(data, out, ranks, slow, extra, epochs):
    metrics = out / f"m{len(list(out.iterdir()))}.jsonl"
    cmd = [str(BIN / "mpiexec"), "-n", str(ranks), str(BIN / "mpinn"), "train", "--data", str(data), "--hidden", "256",
           "--batch-size", "512", "--epochs", str(epochs), "--seed", "1", "--n-iter-no-change", "1000", "--quiet",
           "--json", "--metrics", str(metrics), "--checkpoint", str(metrics.with_suffix(".ck")), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=bench_env(extra={"MPINN_SLOW": slow}))
    if proc.returncode:
        raise SystemExit(proc.stdout + proc.stderr)
    records = [r for r in map(json.loads, open(metrics)) if "epoch" in r]  # not the config record
    rates = [r["samples_per_second"] for r in records[1:]]
    return {"samples_per_second": sum(rates) / len(rates), "records": records, "checkpoint": metrics.with_suffix(".ck")}


def move_worker(data, shares):
    """Under mpiexec -n 2: seconds to give rank 0 the rows it gains under ``shares``, by
    re-reading them from the file (rank 0) and by receiving them from rank 1 (Sendrecv)."""
    import h5py
    import numpy as np
    from mpi4py import MPI

    from mpinn.data import hdf5 as datamod
    from mpinn.data.partition import make_shard

    comm = MPI.COMM_WORLD
    info = datamod.inspect(data)
    old = make_shard(info.n_rows, 0, 2, "block")
    new = make_shard(info.n_rows, 0, 2, "block", shares=shares)
    moved = slice(old.stop, new.stop)  # the rows rank 0 gains
    count = moved.stop - moved.start
    best = {"reread": 1e9, "exchange": 1e9, "reread_shard": 1e9}
    with h5py.File(data, "r") as f:
        rows = np.asarray(f["X"][moved], dtype=np.float64) if comm.rank == 1 else None
        buf = np.empty((count, info.n_features))
        for _ in range(5):
            comm.Barrier()
            t = time.perf_counter()
            if comm.rank == 0:
                f["X"].read_direct(buf, source_sel=moved)
            best["reread"] = min(best["reread"], time.perf_counter() - t)
            comm.Barrier()
            t = time.perf_counter()
            if comm.rank == 0:
                comm.Recv(buf, source=1)
            else:
                comm.Send(rows, dest=0)
            best["exchange"] = min(best["exchange"], time.perf_counter() - t)
            comm.Barrier()
            t = time.perf_counter()
            if comm.rank == 0:  # what mpinn does: the whole new shard, X and y
                datamod.read_shard(f, info, new, np.float64)
            best["reread_shard"] = min(best["reread_shard"], time.perf_counter() - t)
    if comm.rank == 0:
        print(json.dumps({"rows_moved": count, "bytes": count * info.n_features * 8, **best}))


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--slow", default="1:3")
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--features", type=int, default=64)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--pairs", type=int, default=5,
                   help="static/dynamic runs, alternated; the ratio is the median over pairs (a shared machine)")
    p.add_argument("--move-worker", nargs=2, metavar=("DATA", "SHARES"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.move_worker:
        return move_worker(a.move_worker[0], json.loads(a.move_worker[1]))
    out = Path(tempfile.mkdtemp(prefix="mpinn-balance-"))
    data = out / "syn.h5"
    subprocess.run([str(BIN / "mpinn"), "data", "synthetic", str(data), "--samples", str(a.rows), "--features",
                    str(a.features), "--classes", "10"], check=True, capture_output=True, env=bench_env())
    runs_dir = out / "runs"
    runs_dir.mkdir()
    ratios = []
    for _ in range(a.pairs):  # alternated, so a burst of load hits both kinds of run alike
        static = train(data, runs_dir, a.ranks, a.slow, [], a.epochs)
        dynamic = train(data, runs_dir, a.ranks, a.slow, ["--balance", "dynamic"], a.epochs)
        ratios.append(dynamic["samples_per_second"] / static["samples_per_second"])
    import numpy as np

    import mpinn

    ws, wd = mpinn.load(static["checkpoint"]), mpinn.load(dynamic["checkpoint"])
    diff = max(float(np.max(np.abs(x - y)) / np.max(np.abs(y)))
               for x, y in zip(wd.coefs_ + wd.intercepts_, ws.coefs_ + ws.intercepts_))
    print(f"{a.ranks} ranks, MPINN_SLOW={a.slow}, {a.rows} rows x {a.features} features, hidden 256, batch 512, "
          f"{a.epochs} epochs (samples/s: mean of epochs 2..{a.epochs})")
    print(f"| run | samples/s | shares after each epoch | seconds moving rows |")
    print("|---|---:|---|---:|")
    for name, r in (("static block", static), ("balance dynamic", dynamic)):
        shares = " ".join("/".join(f"{s:.2f}" for s in rec["shares"]) for rec in r["records"])
        moves = sum(rec.get("move_seconds", 0.0) for rec in r["records"])
        print(f"| {name} | {r['samples_per_second']:,.0f} | {shares} | {moves:.3f} |")
    print(f"dynamic / static samples/s per pair: {' '.join(f'{r:.2f}x' for r in ratios)}; "
          f"median {float(np.median(ratios)):.2f}x (the table shows the last pair); "
          f"weights differ by {diff:.1e} (relative)")
    if a.ranks == 2:
        shares = dynamic["records"][-1]["shares"]
        proc = subprocess.run([str(BIN / "mpiexec"), "-n", "2", sys.executable, __file__, "--move-worker", str(data),
                               json.dumps(shares)], capture_output=True, text=True, timeout=300, env=bench_env(),
                              cwd=ROOT)
        if proc.returncode:
            raise SystemExit(proc.stdout + proc.stderr)
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"moving {m['rows_moved']} rows ({m['bytes'] / 1e6:.1f} MB) to rank 0 for shares "
              f"{'/'.join(f'{s:.2f}' for s in shares)}: re-read from HDF5 {m['reread'] * 1e3:.2f} ms, "
              f"Send/Recv from the old owner {m['exchange'] * 1e3:.2f} ms; re-reading rank 0's whole new shard "
              f"(X and y, as mpinn does) {m['reread_shard'] * 1e3:.2f} ms (best of 5)")


if __name__ == "__main__":
    main()
