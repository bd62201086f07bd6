"""Per-rank memory of eval's row choice, the early-stopping split, predict's rounds and a search's task, for
n = 10^6 .. 10^9 rows on rank 0 of N ranks, computed without the data, beside the code before
them (docs/performance.md, "Memory per rank of eval and predict").

    python bench/eval_predict_model.py [--sizes 1e6,1e7,1e8,1e9] [--ranks 1,10,100,1000]
                                       [--parts eval,early stopping,predict,search] [--before 3b76c1d]
                                       [--before-max 1e7] [--max-per-rank 1e7]

The bookkeeping is a pure function of (n, rank, N, seed), so the rank's own part of it runs here,
in one process, with the functions `mpinn eval`, `mpinn train --early-stopping` and
`mpinn predict` call; "MB" is tracemalloc's peak over that part (numpy reports its buffers to
tracemalloc). What is measured, on rank 0 of N (block shard, keyed permutation):

- eval --rows test: the rank's test rows, evaluation.chosen_rows (its own rows, a chunk at a
  time). Before: evaluation.rows_to_score, which inverted the keyed permutation over all n rows
  and sorted the chosen ones, then the rank's share of them (shard.local_positions), on every rank.
- early stopping: the validation rows held out of the rank's training rows
  (early_stopping.hold_out). "MB" includes the split's own arrays (the rank's train and test rows),
  which training holds anyway; "split MB" is those alone. Before: the keyed permutation was
  refused, so the scikit-learn one (the n_train-long training order on every rank) with a
  binary classifier's stratification (an n_train-long column summed over the ranks; the
  Allreduce's own buffers are not counted).
- predict: one round (65,536 rows) of the rank that has the most rows (rank 0 may have none:
  blocks are whole runs of 8,192 rows), its features drawn here in place of the file's, scored
  by a 16-16-3 float32 classifier and its outputs written (to /dev/null). Before: 65,536 rows a
  round over all ranks, rank 0 receiving and writing all of them.
  "rounds" and the rows a rank writes are counted; "collectives" are the collective calls a rank
  makes over the rounds (now: none without a column plan, one agreement at the end; before: an
  Allgather and a Gatherv a round).
- search: one task (fold 0 of 5 shuffled folds, 16 float64 features) on rank 0 of one group of
  N ranks, allocated as `mpinn search` holds it (search_holdings: the code's arrays are
  allocated here, not its functions run). Now each rank holds its 1/N of the fold's features
  (data/rows.py); before, every rank held all of X and the fold's train rows twice. The labels
  and the folds' index arrays (scikit-learn's, on every rank) grow with n whatever N is: above
  --max-per-rank rows in all, its figure is its bytes per row at the largest n run at that N,
  times n.

The code now runs up to --max-per-rank rows on the rank; above it (10^9 rows on 1 or 10 ranks),
its figure is the bytes per row on the rank at the largest n run at that N, times n/N.
The code before runs from `git archive BEFORE` in a subprocess; where it would hold too much
memory (n > --before-max), its figure is the bytes per row measured at the largest n it ran,
times n: marked "formula" in the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_FRACTION, VALIDATION_FRACTION, SEED = 0.2, 0.1, 0
FOLDS = 5  # a search's cv
ROUND_ROWS = 1 << 16  # predict's rows a round: per rank now (predict.ROWS_PER_RANK), in total before
FEATURES, HIDDEN, CLASSES = 16, 16, 3


def traced(fn):
    """(peak bytes, seconds, result) of fn() under tracemalloc."""
    tracemalloc.start()
    try:
        t0 = time.process_time()  # CPU seconds: on a shared machine steadier than the wall time
        result = fn()
        seconds = time.process_time() - t0
        return tracemalloc.get_traced_memory()[1], seconds, result
    finally:
        tracemalloc.stop()


def classifier(FittedMLP):
    import numpy as np

    rng = np.random.default_rng(0)
    coefs = [rng.standard_normal((FEATURES, HIDDEN)).astype(np.float32),
             rng.standard_normal((HIDDEN, CLASSES)).astype(np.float32)]
    intercepts = [np.zeros(HIDDEN, np.float32), np.zeros(CLASSES, np.float32)]
    return FittedMLP(coefs, intercepts, activation="relu", output="softmax", task="classify",
                     classes=np.arange(CLASSES))


def features(rows):
    import numpy as np

    return np.random.default_rng(1).standard_normal((rows, FEATURES), dtype=np.float32)


# ---- the code now -------------------------------------------------------------------------------

def now_eval(n, ranks):
    from mpinn.data.partition import make_shard
    from mpinn.train.evaluation import chosen_rows

    shard = make_shard(n, 0, ranks)
    split = {"n_rows": n, "test_fraction": TEST_FRACTION, "seed": SEED, "permutation": "keyed"}
    peak, seconds, local = traced(lambda: chosen_rows("test", split, shard))
    return {"rows": len(local), "bytes": peak, "seconds": seconds}


def now_early_stopping(n, ranks):
    import numpy as np

    from mpinn.data.partition import make_shard
    from mpinn.data.schedule import split_rows
    from mpinn.train.early_stopping import hold_out

    shard = make_shard(n, 0, ranks)
    held = {}

    def run():
        train, test = split_rows(n, TEST_FRACTION, SEED, shard, "keyed")
        held["split"] = tracemalloc.get_traced_memory()[0]
        t0 = time.process_time()
        _, val = hold_out(train, VALIDATION_FRACTION, np.random.RandomState(SEED), shard, comm=None)
        held["seconds"] = time.process_time() - t0
        return len(val)

    peak, _, rows = traced(run)
    return {"rows": rows, "bytes": peak, "split_bytes": held["split"], "seconds": held["seconds"]}


def now_predict(n, ranks):
    import numpy as np

    from mpinn.nn.fitted import FittedMLP
    from mpinn.train.predict import ROWS_PER_RANK, _Outputs, rank_bounds

    fitted = classifier(FittedMLP)
    bounds = rank_bounds(n, ranks)
    sizes = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    rank = sizes.index(max(sizes))  # rank 0 may have none (blocks are whole runs of 8,192 rows)
    first, last = bounds[rank], bounds[rank + 1]
    rounds = math.ceil(max(b - a for a, b in zip(bounds[:-1], bounds[1:])) / ROWS_PER_RANK)
    outputs = _Outputs(fitted, n)
    layout = {"y_pred": [0, fitted.labels_.dtype.str, []], "proba": [0, np.dtype(np.float64).str, [CLASSES]]}
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        def one_round():  # as predict.py's round (a rank without rows has none)
            if last > first:
                rows = fitted.scale_features(features(min(ROWS_PER_RANK, last - first)))
                outputs.write(fd, layout, first, np.asarray(fitted.forward(rows, scaled=True), dtype=np.float64))

        peak, seconds, _ = traced(one_round)
    finally:
        os.close(fd)
    return {"rows": last - first, "bytes": peak, "seconds": seconds, "rounds": rounds, "collectives": 1,
            "written": last - first, "rank": rank}


def search_holdings(n, ranks, now):
    """What rank 0 of one group of N ranks holds for a search task (fold 0 of FOLDS shuffled
    folds, a 16-feature float64 X), allocated here as the code holds it: the labels and the folds
    every rank holds (scikit-learn's index arrays, broadcast by iteration.splits_from_root), then
    the task's features and outputs. Now: the rank's block of the fold's train rows as RowView
    reads them (the scaler transforms them in place), its block of the test rows and the
    group's gathered outputs. Before: all of X (cli/search.py read the file), the fold's train
    rows taken and scaled (two copies), the MLP's shard; the leader's test rows, scaled, and
    outputs."""
    import numpy as np
    from sklearn.model_selection import KFold

    def run():
        y = np.zeros(n, dtype=np.int64)
        splits = list(KFold(FOLDS, shuffle=True, random_state=SEED).split(np.empty((n, 0))))
        train, test = splits[0]
        y_fold = y[train], y[test]
        if now:
            fit = [np.ones((-(-len(train) // ranks), FEATURES))]
            fit.clear()  # the fit ends before scoring
            score = np.ones((-(-len(test) // ranks), FEATURES))
            outputs = np.ones((len(test), CLASSES))
            return -(-len(train) // ranks), (y_fold, score, outputs)
        X = np.ones((n, FEATURES))
        taken = X[train]
        scaled = taken * 1.0
        del taken
        shard = scaled[: -(-len(train) // ranks)].copy()
        del shard, scaled  # the fit ends before scoring
        score = X[test] * 1.0
        outputs = np.ones((len(test), CLASSES))
        return n, (y_fold, score, outputs)

    peak, seconds, (rows, _) = traced(run)
    return {"rows": rows, "bytes": peak, "seconds": seconds}


def now_search(n, ranks):
    return search_holdings(n, ranks, now=True)


NOW = {"eval": now_eval, "early stopping": now_early_stopping, "predict": now_predict, "search": now_search}
O_N_PARTS = ("search",)  # parts whose memory grows with n on every rank (the folds): by formula x n


# ---- the code before (run from its own tree, in a subprocess) ----------------------------------

class SumOfOne:
    """A communicator's allreduce as one rank sees it: in place, its own buffer."""

    def allreduce(self, buf, op):
        return buf


def before_eval(n, ranks):
    from mpinn.evaluation import rows_to_score
    from mpinn.partition import make_shard

    shard = make_shard(n, 0, ranks)
    split = {"n_rows": n, "test_fraction": TEST_FRACTION, "seed": SEED, "permutation": "keyed"}

    def run():  # cmd_eval's steps before the scoring
        _, chosen, _ = rows_to_score("test", split, n, "data.h5")
        return len(shard.local_positions(chosen)[1])

    peak, seconds, rows = traced(run)
    return {"rows": rows, "bytes": peak, "seconds": seconds}


def before_early_stopping(n, ranks):
    import numpy as np

    from mpinn.early_stopping import hold_out
    from mpinn.partition import make_shard
    from mpinn.schedule import split_rows

    shard = make_shard(n, 0, ranks)
    held = {}

    def run():
        train, _ = split_rows(n, TEST_FRACTION, SEED, shard, "sklearn")
        held["split"] = tracemalloc.get_traced_memory()[0]
        binary = np.arange(shard.count) % 2 == 1  # a binary classifier's 0/1 targets of the rank's rows
        t0 = time.process_time()
        _, val = hold_out(train, VALIDATION_FRACTION, np.random.RandomState(SEED), shard, SumOfOne(),
                          binary_labels=binary)
        held["seconds"] = time.process_time() - t0
        return len(val)

    peak, _, rows = traced(run)
    return {"rows": rows, "bytes": peak, "split_bytes": held["split"], "seconds": held["seconds"]}


def before_predict(n, ranks):
    import numpy as np

    from mpinn.fitted import FittedMLP, class_index, class_proba

    fitted = classifier(FittedMLP)
    per_round = max(ROUND_ROWS, ranks)
    round_rows = min(per_round, n)
    mine = round_rows // ranks  # rank 0's part of a round: [lo, lo + R/N)

    def one_round():  # predict_to_file's round on rank 0: score its part, receive all, write all
        scores = np.ascontiguousarray(fitted.forward(features(mine)), dtype=np.float64)
        received = np.empty((round_rows, CLASSES))  # comm.gather_rows' receive buffer
        received[:mine] = scores
        del scores
        index = class_index(received)  # _Outputs.write's values, before h5py writes them
        labels = fitted.labels_[index]
        proba = class_proba(received)
        return len(labels) + len(proba)

    peak, seconds, _ = traced(one_round)
    rounds = math.ceil(n / per_round)
    return {"rows": math.ceil(n / ranks), "bytes": peak, "seconds": seconds, "rounds": rounds,
            "collectives": 2 * rounds, "written": n}


def before_search(n, ranks):
    return search_holdings(n, ranks, now=False)


BEFORE = {"eval": before_eval, "early stopping": before_early_stopping, "predict": before_predict,
          "search": before_search}


def before_worker(cells):
    """Print the code before's figures for [(part, n, ranks)] as one JSON line."""
    out = [dict(BEFORE[part](n, ranks), part=part, n=n, ranks=ranks) for part, n, ranks in cells]
    print(json.dumps(out))


def run_before(commit, cells):
    """{(part, n, ranks): figures} of the code at ``commit``, or None when git cannot give it."""
    with tempfile.TemporaryDirectory() as tree:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True)
        if archive.returncode != 0:
            return None
        subprocess.run(["tar", "-x", "-C", tree], input=archive.stdout, check=True)
        env = dict(os.environ, PYTHONPATH=tree, MPINN_NUMBA="0")
        proc = subprocess.run([sys.executable, __file__, "--before-worker", json.dumps(cells)], capture_output=True,
                              text=True, env=env, cwd=tree, timeout=3600)
    if proc.returncode != 0:
        sys.exit(f"the code at {commit} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {(c["part"], c["n"], c["ranks"]): c for c in json.loads(proc.stdout.splitlines()[-1])}


def mb(b):
    return f"{b / 2**20:,.1f}"


def by_formula(measured, part, n, ranks, scale):
    """(bytes, how) of a cell not run: the bytes per row of the largest n run at the same N, times
    n; (None, 'not measured') when none ran."""
    ran = [m for (p, m, r) in measured if p == part and r == ranks]
    if not ran:
        return None, "not measured"
    top = max(ran)
    per_row = measured[part, top, ranks]["bytes"] / (top / scale)
    unit = "B/row" if scale == 1 else "B per row on the rank"
    return per_row * n / scale, f"formula: {per_row:.1f} {unit} at n = {top:.0e}, x n{'' if scale == 1 else '/N'}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e6,1e7,1e8,1e9", help="row counts n, comma-separated")
    ap.add_argument("--ranks", default="1,10,100,1000", help="rank counts N, comma-separated")
    ap.add_argument("--max-per-rank", type=float, default=1e7,
                    help="run the code now up to n/N rows on the rank; above it, by formula")
    ap.add_argument("--parts", default=",".join(NOW), help="which of them, comma-separated")
    ap.add_argument("--before", default="3b76c1d", help="the commit measured as 'before' ('' for none)")
    ap.add_argument("--before-max", type=float, default=1e7,
                    help="run the code before up to this n; above it, its bytes per row at the largest n run, times n")
    args = ap.parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    rank_counts = [int(r) for r in args.ranks.split(",")]
    parts = args.parts.split(",")
    if set(parts) - set(NOW):
        ap.error(f"--parts: choose from {', '.join(NOW)}")
    cells = [(part, n, ranks) for part in parts for n in sizes for ranks in rank_counts]

    before = None
    if args.before:
        before = run_before(args.before, [c for c in cells if c[0] == "predict" or c[1] <= args.before_max])
        if before is None:
            print(f"before: commit {args.before} not available here (git archive failed); not measured")
    for part in parts:  # imports and first calls out of the figures
        NOW[part](1000, 1)
    print(f"rank 0 of N (predict: the rank with the most rows), block shard, keyed permutation, "
          f"--test-fraction {TEST_FRACTION:g}, "
          f"validation fraction {VALIDATION_FRACTION:g}; predict: {FEATURES}-{HIDDEN}-{CLASSES} float32 classifier; "
          "CPU s of the part now")
    print("| part | n | N | rows on the rank | MB now | CPU s now | MB before | before: how |")
    print("|---|---|---|---|---|---|---|---|")
    now_ran, predict_rows = {}, []
    for part, n, ranks in cells:
        if part == "predict" or (n if part in O_N_PARTS else n / ranks) <= args.max_per_rank:
            now = now_ran[part, n, ranks] = NOW[part](n, ranks)
            held, seconds = mb(now["bytes"]), f"{now['seconds']:.3f}"
            if "split_bytes" in now:
                held += f" (split {mb(now['split_bytes'])})"
        else:
            est, how = by_formula(now_ran, part, n, ranks, scale=1 if part in O_N_PARTS else ranks)
            held, seconds = ("" if est is None else mb(est)) + f" ({how})", ""
        then, how = "", "not measured"
        if before is not None:
            if (part, n, ranks) in before:
                b = before[part, n, ranks]
                then, how = mb(b["bytes"]), f"measured ({args.before})"
                if "split_bytes" in b:
                    then += f" (split {mb(b['split_bytes'])})"
            else:
                est, how = by_formula(before, part, n, ranks, scale=1)
                then = "" if est is None else mb(est)
        rows = now_ran[part, n, ranks]["rows"] if (part, n, ranks) in now_ran else ""
        print(f"| {part} | {n:.0e} | {ranks:,} | {rows if rows == '' else f'{rows:,}'} | {held} | {seconds} | "
              f"{then} | {how} |", flush=True)
        if part == "predict":
            predict_rows.append((n, ranks, now_ran[part, n, ranks], (before or {}).get((part, n, ranks))))
    print()
    print("| predict: n | N | rounds now | collectives now | most rows a rank writes now | "
          "rounds before | collectives before | rows rank 0 wrote before |")
    print("|---|---|---|---|---|---|---|---|")
    for n, ranks, now, b in predict_rows:
        old = [f"{b['rounds']:,}", f"{b['collectives']:,}", f"{b['written']:,}"] if b else ["", "", ""]
        print(f"| {n:.0e} | {ranks:,} | {now['rounds']:,} | {now['collectives']} | {now['written']:,} | "
              + " | ".join(old) + " |")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--before-worker":
        sys.path.insert(0, os.environ["PYTHONPATH"])  # the tree before, ahead of this checkout's mpinn
        import mpinn

        assert mpinn.__file__.startswith(os.environ["PYTHONPATH"]), mpinn.__file__
        before_worker(json.loads(sys.argv[2]))
    else:
        sys.path.insert(0, str(ROOT))
        main()
