"""Per-rank peak RSS and time of `mpinn eval --rows test` and `mpinn predict` at 1 and 2 ranks
(docs/performance.md, "Memory per rank of eval and predict").

Writes one synthetic file (by default 10^6 rows of 8 float32 features, 3 classes) and a
checkpoint trained for one epoch on it with --test-fraction 0.5 --permutation keyed, then runs
each command under

    mpiexec -n RANKS python bench/eval_predict_memory.py --worker COMMAND ...

whose ranks run the command in-process (mpinn.cli.app.main) and report their peak RSS at
start-up (mpinn, numpy, h5py and MPI loaded) and at the end (getrusage), their CPU seconds, and
the command's wall seconds. Prints one row per rank and the ratios of 2 ranks to 1: the memory above start-up of
the larger rank, and the time. Writes nothing but the files under --workdir (default
out/bench/evalpredict), which it deletes at the end unless --keep.

    python bench/eval_predict_memory.py [--rows 1000000] [--features 8] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, bench_env, emit, parse, peak_rss_bytes  # noqa: E402

BIN = Path(sys.executable).parent
RANKS = (1, 2)


def worker(argv):
    import h5py  # noqa: F401 - loaded before start-up is measured, as the command loads it
    import numpy  # noqa: F401
    from mpi4py import MPI

    import mpinn
    from mpinn.cli.app import main

    comm = MPI.COMM_WORLD
    comm.Barrier()
    start_rss = peak_rss_bytes()
    start, start_cpu = time.perf_counter(), time.process_time()
    code = main(argv)
    seconds = time.perf_counter() - start
    # CPU seconds (this process, all threads): on a shared machine steadier than the wall time.
    rows = comm.gather([start_rss, peak_rss_bytes(), time.process_time() - start_cpu], root=0)  # (pickle: a bench)
    if comm.Get_rank() == 0:
        emit({"code": code, "seconds": seconds, "rss": rows, "mpinn": mpinn.__file__})


def mpinn_cli(*args):
    subprocess.run([str(BIN / "mpinn"), *map(str, args)], check=True, env=bench_env(),
                   stdout=subprocess.DEVNULL, timeout=3600)


def measure(ranks, argv):
    cmd = ([str(BIN / "mpiexec"), "-n", str(ranks)] if ranks > 1 else []) + \
        [sys.executable, __file__, "--worker", *map(str, argv)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=bench_env(), timeout=3600)
    result = parse(proc.stdout)
    if proc.returncode != 0 or result is None or result["code"] != 0:
        sys.exit(f"worker failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return result


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--features", type=int, default=8)
    p.add_argument("--workdir", default=str(ROOT / "out" / "bench" / "evalpredict"))
    p.add_argument("--keep", action="store_true", help="keep the data file and checkpoint")
    args = p.parse_args()

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    data, ck = work / f"x{args.rows}-{args.features}.h5", work / f"ck{args.rows}-{args.features}"
    if not data.exists():
        mpinn_cli("data", "synthetic", data, "--samples", args.rows, "--features", args.features, "--classes", 3,
                  "--dtype", "float32")
    if not (ck / "latest").exists():
        mpinn_cli("train", "--data", data, "--hidden", 16, "--epochs", 1, "--batch-size", 4096, "--dtype", "float32",
                  "--test-fraction", 0.5, "--permutation", "keyed", "--quiet", "--checkpoint", ck)
    commands = {"eval --rows test": ["eval", "--model", ck, "--data", data, "--rows", "test", "--json"],
                "predict": ["predict", "--model", ck, "--data", data, "--out", work / "pred.h5"]}
    print(f"{args.rows:,} rows, {args.features} float32 features, 3 classes, test fraction 0.5 (keyed)")
    print("| command | ranks | rank | start-up MB | peak MB | above start-up MB | CPU s | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    above, seconds = {}, {}
    for name, argv in commands.items():
        for ranks in RANKS:
            result = measure(ranks, argv)
            (work / "pred.h5").unlink(missing_ok=True)
            for rank, (start, peak, cpu) in enumerate(result["rss"]):
                print(f"| {name} | {ranks} | {rank} | {start / 2**20:.1f} | {peak / 2**20:.1f} | "
                      f"{(peak - start) / 2**20:.1f} | {cpu:.2f} | {result['seconds']:.2f} |")
            above[name, ranks] = max(peak - start for start, peak, _ in result["rss"])
            seconds[name, ranks] = result["seconds"]
    for name in commands:
        print(f"{name}: largest rank's memory above start-up, 2 ranks / 1 rank: "
              f"{above[name, 2] / max(above[name, 1], 1):.2f}; time 1 rank / 2 ranks: "
              f"{seconds[name, 1] / seconds[name, 2]:.2f}x")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
