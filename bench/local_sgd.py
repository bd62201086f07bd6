"""Model averaging (`--sync local:K`) against `allreduce`: accuracy and time to a target accuracy.

    python bench/local_sgd.py                  # digits, N = 1, 2, 4, 3 seeds, about 3 minutes
    python bench/local_sgd.py --ranks 2 --seeds 1 --k 4

On the real digits data (1797 x 64, 10 classes; `mpinn data digits`, 20 % held out with a fixed
seed) it trains, at each N of --ranks, with `mpiexec -n N python bench/local_sgd.py --worker`
(the Trainer of `mpinn train`, in process): `allreduce`, `local:K` for each K of --k, `local:K`
with --sync-warmup-steps (the largest K, post-local SGD) and `local:K` averaging only the
parameters while each rank keeps its own Adam moments (the alternative to what mpinn does, a
subclass defined here only to measure it). Every run trains --epochs epochs (no early stop) and
reports per epoch: test accuracy, training seconds (steps and averaging; no start-up or
evaluation) and the number of gradient reductions or parameter averages. From those: the first
epoch whose test accuracy reaches --target, the training seconds up to it, the final test
accuracy, reductions per epoch. Medians over --seeds seeds (a run that misses the target counts
as infinitely slow); the speedup is the 1-rank allreduce median over the row's. At N = 1 every
local:K is the allreduce run (tests/test_local_sync.py), so only allreduce runs there.

More ranks than cores (4 on a 2-core machine) oversubscribe it: collectives then wait for
descheduled ranks and cost far more than on a real cluster, which favours local:K there.

Prints a markdown table and writes the raw numbers to --out (default out/bench/local_sgd.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, bench_env, emit, parse  # noqa: E402


def keep_moments_class():
    """local:K that averages only the parameters: each rank keeps its own optimizer state."""
    import numpy as np

    from mpinn.parallel.local_averaging import LocalAveraging

    class KeepMoments(LocalAveraging):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            self._arrays = []  # _average sends [w*params | w | loss | flag] only
            self.buffer = np.zeros(self.n + 3, dtype=self.model.dtype)

    return KeepMoments


def worker(a):
    """One training run in this (MPI) process; rank 0 prints the per-epoch records."""
    import numpy as np

    from mpinn.parallel import sync as sync_module
    from mpinn.parallel.comm import world
    from mpinn.train.config import TrainConfig, optimizer_from_config
    from mpinn.train.problem import load_problem
    from mpinn.train.loop import Trainer

    comm = world()
    if a.keep_moments:
        sync_module.LocalAveraging = keep_moments_class()  # make_sync looks the class up by name at call time
    cfg = TrainConfig(data=a.data, test_fraction=a.test_fraction, hidden=tuple(int(h) for h in a.hidden.split(",")),
                      batch_size=a.batch, epochs=a.epochs, n_iter_no_change=10**6, seed=a.seed, solver=a.solver,
                      lr=a.lr, sync=a.sync, sync_warmup_steps=a.warmup_steps).validate()
    trainer = Trainer(cfg, load_problem(cfg, comm), comm, log=lambda line: None)
    # Load the compiled update (numba, when installed) before the clock starts: a start-up cost
    # of seconds that would otherwise land in the first epoch of every run.
    n = 1 << 15
    optimizer_from_config(cfg, n, trainer.model.dtype).step(np.zeros(n, trainer.model.dtype),
                                                            np.zeros(n, trainer.model.dtype), 1.0, cfg.alpha, [(0, n)])
    trainer.fit()
    if comm.rank == 0:
        emit({"ranks": comm.size, "sync": trainer.sync.name, "steps_per_epoch": trainer.schedule.n_steps,
              "records": [{k: r.get(k) for k in ("epoch", "seconds", "test_accuracy", "reductions", "comm_seconds",
                                                   "loss")} for r in trainer.loop.history]})


def run(a, n, seed, sync, warmup=0, keep=False):
    cmd = ([a.mpiexec, "-n", str(n)] if n > 1 else []) + [
        sys.executable, str(Path(__file__).resolve()), "--worker", "--data", a.data, "--seed", str(seed),
        "--sync", sync, "--warmup-steps", str(warmup), "--epochs", str(a.epochs), "--batch", str(a.batch),
        "--hidden", a.hidden, "--solver", a.solver, "--lr", repr(a.lr), "--test-fraction", repr(a.test_fraction)]
    if keep:
        cmd.append("--keep-moments")
    proc = subprocess.run(["timeout", str(a.timeout), *cmd], env=bench_env(threads=1), capture_output=True,
                          text=True, cwd=ROOT)
    out = parse(proc.stdout)
    if proc.returncode or out is None:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    recs = out["records"]
    hit = next((i for i, r in enumerate(recs) if (r["test_accuracy"] or 0) >= a.target), None)
    return {"seed": seed, "final_test_accuracy": recs[-1]["test_accuracy"],
            "epochs_to_target": None if hit is None else hit + 1,
            "seconds_to_target": None if hit is None else sum(r["seconds"] for r in recs[:hit + 1]),
            "seconds_per_epoch": statistics.median(r["seconds"] for r in recs),
            "comm_seconds_per_epoch": statistics.median(r["comm_seconds"] for r in recs),
            "reductions_per_epoch": sum(r["reductions"] for r in recs) / len(recs),
            "steps_per_epoch": out["steps_per_epoch"], "accuracy_per_epoch": [r["test_accuracy"] for r in recs]}


def median_or_none(values):
    vals = sorted(math.inf if v is None else v for v in values)
    m = statistics.median(vals)
    return None if math.isinf(m) else m


def fmt(x, digits=2):
    return "—" if x is None else f"{x:.{digits}f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT / "out" / "bench" / "digits.h5"),
                   help="HDF5 data (default out/bench/digits.h5, written with `mpinn data digits` if missing)")
    p.add_argument("--ranks", default="1,2,4", help="comma-separated rank counts (default 1,2,4)")
    p.add_argument("--k", default="4,16", help="averaging periods K (default 4,16)")
    p.add_argument("--warmup-steps", type=int, default=46,
                   help="--sync-warmup-steps of the post-local SGD row (default 46: two epochs of digits)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..S-1 (default 3); medians are reported")
    p.add_argument("--target", type=float, default=0.97, help="test accuracy to reach (default 0.97)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=64, help="global batch (default 64)")
    p.add_argument("--hidden", default="256,128")
    p.add_argument("--solver", default="adam")
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--timeout", type=float, default=120, help="seconds per run (default 120)")
    p.add_argument("--mpiexec", default=str(Path(sys.executable).parent / "mpiexec"))
    p.add_argument("--out", default=str(ROOT / "out" / "bench" / "local_sgd.json"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--sync", default="allreduce", help=argparse.SUPPRESS)
    p.add_argument("--keep-moments", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return worker(a)
    a.data = os.path.abspath(a.data)  # the workers run in the checkout, not in this directory

    started, date, load_before = time.perf_counter(), datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), os.getloadavg()
    if not Path(a.data).exists():
        Path(a.data).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(Path(sys.executable).parent / "mpinn"), "data", "digits", a.data], check=True,
                       capture_output=True, env=bench_env())
    ks = [int(k) for k in a.k.split(",") if k]
    variants = [("allreduce", "allreduce", 0, False)] + [(f"local:{k}", f"local:{k}", 0, False) for k in ks]
    variants += [(f"local:{max(ks)}, warm-up {a.warmup_steps} steps", f"local:{max(ks)}", a.warmup_steps, False),
                 (f"local:{min(ks)}, own Adam moments", f"local:{min(ks)}", 0, True)]
    rows = []
    for n in [int(r) for r in a.ranks.split(",")]:
        for label, sync, warmup, keep in (variants[:1] if n == 1 else variants):
            runs = [run(a, n, seed, sync, warmup, keep) for seed in range(a.seeds)]
            row = {"ranks": n, "variant": label, "runs": runs, "reached": sum(r["epochs_to_target"] is not None for r in runs)}
            for key in ("final_test_accuracy", "epochs_to_target", "seconds_to_target", "seconds_per_epoch",
                        "comm_seconds_per_epoch", "reductions_per_epoch"):
                row[key] = median_or_none([r[key] for r in runs])
            rows.append(row)
            print(f"  N={n} {label}: acc {fmt(row['final_test_accuracy'], 4)}, {fmt(row['seconds_to_target'], 3)} s to "
                  f"target ({time.perf_counter() - started:.0f} s elapsed)", file=sys.stderr, flush=True)
    base = next((r["seconds_to_target"] for r in rows if r["ranks"] == 1 and r["variant"] == "allreduce"), None)
    for r in rows:
        r["speedup"] = base / r["seconds_to_target"] if base and r["seconds_to_target"] else None
    elapsed = time.perf_counter() - started
    report = {"date": date, "elapsed_seconds": elapsed, "load_average_before": load_before,
              "load_average_after": os.getloadavg(), "cpus": os.cpu_count(), "args": vars(a), "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1))

    steps = rows[0]["runs"][0]["steps_per_epoch"]
    print(f"digits, {a.test_fraction:.0%} held out, hidden {a.hidden}, {a.solver} lr {a.lr:g}, global batch {a.batch} "
          f"({steps} steps per epoch), {a.epochs} epochs per run, target test accuracy {a.target}, median of {a.seeds} "
          f"seed(s); {date}, {elapsed:.0f} s, {os.cpu_count()} CPUs, load average {load_before[0]:.2f} before, "
          f"{report['load_average_after'][0]:.2f} after")
    print()
    print("| N | sync | reductions per epoch | reached | epochs to target | train s to target | speedup vs 1 rank "
          "| s per epoch | comm s per epoch | final test acc |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['ranks']} | {r['variant']} | {fmt(r['reductions_per_epoch'], 1)} | {r['reached']}/{len(r['runs'])} | "
              f"{fmt(r['epochs_to_target'], 0)} | {fmt(r['seconds_to_target'], 3)} | {fmt(r['speedup'])} | "
              f"{fmt(r['seconds_per_epoch'], 4)} | {fmt(r['comm_seconds_per_epoch'], 4)} | "
              f"{fmt(r['final_test_accuracy'], 4)} |")
    print()
    print(f"raw numbers: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
