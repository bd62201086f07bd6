"""mpinn.GridSearchCV across rank groups: 2 ranks vs 1, and dynamic vs round-robin allocation.

    python bench/search.py                 # ~4 minutes on 2 cores; tables + BENCH_JSON
    python bench/search.py --repeat 1 --epochs 10
    python bench/search.py --cases even,coordinator     # only these figures

On the digits data (1797 x 64, 10 classes; 3 stratified folds, adam, batch 64, --epochs
epochs, no early stop) it runs `mpiexec -n N python bench/search.py --worker CASE ...`, each
timing GridSearchCV.fit with refit=False on rank 0 between two barriers (start-up, data
loading and the refit excluded; the refit time is reported separately):

  even     8 candidates of one size (hidden 32; lr x alpha), 24 tasks: 1 rank vs 2 ranks in
           groups of 1 (dynamic). Target: 2 ranks >= 1.8x faster.
  skewed   4 candidates, alpha x hidden [16] or [512] (the expensive parameter varies
           fastest, as ParameterGrid orders sorted keys), 12 tasks whose costs differ >= 4x; on
           2 ranks in groups of 1, dynamic vs round-robin (task i on group i mod 2 takes
           4 small + 2 large, the other 2 small + 4 large). Target: dynamic <= 0.85x.
  skewed-more  the same with hidden [16] or [1024] (costs differ ~20x).
  balanced alpha x hidden [16], [64], [256]: round-robin happens to give each group the same
           work here; dynamic vs round-robin shows what the coordinator thread costs.

  pair     two independent 1-rank searches of the even grid at once: the most any 2-rank run of
           these tasks could gain on this machine (2 x alone / side by side).
  coordinator  what serving requests costs: on 2 ranks both ranks run the same fixed numpy
           work (an MLP's forward and backward matmuls) while rank 0 has no thread, a thread
           that polls with Iprobe and sleeps 1 ms backing off to 16 ms (what mpinn uses), one
           that always sleeps 1 ms, or a thread blocked in a receive (MPICH spins while it
           waits); seconds of the work on each rank.

Each figure is the best of --repeat runs (this machine is shared). Nothing here is asserted by
a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, bench_env, emit, parse  # noqa: E402

CASES = {
    "even": {"hidden_layer_sizes": [(32,)], "learning_rate_init": [0.001, 0.002, 0.005, 0.01],
             "alpha": [1e-4, 1e-2]},
    "skewed": {"alpha": [1e-4, 1e-2], "hidden_layer_sizes": [(16,), (512,)]},
    "balanced": {"alpha": [1e-4, 1e-2], "hidden_layer_sizes": [(16,), (64,), (256,)]},
    "skewed-more": {"alpha": [1e-4, 1e-2], "hidden_layer_sizes": [(16,), (1024,)]},
}


def worker(a):
    import warnings

    import numpy as np
    from mpi4py import MPI
    from sklearn.model_selection import StratifiedKFold

    import mpinn
    from mpinn.data.builtin import load_digits

    warnings.simplefilter("ignore")
    X, y, _ = load_digits()
    X = X / 16.0
    est = mpinn.MLPClassifier(max_iter=a.epochs, batch_size=64, tol=0, n_iter_no_change=10**6, random_state=0)
    search = mpinn.GridSearchCV(est, CASES[a.worker], cv=StratifiedKFold(3), refit=False,
                                group_size=a.group_size, allocation=a.allocation)
    comm = MPI.COMM_WORLD
    comm.Barrier()
    start = time.perf_counter()
    search.fit(X, y)
    comm.Barrier()
    seconds = time.perf_counter() - start
    res = search.cv_results_
    refit = None
    if a.refit:
        best = mpinn.MLPClassifier(**{**est.get_params(), **search.best_params_})
        comm.Barrier()
        t0 = time.perf_counter()
        best.fit(X, y)
        comm.Barrier()
        refit = time.perf_counter() - t0
    if comm.rank == 0:
        emit({"case": a.worker, "ranks": comm.size, "allocation": a.allocation, "seconds": seconds,
              "tasks": int(len(res["params"]) * search.n_splits_), "refit_seconds": refit,
              "task_seconds": float(np.sum(res["mean_fit_time"] + res["mean_score_time"]) * search.n_splits_),
              "mean_test_score": res["mean_test_score"].tolist(), "mean_fit_time": res["mean_fit_time"].tolist()})


def coordinator_worker(a):
    """Rank 0's work with each kind of coordinator thread beside it (see the module docstring)."""
    import threading

    import numpy as np
    from mpi4py import MPI

    comm = MPI.COMM_WORLD.Dup()
    rng = np.random.default_rng(0)
    X, W1, W2 = rng.standard_normal((64, 64)), rng.standard_normal((64, 128)), rng.standard_normal((128, 10))

    def work():
        for _ in range(a.work):
            H = np.maximum(X @ W1, 0)
            G = (H @ W2) @ W2.T
            G.T @ X  # noqa: B018 - the backward matmuls' shapes, result unused

    out = {}
    for kind in ("none", "poll", "poll-1ms", "blocking"):
        stop = threading.Event()

        def serve():
            if kind.startswith("poll"):
                pause = 0.001
                while not stop.is_set():
                    if comm.Iprobe(source=MPI.ANY_SOURCE, tag=5):
                        break
                    time.sleep(pause)
                    if kind == "poll":  # mpinn's coordinator: back off to 16 ms while no request comes
                        pause = min(2 * pause, 0.016)
            else:
                comm.Recv(np.empty(1), source=MPI.ANY_SOURCE, tag=5)

        thread = threading.Thread(target=serve, daemon=True) if comm.rank == 0 and kind != "none" else None
        comm.Barrier()
        if thread:
            thread.start()
        start = time.perf_counter()
        work()
        seconds = time.perf_counter() - start
        if kind == "blocking" and comm.rank == 0:
            comm.Send(np.zeros(1), dest=0, tag=5)  # release the blocked receive
        stop.set()
        if thread:
            thread.join()
        out[kind] = comm.gather(seconds, root=0)
    if comm.rank == 0:
        emit({"case": "coordinator", "seconds": out})


IDLE = []  # CPU idle fraction seen before each run


def wait_idle(seconds):
    """Wait (up to ``seconds``) until the CPUs are >= 90 % idle twice in a row: the machine is shared."""
    def idle(interval=0.5):
        def read():
            with open("/proc/stat") as fh:
                v = [int(x) for x in fh.readline().split()[1:]]
            return v[3] + v[4], sum(v)
        i0, t0 = read()
        time.sleep(interval)
        i1, t1 = read()
        return (i1 - i0) / max(t1 - t0, 1)

    deadline, quiet = time.monotonic() + seconds, 0
    while True:
        value = idle()
        quiet = quiet + 1 if value >= 0.9 else 0
        if quiet >= 2 or time.monotonic() > deadline:
            IDLE.append(round(value, 2))
            return
        time.sleep(1.0)


def launch(a, cmd):
    if a.wait_idle:
        wait_idle(a.wait_idle)
    return subprocess.run(cmd, capture_output=True, text=True, env=bench_env(), cwd=ROOT, timeout=1800)


def worker_command(ranks, *args):
    """`mpiexec -n RANKS python bench/search.py --worker ...`."""
    launcher = os.environ.get("MPINN_MPIEXEC")  # shell words: a quoted path may hold spaces
    mpiexec = shlex.split(launcher) if launcher else [str(Path(sys.executable).parent / "mpiexec")]
    return [*mpiexec, "-n", str(ranks), sys.executable, __file__, "--worker", *map(str, args)]


def repeated(a, cmd):
    """The parsed outputs of --repeat runs of ``cmd``; None if a run failed (reported)."""
    outs = []
    for _ in range(a.repeat):
        proc = launch(a, cmd)
        out = parse(proc.stdout) if proc.returncode == 0 else None
        if out is None:
            print(f"  ! failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}", file=sys.stderr)
            return None
        outs.append(out)
    return outs


def measure(a, case, ranks, allocation, refit=False):
    """Best of --repeat runs of one configuration (wall seconds of the search on rank 0)."""
    outs = repeated(a, worker_command(ranks, case, "--allocation", allocation, "--epochs", a.epochs,
                                      *(["--refit"] if refit else [])))
    return min(outs, key=lambda out: out["seconds"]) if outs else None


FIGURES = ("even", "pair", "skewed", "skewed-more", "balanced", "coordinator")


def run_all(a):
    res = {"epochs": a.epochs, "repeat": a.repeat, "load_average_start": os.getloadavg()}
    cases = a.cases.split(",")
    if "even" in cases:
        res["even_1"] = measure(a, "even", 1, "dynamic", refit=True)
        res["even_2"] = measure(a, "even", 2, "dynamic", refit=True)
    if "pair" in cases:
        res["even_pair"] = measure_pair(a)
    for case in ("skewed", "skewed-more", "balanced"):
        if case in cases:
            for allocation in ("dynamic", "round-robin"):
                res[f"{case}_{allocation}"] = measure(a, case, 2, allocation)
    if "coordinator" in cases:
        res["coordinator"] = measure_coordinator(a)
    res["load_average_end"] = os.getloadavg()
    res["idle_before_each_run"] = IDLE
    return res


def measure_pair(a):
    """Two independent 1-rank searches of the even grid at the same time: what two processes on
    this machine can do side by side, the ceiling of any 2-rank speedup of these tasks."""
    cmd = worker_command(1, "even", "--epochs", a.epochs)
    best = None
    for _ in range(a.repeat):
        if a.wait_idle:
            wait_idle(a.wait_idle)
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=bench_env(),
                                  cwd=ROOT) for _ in range(2)]
        outs = [parse(p.communicate(timeout=1800)[0]) for p in procs]
        if any(o is None for o in outs):
            return None
        slowest = max(o["seconds"] for o in outs)
        best = slowest if best is None else min(best, slowest)
    return best


def measure_coordinator(a):
    """Per-slot best of --repeat runs of the coordinator-cost worker."""
    outs = repeated(a, worker_command(2, "coordinator", "--work", a.work))
    if not outs:
        return None
    return {k: [min(values) for values in zip(*(out["seconds"][k] for out in outs))] for k in outs[0]["seconds"]}


def ratio(x, y):
    return x["seconds"] / y["seconds"] if x and y else None


def table(res):
    """Markdown lines: the runs, then the two targets."""
    lines = ["| case | ranks | allocation | tasks | search s | refit s |", "|---|---|---|---|---|---|"]
    for key in ("even_1", "even_2", "skewed_dynamic", "skewed_round-robin", "skewed-more_dynamic",
                "skewed-more_round-robin", "balanced_dynamic", "balanced_round-robin"):
        r = res.get(key)
        if r:
            refit = f"{r['refit_seconds']:.2f}" if r.get("refit_seconds") else "-"
            lines.append(f"| {r['case']} | {r['ranks']} | {r['allocation']} | {r['tasks']} | {r['seconds']:.2f} | "
                         f"{refit} |")
    speedup = ratio(res.get("even_1"), res.get("even_2"))
    skew = ratio(res.get("skewed_dynamic"), res.get("skewed_round-robin"))
    even = ratio(res.get("balanced_dynamic"), res.get("balanced_round-robin"))
    same = all(res.get(k) and res[k]["mean_test_score"] == res[f"{k.split('_')[0]}_dynamic"]["mean_test_score"]
               for k in ("skewed_round-robin", "balanced_round-robin"))
    idle = res.get("idle_before_each_run") or []
    if idle:
        lines += ["", f"CPU idle before each of the {len(idle)} runs: min {min(idle):.2f}, "
                      f"{sum(1 for x in idle if x < 0.9)} started with the machine < 90 % idle"]
    lines += ["", "| target | needs | measured | met |", "|---|---|---|---|"]
    lines.append(f"| even grid, 2 ranks (groups of 1) / 1 rank, speedup | >= 1.8 | {_f(speedup)} | "
                 f"{_met(speedup, 1.8)} |")
    if res.get("even_pair") and res.get("even_1"):
        ceiling = 2 * res["even_1"]["seconds"] / res["even_pair"]
        res["pair_ceiling"] = ceiling
        lines.append(f"| ceiling: 2 x one 1-rank search / two 1-rank searches run at once | - | {_f(ceiling)} | - |")
    fit = (res.get("skewed_round-robin") or {}).get("mean_fit_time")
    if fit:
        lines.append(f"| skewed grid: slowest / fastest candidate's mean fit time | >= 4 | {_f(max(fit) / min(fit))} | "
                     f"{_met(max(fit) / min(fit), 4)} |")
    lines.append(f"| skewed grid, dynamic / round-robin wall time | <= 0.85 | {_f(skew)} | "
                 f"{_met(skew, 0.85, le=True)} |")
    if fit:
        ideal = assignment_ratio(fit, 3, 2)
        lines.append(f"| skewed grid, the same from its measured task times (LPT / i mod 2, no contention) | - | "
                     f"{_f(ideal)} | - |")
    more = ratio(res.get("skewed-more_dynamic"), res.get("skewed-more_round-robin"))
    fit = (res.get("skewed-more_round-robin") or {}).get("mean_fit_time")
    if fit:
        lines.append(f"| skewed-more grid (hidden 1024): cost ratio; dynamic / round-robin | - | "
                     f"{_f(max(fit) / min(fit))}; {_f(more)} | - |")
    lines.append(f"| balanced grid, dynamic / round-robin (coordinator cost) | - | {_f(even)} | - |")
    lines.append(f"| same cv_results_ scores with both allocations | yes | {'yes' if same else 'no'} | - |")
    co = res.get("coordinator")
    if co:
        lines += ["", "| rank 0's coordinator thread | rank 0 work s | rank 1 work s | rank 0 / no thread |",
                  "|---|---|---|---|"]
        for kind, label in (("none", "none"), ("poll", "Iprobe, sleep 1 ms backing off to 16 ms (mpinn)"),
                            ("poll-1ms", "Iprobe, sleep 1 ms"), ("blocking", "blocking receive")):
            lines.append(f"| {label} | {co[kind][0]:.2f} | {co[kind][1]:.2f} | {co[kind][0] / co['none'][0]:.2f} |")
    res["speedup"], res["dynamic_over_round_robin"], res["balanced_ratio"] = speedup, skew, even
    return lines


def assignment_ratio(mean_fit_time, n_splits, groups):
    """Makespan of longest-first to the least loaded group over that of task i on group i mod G,
    for tasks lasting their candidate's measured mean fit time: what allocation alone can gain."""
    times = [t for t in mean_fit_time for _ in range(n_splits)]
    rr = [sum(times[g::groups]) for g in range(groups)]
    load = [0.0] * groups
    for t in sorted(times, reverse=True):
        load[load.index(min(load))] += t
    return max(load) / max(rr)


def _f(v):
    return "-" if v is None else f"{v:.2f}"


def _met(v, need, le=False):
    if v is None:
        return "-"
    return "yes" if (v <= need if le else v >= need) else "NO"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", choices=[*sorted(CASES), "coordinator"], help=argparse.SUPPRESS)
    p.add_argument("--work", type=int, default=20000, help="coordinator case: matmul rounds per rank (default 20000)")
    p.add_argument("--allocation", default="dynamic", help=argparse.SUPPRESS)
    p.add_argument("--group-size", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--refit", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cases", default=",".join(FIGURES),
                   help=f"figures to measure, comma-separated (default all: {','.join(FIGURES)})")
    p.add_argument("--epochs", type=int, default=40, help="epochs per fit (default 40)")
    p.add_argument("--repeat", type=int, default=2, help="runs per figure, best kept (default 2)")
    p.add_argument("--wait-idle", type=float, default=120,
                   help="before each run wait up to this many seconds for the CPUs to be idle (0: don't)")
    p.add_argument("--out", default=str(ROOT / "out" / "bench" / "search.json"))
    a = p.parse_args(argv)
    unknown = set(a.cases.split(",")) - set(FIGURES)
    if unknown:
        p.error(f"--cases: unknown {', '.join(sorted(unknown))} (choose from {', '.join(FIGURES)})")
    if a.worker == "coordinator":
        return coordinator_worker(a)
    if a.worker:
        return worker(a)
    res = run_all(a)
    lines = table(res)
    print("\n".join(lines), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    emit(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
