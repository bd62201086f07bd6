"""Rank 0's peak RSS of `mpinn predict` on 10x more rows (docs/performance.md, "Predictions in
rounds").

Writes two synthetic files (by default 10^5 and 10^6 rows of 20 float64 features, 3 classes)
and a checkpoint trained for one epoch on the smaller one, then runs, for each file,

    mpiexec -n RANKS python bench/predict_memory.py --worker --model CK --data FILE --out OUT

whose ranks run `mpinn predict` in-process (mpinn.cli.app.main) and report their peak RSS
(getrusage). Prints one line per file and the ratio of rank 0's peaks; writes nothing to the
repository but the files under --workdir (default out/bench/predict).

    python bench/predict_memory.py [--rows 100000,1000000] [--ranks 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, bench_env, emit, parse, peak_rss_bytes  # noqa: E402

BIN = Path(sys.executable).parent


def worker(args):
    from mpi4py import MPI

    from mpinn.cli.app import main

    start = time.perf_counter()
    code = main(["predict", "--model", args.model, "--data", args.data, "--out", args.out])
    seconds = time.perf_counter() - start
    peaks = MPI.COMM_WORLD.gather(peak_rss_bytes(), root=0)  # (a benchmark, not mpinn: pickle is fine)
    if MPI.COMM_WORLD.Get_rank() == 0:
        emit({"code": code, "seconds": seconds, "peak_rss": peaks})


def mpinn(*args, ranks=1):
    cmd = ([str(BIN / "mpiexec"), "-n", str(ranks)] if ranks > 1 else []) + [str(BIN / "mpinn"), *map(str, args)]
    subprocess.run(cmd, check=True, env=bench_env(), stdout=subprocess.DEVNULL, timeout=3600)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="100000,1000000", help="rows of each file (default 100000,1000000)")
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--workdir", default=str(ROOT / "out" / "bench" / "predict"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = [int(r) for r in args.rows.split(",")]
    files = {}
    for n in rows:
        files[n] = work / f"x{n}.h5"
        if not files[n].exists():
            mpinn("data", "synthetic", files[n], "--samples", n, "--features", args.features, "--classes", 3)
    ck = work / "ck"
    if not (ck / "latest").exists():
        mpinn("train", "--data", files[rows[0]], "--hidden", 32, "--epochs", 1, "--quiet", "--checkpoint", ck)
    print(f"mpinn predict under mpiexec -n {args.ranks}, {args.features} float64 features, 3 classes")
    print("| rows | rank 0 peak RSS MB | other ranks' peak RSS MB | seconds |")
    print("|---|---|---|---|")
    first = None
    for n in rows:
        out = work / f"pred{n}.h5"
        cmd = [str(BIN / "mpiexec"), "-n", str(args.ranks), sys.executable, __file__, "--worker",
               "--model", str(ck), "--data", str(files[n]), "--out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=bench_env(), timeout=3600)
        result = parse(proc.stdout)
        if proc.returncode != 0 or result is None or result["code"] != 0:
            sys.exit(f"worker failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        os.remove(out)
        mb = [r / 2**20 for r in result["peak_rss"]]
        first = first or mb[0]
        others = ", ".join(f"{m:.1f}" for m in mb[1:])
        print(f"| {n:,} | {mb[0]:.1f} | {others} | {result['seconds']:.2f} |")
        last = mb[0]
    print(f"rank 0's peak RSS, {rows[-1]:,} rows / {rows[0]:,} rows: {last / first:.3f}")


if __name__ == "__main__":
    main()
