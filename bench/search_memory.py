"""Per-rank peak RSS of `mpinn search` in one group of 1 and of 2 ranks (docs/performance.md,
"Memory per rank of a search").

Writes one synthetic file (by default 400,000 rows of 16 float32 features, 3 classes) and runs

    mpinn search --data FILE --grid GRID --cv 2 --seed 0 --group-size N --no-refit ...

at N = 1 and 2 (one group of N ranks) through eval_predict_memory.py's worker: each rank runs
the command in-process and reports its peak RSS at start-up (mpinn, numpy, h5py and MPI
loaded) and at the end. The grid is 2 candidates of a small MLP trained for one epoch, so the
data, not the model, is what a rank holds. Prints one row per rank and the ratio of the larger
rank's memory above start-up at 2 ranks to that at 1 rank: with each group member reading only
its share of a fold's rows it is about 0.5; a rank holding all of X gives about 1.

With --before COMMIT the same two runs use that commit's code (`git archive` under --workdir,
put first on PYTHONPATH) and their results are compared with these (largest score difference).

Writes nothing but the files under --workdir (default out/bench/searchmemory), deleted at the
end unless --keep.

    python bench/search_memory.py [--rows 400000] [--features 16] [--before COMMIT] [--keep]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT  # noqa: E402
from eval_predict_memory import measure, mpinn_cli  # noqa: E402

RANKS = (1, 2)
GRID = "hidden = [[8]]\nlr = [0.01, 0.05]\nepochs = 1\nbatch-size = 2048\n"


def results_table(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def largest_score_difference(a, b):
    keys = [k for k in a[0] if k.startswith(("mean_test_", "split"))]
    return max(abs(float(x[k]) - float(y[k])) for x, y in zip(a, b) for k in keys)


def run_all(work, data, grid, tree=None, tag="now"):
    """{ranks: (worker report, results table)} of the search at 1 and 2 ranks."""
    out = {}
    for ranks in RANKS:
        results = work / f"{tag}-{ranks}.csv"
        argv = ["search", "--data", data, "--grid", grid, "--cv", 2, "--seed", 0, "--group-size", ranks,
                "--no-refit", "--results", results]
        out[ranks] = measure(ranks, argv, tree), results_table(results)
    return out


def report(label, runs):
    above = {}
    for ranks, (result, _) in runs.items():
        for rank, (start, peak, _cpu) in enumerate(result["rss"]):
            print(f"| {label} | {ranks} | {rank} | {start / 2**20:.1f} | {peak / 2**20:.1f} | "
                  f"{(peak - start) / 2**20:.1f} | {result['seconds']:.2f} |")
        above[ranks] = max(peak - start for start, peak, _ in result["rss"])
    return above[2] / max(above[1], 1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=400_000)
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--before", default="", help="a commit whose code runs the same searches, results compared")
    p.add_argument("--workdir", default=str(ROOT / "out" / "bench" / "searchmemory"))
    p.add_argument("--keep", action="store_true", help="keep the data file")
    args = p.parse_args()

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    data, grid = work / f"x{args.rows}-{args.features}.h5", work / "grid.toml"
    if not data.exists():
        mpinn_cli("data", "synthetic", data, "--samples", args.rows, "--features", args.features, "--classes", 3,
                  "--dtype", "float32")
    grid.write_text(GRID)
    x_mb = args.rows * args.features * 8 / 2**20
    print(f"{args.rows:,} rows, {args.features} float32 features (X as float64: {x_mb:.0f} MB), 3 classes; "
          "2 candidates x 2 shuffled folds, one group of 1 or 2 ranks")
    print("| code | ranks | rank | start-up MB | peak MB | above start-up MB | wall s |")
    print("|---|---|---|---|---|---|---|")
    now = run_all(work, data, grid)
    ratio = report("now", now)
    lines = [f"now: largest rank's memory above start-up, 2 ranks / 1 rank: {ratio:.2f}"]
    diff = largest_score_difference(now[2][1], now[1][1])
    lines.append(f"now: 2 ranks vs 1 rank, largest score difference {diff:.3g}")
    if args.before:
        tree = work / "before"
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
        then = run_all(work, data, grid, tree, "before")
        lines.append(f"{args.before}: largest rank's memory above start-up, 2 ranks / 1 rank: "
                     f"{report(args.before, then):.2f}")
        for ranks in RANKS:
            lines.append(f"now vs {args.before} at {ranks} rank(s): largest score difference "
                         f"{largest_score_difference(now[ranks][1], then[ranks][1]):.3g}")
    for line in lines:
        print(line)
    print("load average (1, 5, 15 min): " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
