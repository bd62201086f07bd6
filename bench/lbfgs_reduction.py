"""L-BFGS's two reductions (train/lbfgs.py): the N-invariant chunk tree vs one Allreduce.

    python bench/lbfgs_reduction.py            # 65,536 x 32 rows, hidden 64, N = 1 and 2
    python bench/lbfgs_reduction.py --rows 16384 --iters 5

Each N runs `mpiexec -n N python bench/lbfgs_reduction.py --worker` (MLPClassifier, solver
lbfgs, a fixed number of iterations, rows in chunk_shard's whole chunks for both), once with
reduction="tree" (the default) and once with "allreduce", alternating, --repeats times. It prints
seconds per L-BFGS iteration (the median) and tree/allreduce, measured in the same run, and
whether the fits at N ranks equal the one-rank fit bit for bit (tree: always; allreduce: the
line search amplifies the last bits of the sums' order).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_env  # noqa: E402


def worker(a):
    import functools
    import warnings

    import numpy as np

    import mpinn
    import mpinn.train.lbfgs as lbfgs
    from mpinn.parallel.comm import world

    comm = world()
    rng = np.random.RandomState(0)
    X = rng.standard_normal((a.rows, a.features))
    y = (X[:, :4].sum(1) + 0.5 * rng.standard_normal(a.rows) > 0).astype(int)
    original = lbfgs.fit_lbfgs
    lbfgs.fit_lbfgs = functools.partial(original, reduction=a.reduction)  # looked up when fit runs
    warnings.simplefilter("ignore")
    est = mpinn.MLPClassifier(hidden_layer_sizes=(a.hidden,), solver="lbfgs", max_iter=a.iters, tol=0,
                              random_state=0)
    comm.barrier()
    start = time.perf_counter()
    est.fit(X, y)
    seconds = time.perf_counter() - start
    flat = np.concatenate([w.ravel() for w in est.coefs_ + est.intercepts_])
    if comm.rank == 0:
        print(json.dumps({"seconds": seconds, "iters": int(est.n_iter_),
                          "hash": hashlib.sha256(flat.tobytes()).hexdigest()[:16]}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--reduction", default="tree", help=argparse.SUPPRESS)
    p.add_argument("--rows", type=int, default=65536)
    p.add_argument("--features", type=int, default=32)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ranks", default="1,2")
    p.add_argument("--mpiexec", default=str(Path(sys.executable).parent / "mpiexec"))
    p.add_argument("--timeout", type=int, default=600)
    a = p.parse_args(argv)
    if a.worker:
        return worker(a)
    rows = {}
    for n in map(int, a.ranks.split(",")):
        for _ in range(a.repeats):
            for reduction in ("tree", "allreduce"):
                cmd = [a.mpiexec, "-n", str(n), sys.executable, __file__, "--worker", "--reduction", reduction,
                       "--rows", str(a.rows), "--features", str(a.features), "--hidden", str(a.hidden),
                       "--iters", str(a.iters)]
                proc = subprocess.run(["timeout", str(a.timeout), *cmd], capture_output=True, text=True,
                                      env=bench_env(threads=1))
                if proc.returncode:
                    sys.exit(f"worker failed ({proc.returncode}):\n{proc.stderr}")
                r = json.loads(proc.stdout.splitlines()[-1])
                rows.setdefault((n, reduction), []).append(r)
    print(f"L-BFGS, {a.rows} x {a.features} rows, hidden {a.hidden}, {a.iters} iterations, median of {a.repeats}")
    print("| ranks | tree s/iter | allreduce s/iter | tree / allreduce | tree = 1 rank | allreduce = 1 rank |")
    print("|---|---|---|---|---|---|")
    ones = {red: rows[(1, red)][0]["hash"] for red in ("tree", "allreduce") if (1, red) in rows}
    for n in map(int, a.ranks.split(",")):
        per = {red: statistics.median(r["seconds"] / max(1, r["iters"]) for r in rows[(n, red)])
               for red in ("tree", "allreduce")}
        same = {red: rows[(n, red)][0]["hash"] == ones.get(red) for red in per}
        print(f"| {n} | {per['tree']:.4f} | {per['allreduce']:.4f} | {per['tree'] / per['allreduce']:.2f} | "
              f"{'yes' if same['tree'] else 'no'} | {'yes' if same['allreduce'] else 'no'} |")


if __name__ == "__main__":
    main()
