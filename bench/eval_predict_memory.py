"""Per-rank peak RSS and time of `mpinn eval --rows test` and `mpinn predict` at 1 and 2 ranks
(docs/performance.md, "Memory per rank of eval and predict").

Writes one synthetic file (by default 10^6 rows of 8 float32 features, 3 classes) and a
checkpoint trained for one epoch on it with --test-fraction 0.5 --permutation keyed, then runs
each command under

    mpiexec -n RANKS python bench/eval_predict_memory.py --worker COMMAND ...

whose ranks run the command in-process (mpinn.cli.app.main) and report their peak RSS at
start-up (mpinn, numpy, h5py and MPI loaded) and at the end (getrusage), their CPU seconds, and
the command's wall seconds (from after the barrier that follows start-up to the command's end:
the start-up at each N is not in them). With --repeat R each command runs R times at each rank
count, 1 and 2 ranks alternated, and the fastest run is shown. Prints one row per rank and the
ratios of 2 ranks to 1: the memory above start-up of the larger rank, and the time; and the load
average before and after.

With --compute, predict's arithmetic alone (the checkpoint's model scoring the same number of
rows from memory, the outputs computed but not written: compute_worker) runs at 1 and 2 ranks
beside each predict run: the speed-up this machine gives two processes' arithmetic at that time.

With --before COMMIT the same commands run once at 1 and 2 ranks on that commit's code (`git
archive` under --workdir, put first on PYTHONPATH), and the outputs are compared: predict's
datasets byte for byte, eval's metrics (largest absolute difference).

Writes nothing but the files under --workdir (default out/bench/evalpredict), which it deletes
at the end unless --keep.

    python bench/eval_predict_memory.py [--rows 1000000] [--features 8] [--repeat 1] [--before COMMIT]
                                        [--compute] [--profile] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
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
    try:
        from mpinn.cli.app import main
    except ImportError:  # the code before mpinn/cli/ was a package (--before)
        from mpinn.cli import main

    comm = MPI.COMM_WORLD
    profile = None
    if os.environ.get("BENCH_PROFILE"):
        import cProfile

        profile = cProfile.Profile()
    comm.Barrier()
    start_rss = peak_rss_bytes()
    start, start_cpu = time.perf_counter(), time.process_time()
    if profile is not None:
        profile.enable()
    code = main(argv)
    seconds = time.perf_counter() - start
    if profile is not None:
        profile.disable()
    # CPU seconds (this process, all threads): on a shared machine steadier than the wall time.
    rows = comm.gather([start_rss, peak_rss_bytes(), time.process_time() - start_cpu], root=0)  # (pickle: a bench)
    parts = comm.gather(None if profile is None else profile_parts(profile, seconds), root=0)
    if comm.Get_rank() == 0:
        emit({"code": code, "seconds": seconds, "rss": rows, "mpinn": mpinn.__file__, "parts": parts})


# Where predict's seconds go (--profile): cProfile's cumulative seconds of these functions, by
# (end of the file name, function name); the code now and the code before.
PARTS = {"read": [("h5py/_hl/dataset.py", "__getitem__")],
         "scale + forward": [("fitted.py", "forward")],
         "outputs + write": [("predict.py", "write")],
         "of which pwrite": [("predict.py", "_pwrite_all")],
         "fsync": [("~", "<built-in method posix.fsync>")],
         "gather (before)": [("comm.py", "gather_rows")],
         "agreements": [("agree.py", "agree"), ("agree.py", "on_root"), ("agree.py", "run_agreed"),
                        ("problem.py", "decide_on_root")]}


def profile_parts(profile, seconds):
    import pstats

    stats = pstats.Stats(profile).stats
    parts = {"wall": seconds}
    for part, keys in PARTS.items():
        parts[part] = sum(ct for (file, _, func), (_, _, _, ct, _) in stats.items()
                          if any(file.endswith(f) and func == name for f, name in keys))
    return parts


def compute_worker(checkpoint, rows):
    """predict's arithmetic alone: this rank's N-th of ``rows`` rows scored by the checkpoint's
    model and turned into outputs (labels, probabilities), 65,536 rows a round, from one block
    of features in memory (no file read, no write, no MPI between the ranks). Rank 0 reports
    the slowest rank's wall seconds."""
    import numpy as np
    from mpi4py import MPI

    from mpinn.nn.fitted import class_index, class_proba
    from mpinn.train.checkpoint import model_from_checkpoint, read_checkpoint

    comm = MPI.COMM_WORLD
    fitted = model_from_checkpoint(*read_checkpoint(checkpoint))
    block = 1 << 16
    X = np.random.default_rng(0).standard_normal((block, fitted.n_features_in_), dtype=np.float32)
    lo, hi = rows * comm.rank // comm.size, rows * (comm.rank + 1) // comm.size
    comm.Barrier()
    start = time.perf_counter()
    for a in range(lo, hi, block):
        scores = np.asarray(fitted.forward(X[:min(block, hi - a)]), dtype=np.float64)
        fitted.labels_[class_index(scores)], class_proba(scores)
    seconds = comm.gather(time.perf_counter() - start, root=0)
    if comm.rank == 0:
        emit({"code": 0, "seconds": max(seconds), "rss": [], "mpinn": __file__})


def mpinn_cli(*args):
    subprocess.run([str(BIN / "mpinn"), *map(str, args)], check=True, env=bench_env(),
                   stdout=subprocess.DEVNULL, timeout=3600)


def measure(ranks, argv, tree=None, mode="--worker"):
    """The worker's report, with the command's JSON output (eval --json) as "report"."""
    cmd = ([str(BIN / "mpiexec"), "-n", str(ranks)] if ranks > 1 else []) + \
        [sys.executable, __file__, mode, *map(str, argv)]
    env = bench_env()
    if tree is not None:  # the code before, ahead of this checkout
        env["PYTHONPATH"] = str(tree)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    result = parse(proc.stdout)
    if proc.returncode != 0 or result is None or result["code"] != 0:
        sys.exit(f"worker failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    if tree is not None and mode == "--worker" and not result["mpinn"].startswith(str(tree)):
        sys.exit(f"--before ran {result['mpinn']}, not the tree in {tree}")
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    result["report"] = reports[-1] if reports else None
    return result


def largest_difference(a, b, where=""):
    """(largest absolute difference of the numbers in two JSON values, what differs otherwise)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return float("inf"), f"{where}: keys {sorted(set(a) ^ set(b))}"
        found = [largest_difference(a[k], b[k], f"{where}.{k}") for k in a]
        return max((d for d, _ in found), default=0.0), "; ".join(w for _, w in found if w)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        found = [largest_difference(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b))]
        return max((d for d, _ in found), default=0.0), "; ".join(w for _, w in found if w)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(a - b), ""
    return (0.0, "") if a == b else (float("inf"), f"{where}: {a!r} != {b!r}")


def same_predictions(path, reference):
    """'' when the two prediction files hold the same datasets, dtypes and bytes; else what differs."""
    import h5py
    import numpy as np

    with h5py.File(path, "r") as f, h5py.File(reference, "r") as g:
        if set(f) != set(g):
            return f"datasets {sorted(f)} vs {sorted(g)}"
        for name in g:
            a, b = f[name][()], g[name][()]
            if a.dtype != b.dtype or a.shape != b.shape:
                return f"{name}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
            if a.dtype.kind == "O" and not np.array_equal(a, b) or a.dtype.kind != "O" and a.tobytes() != b.tobytes():
                return f"{name}: values differ"
    return ""


def compare_before(commit, work, commands, best, kept):
    """Run ``commands`` on the code at ``commit`` at 1 and 2 ranks; print its times and whether
    this code's outputs equal its outputs."""
    tree = work / "before"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    then = {}
    for name, argv in commands.items():
        for ranks in RANKS:
            then[name, ranks] = measure(ranks, argv, tree)
            if name == "predict":
                os.replace(work / "pred.h5", work / f"pred-before-{ranks}.h5")
            print(f"{commit}: {name} at {ranks} rank(s): {then[name, ranks]['seconds']:.2f} s, peak RSS per rank MB "
                  + ", ".join(f"{p / 2**20:.1f}" for _, p, _ in then[name, ranks]["rss"]))
    for name in commands:
        print(f"{commit}: {name}: time 1 rank / 2 ranks {then[name, 1]['seconds'] / then[name, 2]['seconds']:.2f}x")
    reference = then["eval --rows test", 1]["report"]
    for ranks in RANKS:
        diff, what = largest_difference(best["eval --rows test", ranks]["report"], reference)
        print(f"eval --rows test at {ranks} rank(s) vs {commit} at 1 rank: largest metric difference {diff:.3g}"
              + (f" ({what})" if what else ""))
        found = same_predictions(kept[ranks], work / "pred-before-1.h5")
        print(f"predict at {ranks} rank(s) vs {commit} at 1 rank: "
              + ("equal byte for byte, every dataset" if not found else f"DIFFERENT: {found}"))


def profile_predict(argv, work, tree):
    """predict at 1 and 2 ranks under cProfile (this code, and the code in ``tree`` if given):
    each rank's seconds in each of PARTS."""
    print("| predict under cProfile | ranks | rank | " + " | ".join(["wall s", *PARTS]) + " |")
    print("|---|---|---|" + "---|" * (len(PARTS) + 1))
    for code, where in (("now", None), ("before", tree)):
        if code == "before" and not where:
            continue
        for ranks in RANKS:
            os.environ["BENCH_PROFILE"] = "1"
            try:
                result = measure(ranks, argv, where)
            finally:
                del os.environ["BENCH_PROFILE"]
            (work / "pred.h5").unlink(missing_ok=True)
            for rank, parts in enumerate(result["parts"]):
                print(f"| {code} | {ranks} | {rank} | " + " | ".join(f"{parts[k]:.2f}" for k in ["wall", *PARTS]) + " |")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "--compute-worker":
        return compute_worker(sys.argv[2], int(sys.argv[3]))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--features", type=int, default=8)
    p.add_argument("--workdir", default=str(ROOT / "out" / "bench" / "evalpredict"))
    p.add_argument("--repeat", type=int, default=1, help="runs of each command at each rank count (best shown)")
    p.add_argument("--before", default="", help="a commit whose code runs the same commands, outputs compared")
    p.add_argument("--profile", action="store_true", help="where predict's seconds go, at 1 and 2 ranks (cProfile)")
    p.add_argument("--compute", action="store_true",
                   help="predict's arithmetic alone at 1 and 2 ranks (the machine's limit), alternated with predict")
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
    load = os.getloadavg()
    print(f"{args.rows:,} rows, {args.features} float32 features, 3 classes, test fraction 0.5 (keyed); "
          f"best of {args.repeat} run(s), 1 and 2 ranks alternated")
    # predict's arithmetic alone (--compute) runs beside predict, so that both see the same load.
    compute = {"predict's arithmetic alone": [ck, args.rows]} if args.compute else {}
    groups = [["eval --rows test"], ["predict", *compute]]
    best, walls, kept = {}, {}, {}
    for group in groups:
        for _ in range(args.repeat):
            for ranks in RANKS:
                for name in group:
                    result = measure(ranks, compute[name], mode="--compute-worker") if name in compute \
                        else measure(ranks, commands[name])
                    walls.setdefault((name, ranks), []).append(result["seconds"])
                    if (name, ranks) not in best or result["seconds"] < best[name, ranks]["seconds"]:
                        best[name, ranks] = result
                    if name == "predict" and ranks not in kept and args.before:
                        kept[ranks] = work / f"pred-now-{ranks}.h5"
                        os.replace(work / "pred.h5", kept[ranks])
                    (work / "pred.h5").unlink(missing_ok=True)
    print("| command | ranks | rank | start-up MB | peak MB | above start-up MB | CPU s | wall s (best) | wall s (runs) |")
    print("|---|---|---|---|---|---|---|---|---|")
    above, seconds = {}, {}
    for (name, ranks), result in best.items():
        for rank, (start, peak, cpu) in enumerate(result["rss"]):
            print(f"| {name} | {ranks} | {rank} | {start / 2**20:.1f} | {peak / 2**20:.1f} | "
                  f"{(peak - start) / 2**20:.1f} | {cpu:.2f} | {result['seconds']:.2f} | "
                  f"{', '.join(f'{w:.2f}' for w in walls[name, ranks])} |")
        above[name, ranks] = max((peak - start for start, peak, _ in result["rss"]), default=0)
        seconds[name, ranks] = result["seconds"]
    for name in commands:
        peaks = [peak for _, peak, _ in best[name, 2]["rss"]]
        print(f"{name}: largest rank's memory above start-up, 2 ranks / 1 rank: "
              f"{above[name, 2] / max(above[name, 1], 1):.2f}; time 1 rank / 2 ranks: "
              f"{seconds[name, 1] / seconds[name, 2]:.2f}x; 2 ranks: rank 0's peak RSS / rank 1's "
              f"{peaks[0] / peaks[1]:.3f}")
    for name in compute:
        print(f"{name}: slowest rank's wall s, best of {args.repeat}: 1 rank {seconds[name, 1]:.2f}, 2 ranks "
              f"{seconds[name, 2]:.2f} (runs {', '.join(f'{w:.2f}' for w in walls[name, 1])} | "
              f"{', '.join(f'{w:.2f}' for w in walls[name, 2])}); time 1 rank / 2 ranks: "
              f"{seconds[name, 1] / seconds[name, 2]:.2f}x")
    if args.before:
        compare_before(args.before, work, commands, best, kept)
    if args.profile:
        profile_predict(commands["predict"], work, args.before and work / "before")
    print(f"load average (1, 5, 15 min): before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, after "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
