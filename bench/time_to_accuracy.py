"""Time to a test accuracy at 1 and 2 ranks: fixed global batch vs weak scaling (--batch-per-rank).

    python bench/time_to_accuracy.py                    # adam and sgd, 3 seeds, ~2-3 minutes
    python bench/time_to_accuracy.py --solvers adam --seeds 1 --extrapolate ''

For the real digits data (1797 x 64, 10 classes; `mpinn data digits`, 20 % held out with a
fixed seed) it runs `timeout T mpiexec -n N mpinn train` at each N of --ranks for four recipes:

  fixed      --batch-size B (global batch B on any N), base lr: the same model on every N
  linear     --batch-per-rank B, lr x N, --warmup-epochs W     (Goyal et al. 2017)
  sqrt       --batch-per-rank B, lr x sqrt(N), --warmup-epochs W  (Krizhevsky 2014)
  none       --batch-per-rank B, base lr, no warm-up

Each run trains --epochs epochs (no early stop) with --metrics; from the per-epoch records it
takes the first epoch whose test accuracy reaches --target, the training seconds up to it (sum of
the records' "seconds": steps only, no start-up or evaluation) and the final test accuracy. A
second run of the same command with --epochs set to that epoch (training is deterministic for a
seed and rank count; the script checks the accuracy is the same) gives the process wall time to
the target: start-up, data loading, per-epoch evaluation included. Identical commands (at N=1
"none" is "fixed", "sqrt" is "linear") run once. Medians over --seeds seeds (a run that misses
the target counts as infinitely slow); speedups are the 1-rank "fixed" median over the row's.

Base learning rates: adam 0.001 (mpinn's default); sgd with momentum 0.9 (Nesterov) at 0.001
(mpinn's default, small for sgd) and 0.01 (10x: reaches 0.95 in 2-4 epochs), as separate rows.
--extrapolate K,... also trains, on 1 rank, the global batch B x K that --batch-per-rank B gives
on K ranks (for a given global batch the model does not depend on the rank count), so the
epochs and accuracy of larger batches than this machine has cores for can be seen; their
times mean nothing and are not reported.

Prints markdown tables and writes the raw numbers (every run's command and per-epoch test
accuracy) to --out (default out/bench/time_to_accuracy.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, bench_env  # noqa: E402

RECIPES = ("fixed", "linear", "sqrt", "none")


def recipe_flags(recipe, n, batch, lr, warmup):
    """(mpinn train flags, global batch, lr used, warm-up epochs) of a recipe at n ranks."""
    if recipe == "fixed":
        return ["--batch-size", str(batch), "--lr", repr(lr)], batch, lr, 0.0
    if recipe == "none":
        return ["--batch-per-rank", str(batch), "--lr", repr(lr)], batch * n, lr, 0.0
    scaled = lr * (n if recipe == "linear" else math.sqrt(n))
    flags = ["--batch-per-rank", str(batch), "--lr", repr(scaled)]
    if warmup:
        flags += ["--warmup-epochs", repr(warmup)]
    return flags, batch * n, scaled, warmup


def run_train(a, n, flags, metrics):
    cmd = (["timeout", str(a.timeout), a.mpiexec, "-n", str(n), a.mpinn, "train", "--data", a.data]
           + flags + ["--metrics", str(metrics), "--json", "--quiet",
                      "--scale", "none"])  # raw features: the runs docs/performance.md reports
    if Path(metrics).exists():
        Path(metrics).unlink()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=bench_env(threads=1), capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    summary = None
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            try:
                summary = json.loads(line)
            except ValueError:
                pass
    records = []
    if Path(metrics).exists():
        records = [r for r in (json.loads(l) for l in Path(metrics).read_text().splitlines() if l.strip()) if "epoch" in r]
    return {"cmd": cmd, "returncode": proc.returncode, "wall": wall, "summary": summary,
            "records": records, "stderr": proc.stderr[-2000:] if proc.returncode else ""}


def measure(a, n, flags, tmp, wall=True):
    """One (command, seed): epochs/seconds to the target, final accuracy, wall to the target."""
    metrics = Path(tmp) / "m.jsonl"
    full = run_train(a, n, flags + ["--epochs", str(a.epochs), "--n-iter-no-change", str(10**6)], metrics)
    recs = full["records"]
    out = {"command": shlex.join(full["cmd"][2:]), "returncode": full["returncode"],
           "stop_reason": (full["summary"] or {}).get("stop_reason"), "epochs_run": len(recs),
           "process_wall_full": full["wall"], "train_seconds_full": sum(r["seconds"] for r in recs),
           "final_test_accuracy": recs[-1].get("test_accuracy") if recs else None,
           "accuracy_per_epoch": [r.get("test_accuracy") for r in recs],
           "loss_per_epoch": [r.get("loss") for r in recs],
           "diverged": (full["summary"] or {}).get("stop_reason") == "diverged"
           or (len(recs) > 1 and not recs[-1]["loss"] <= recs[0]["loss"]),
           "epochs_to_target": None, "train_seconds_to_target": None, "wall_to_target": None}
    if full["returncode"]:
        out["stderr"] = full["stderr"]
    hit = next((i for i, r in enumerate(recs) if (r.get("test_accuracy") or 0) >= a.target), None)
    if hit is None:
        return out
    out["epochs_to_target"] = hit + 1
    out["train_seconds_to_target"] = sum(r["seconds"] for r in recs[:hit + 1])
    if not wall:
        return out
    short = run_train(a, n, flags + ["--epochs", str(hit + 1), "--n-iter-no-change", str(10**6)], metrics)
    same = bool(short["records"]) and short["records"][-1].get("test_accuracy") == recs[hit].get("test_accuracy")
    out["wall_to_target"] = short["wall"] if short["returncode"] == 0 else None
    out["wall_run_reproduced"] = same
    return out


def row_of(a, cache, tmp, common, seeds, solver, base_lr, recipe, n, as_ranks, flags, gbatch, lr_used, warm,
           started, wall):
    """Run (or reuse: same ranks, solver, seed, global batch, lr, warm-up) one recipe for every seed."""
    runs = []
    for seed in seeds:
        key = (n, solver, seed, gbatch, lr_used, warm)
        if key not in cache or (wall and "wall_run_reproduced" not in cache[key]
                                and cache[key]["epochs_to_target"] is not None):
            cache[key] = measure(a, n, common + ["--solver", solver, "--seed", str(seed)] + flags, tmp, wall)
            cache[key]["seed"] = seed
        runs.append(cache[key])
    row = {"solver": solver, "base_lr": base_lr, "recipe": recipe, "ranks": n, "as_ranks": as_ranks,
           "global_batch": gbatch, "lr": lr_used, "warmup_epochs": warm, "runs": runs,
           "reached": sum(r["epochs_to_target"] is not None for r in runs),
           "diverged": sum(r["diverged"] for r in runs),
           "failed_runs": sum(r["returncode"] != 0 for r in runs),
           "epochs_to_target": median_or_none([r["epochs_to_target"] for r in runs]),
           "train_seconds_to_target": median_or_none([r["train_seconds_to_target"] for r in runs]),
           "wall_to_target": median_or_none([r["wall_to_target"] for r in runs]),
           "final_test_accuracy": median_or_none([r["final_test_accuracy"] for r in runs])}
    print(f"  {solver} lr {base_lr:g} {recipe:6s} N={n} (batch {gbatch}): epochs {fmt(row['epochs_to_target'])}, "
          f"{fmt(row['train_seconds_to_target'], 3)} s, wall {fmt(row['wall_to_target'])} s "
          f"({time.perf_counter() - started:.0f} s elapsed)", file=sys.stderr, flush=True)
    return row


def median_or_none(values):
    """Median with a run that missed the target counted as infinitely slow; None if that is the median."""
    vals = sorted(math.inf if v is None else v for v in values)
    if not vals:
        return None
    m = statistics.median(vals)
    return None if math.isinf(m) else m


def fmt(x, digits=2):
    if x is None:
        return "—"
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}f}"


def floats(text):
    return [float(v) for v in text.split(",") if v]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT / "out" / "bench" / "digits.h5"),
                   help="HDF5 data (default out/bench/digits.h5, written with `mpinn data digits` if missing)")
    p.add_argument("--solvers", default="adam,sgd", help="comma-separated: adam, sgd (default adam,sgd)")
    p.add_argument("--adam-lr", default="0.001", help="adam base lr(s), comma-separated (default 0.001)")
    p.add_argument("--sgd-lr", default="0.001,0.01",
                   help="sgd (momentum 0.9) base lr(s), comma-separated (default 0.001,0.01)")
    p.add_argument("--ranks", default="1,2", help="comma-separated rank counts (default 1,2)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..K-1 (default 3); medians are reported")
    p.add_argument("--target", type=float, default=0.95, help="test accuracy to reach (default 0.95)")
    p.add_argument("--epochs", type=int, default=20, help="epochs of each run (default 20)")
    p.add_argument("--batch", type=int, default=64, help="--batch-size / --batch-per-rank (default 64)")
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="warm-up of linear and sqrt (default 1)")
    p.add_argument("--hidden", default="256,128", help="hidden layers (default 256,128)")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--timeout", type=float, default=60, help="seconds per mpiexec run (default 60)")
    p.add_argument("--extrapolate", default="4,16",
                   help="also run, on 1 rank, the global batches of --batch-per-rank on these rank counts "
                        "(epochs and accuracy only; default 4,16; '' for none)")
    p.add_argument("--no-wall", action="store_true", help="skip the second run that times the process to the target")
    p.add_argument("--mpiexec", default=str(Path(sys.executable).parent / "mpiexec"))
    p.add_argument("--mpinn", default=str(Path(sys.executable).parent / "mpinn"))
    p.add_argument("--out", default=str(ROOT / "out" / "bench" / "time_to_accuracy.json"))
    a = p.parse_args(argv)
    a.data = os.path.abspath(a.data)  # the runs start in the checkout, not in this directory

    started = time.perf_counter()
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    load_before = os.getloadavg()
    if not Path(a.data).exists():
        Path(a.data).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([a.mpinn, "data", "digits", a.data], check=True, capture_output=True, env=bench_env())
    configs = [(s, lr) for s in a.solvers.split(",") if s
               for lr in floats(a.adam_lr if s == "adam" else a.sgd_lr)]
    ranks = [int(n) for n in a.ranks.split(",")]
    extrapolate = [int(k) for k in a.extrapolate.split(",") if k]
    seeds = list(range(a.seeds))
    common = ["--test-fraction", repr(a.test_fraction), "--hidden", a.hidden]

    rows, extra, cache = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for solver, lr in configs:
            for n in ranks:
                for recipe in RECIPES:
                    flags, gbatch, lr_used, warm = recipe_flags(recipe, n, a.batch, lr, a.warmup_epochs)
                    rows.append(row_of(a, cache, tmp, common, seeds, solver, lr, recipe, n, n, flags, gbatch,
                                       lr_used, warm, started, wall=not a.no_wall))
            # Larger global batches than this machine has ranks for: on 1 rank, --batch-size B x k is the
            # global batch of --batch-per-rank B on k ranks (the model does not depend on the rank count for
            # a given global batch), so epochs and accuracy are those k ranks would get; times are not.
            for k in extrapolate:
                for recipe in ("linear", "sqrt", "none"):
                    flags, gbatch, lr_used, warm = recipe_flags(recipe, k, a.batch, lr, a.warmup_epochs)
                    flags = ["--batch-size", str(gbatch)] + flags[2:]
                    extra.append(row_of(a, cache, tmp, common, seeds, solver, lr, recipe, 1, k, flags, gbatch,
                                        lr_used, warm, started, wall=False))

    for solver, lr in configs:
        mine = [r for r in rows if (r["solver"], r["base_lr"]) == (solver, lr)]
        base = next((r for r in mine if r["recipe"] == "fixed" and r["ranks"] == 1), None)
        for r in mine:
            for what in ("train_seconds_to_target", "wall_to_target"):
                b = base[what] if base else None
                r["speedup_" + what] = b / r[what] if b and r[what] else None

    elapsed = time.perf_counter() - started
    report = {"date": date, "elapsed_seconds": elapsed, "load_average_before": load_before,
              "load_average_after": os.getloadavg(), "cpus": os.cpu_count(), "target": a.target,
              "args": vars(a), "argv": sys.argv[1:], "rows": rows, "larger_batches_on_one_rank": extra}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1))

    print(f"digits, {a.test_fraction:.0%} held out, hidden {a.hidden}, {a.epochs} epochs per run, target test "
          f"accuracy {a.target}, median of {len(seeds)} seed(s); {date}, {elapsed:.0f} s, load average "
          f"{load_before[0]:.2f} before, {report['load_average_after'][0]:.2f} after")
    print()
    print("| solver, base lr | recipe | N | global batch | lr | warm-up | reached | epochs to target "
          "| train s to target | wall s to target | final test acc | speedup (train s) | speedup (wall) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['solver']} {r['base_lr']:g} | {r['recipe']} | {r['ranks']} | {r['global_batch']} | "
              f"{r['lr']:.4g} | {fmt(r['warmup_epochs'], 0) if r['warmup_epochs'] else '—'} | "
              f"{r['reached']}/{len(r['runs'])} | {fmt(r['epochs_to_target'], 1)} | "
              f"{fmt(r['train_seconds_to_target'], 3)} | {fmt(r['wall_to_target'])} | "
              f"{fmt(r['final_test_accuracy'], 4)} | {fmt(r['speedup_train_seconds_to_target'])} | "
              f"{fmt(r['speedup_wall_to_target'])} |")
    if extra:
        print()
        print("Larger global batches, computed on 1 rank (what --batch-per-rank would give on k ranks; epochs only;")
        print("diverged: training loss at the end above the first epoch's, or stopped as diverged):")
        print()
        print("| solver, base lr | recipe | as ranks | global batch | lr | warm-up | reached | diverged "
              "| epochs to target | final test acc |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in extra:
            print(f"| {r['solver']} {r['base_lr']:g} | {r['recipe']} | {r['as_ranks']} | {r['global_batch']} | "
                  f"{r['lr']:.4g} | {fmt(r['warmup_epochs'], 0) if r['warmup_epochs'] else '—'} | "
                  f"{r['reached']}/{len(r['runs'])} | {r['diverged']}/{len(r['runs'])} | "
                  f"{fmt(r['epochs_to_target'], 1)} | {fmt(r['final_test_accuracy'], 4)} |")
    print()
    print(f"raw numbers: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
