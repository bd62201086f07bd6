"""Every script in bench/ runs once on a tiny configuration: it exits 0 and prints its usual output.

A smoke run's figures mean nothing, so no time is asserted; this only makes sure that a change to
mpinn cannot break a bench script unnoticed. Scripts meant for `mpiexec -n N python SCRIPT` are
launched so; the others start their own mpiexec. Each launch runs under a timeout in its own
process group, so that the mpiexec jobs a script starts are killed with it.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pytest

from launch import clean_env, mpiexec, run

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))
from common import parse  # noqa: E402  (the BENCH_JSON reader bench/run.py uses)

TIMEOUT = 120  # per script; the slowest takes a few seconds here
# The code before issue 21's changes, which three scripts run beside today's (git archive): present
# in a full clone; a shallow one runs them without the comparison.
BEFORE = "3b76c1d"
HAS_BEFORE = subprocess.run(["git", "cat-file", "-e", f"{BEFORE}^{{commit}}"], cwd=ROOT,
                            capture_output=True).returncode == 0

# Imported by the scripts rather than run; each is covered elsewhere.
LIBRARIES = {"common.py": "imported by every script below",
             "scaling_model.py": "tests/test_scaling_model.py checks its formulas"}


class Case(NamedTuple):
    args: tuple  # {data}, {prefix}, {run_out} and {tmp} are filled in from the fixtures
    prints: tuple = ()  # line prefixes it prints (table headers); a table is printed only when its run worked
    reports: tuple = ()  # BENCH_JSON keys that must hold a value (an orchestrator records a failed worker as null)
    ranks: int = 0  # 0: `python SCRIPT` (it starts its own mpiexec if it needs one); N: `mpiexec -n N python SCRIPT`
    needs: str = ""  # an optional module: the test is skipped only when it is missing
    check: Callable = None  # check(tmp_path): for a script that records a failed run instead of exiting non-zero


def every_train_run_worked(tmp_path):
    report = json.loads((tmp_path / "tta.json").read_text())
    runs = [r for row in report["rows"] + report["larger_batches_on_one_rank"] for r in row["runs"]]
    assert runs and all(r["returncode"] == 0 for r in runs), json.dumps(report, indent=1)[-3000:]


CASES = {
    "allreduce.py": Case(("--budget", "0.01"), reports=("rows",), ranks=2),
    # 2,048 rows, batch 512: 4 steps per epoch, so the dynamic run can move rows between its 2 epochs.
    "balance.py": Case(("--ranks", "2", "--rows", "2048", "--features", "8", "--epochs", "2", "--pairs", "1"),
                       prints=("| run | samples/s |", "moving ")),
    # Skips with one line where no Open MPI venv is (make test-elastic makes one and runs it there too).
    "elastic.py": Case(("--rows", "600", "--features", "8", "--hidden", "8", "--batch", "64", "--epochs", "2",
                        "--pairs", "1", "--syncs", "allreduce"), prints=()),
    # --before: the comparison with the code at 3b76c1d (git archive of this checkout) runs too.
    "eval_predict_memory.py": Case(("--rows", "400", "--features", "3", "--workdir", "{tmp}/evalpredict",
                                    *(("--before", BEFORE) if HAS_BEFORE else ()), "--compute"),
                                   prints=("| command | ranks | rank |", "| predict | 2 | 1 |", "predict: ",
                                           "predict's arithmetic alone: ",
                                           *((f"predict at 2 rank(s) vs {BEFORE} at 1 rank: equal",
                                              f"eval --rows test at 2 rank(s) vs {BEFORE} at 1 rank: largest metric "
                                              "difference 0") if HAS_BEFORE else ()))),
    # Rows on the rank above --max-per-rank and the code before above --before-max: by formula.
    "eval_predict_model.py": Case(("--sizes", "1000,3000", "--ranks", "1,3", "--max-per-rank", "1500",
                                   "--before-max", "1000", *(() if HAS_BEFORE else ("--before", ""))),
                                  prints=("| part | n | N |", "| eval | 3e+03 | 1 |", "| predict | 3e+03 | 3 |",
                                          "| predict: n |")),
    "search_memory.py": Case(("--rows", "400", "--features", "3", "--workdir", "{tmp}/searchmemory",
                              *(("--before", BEFORE) if HAS_BEFORE else ())),
                             prints=("| code | ranks | rank |", "| now | 2 | 1 |", "now: largest rank's memory ",
                                     "now: 2 ranks vs 1 rank, largest score difference 0",
                                     *((f"now vs {BEFORE} at 2 rank(s): largest score difference 0",)
                                       if HAS_BEFORE else ()))),
    "fused_adam.py": Case(("--sizes", "8,4,2", "--reps", "2"), reports=("adam float32", "sgd float64"), needs="numba"),
    "gemm_limit.py": Case(("--mpi", "--sizes", "16,8,4", "--batch", "8", "--seconds", "0.01", "--rounds", "1"),
                          reports=("samples_per_second",), ranks=2),
    "halving_warm.py": Case(("--quick", "--repeat", "1"), prints=("search ", "warm_start_promoted=True "),
                            reports=("epochs_warm", "max_difference")),
    "io_read.py": Case(("--data", "{data}", "--ranks", "2", "--repeat", "1"), reports=("cold_numpy_GBps",)),
    "lbfgs_reduction.py": Case(("--rows", "256", "--features", "8", "--hidden", "4", "--iters", "2", "--repeats", "1",
                                "--ranks", "1,2"), prints=("| ranks | tree s/iter |", "| 2 |")),
    # --k 2: its four variants at 2 ranks (allreduce, local:2, with warm-up, own Adam moments).
    "local_sgd.py": Case(("--data", "{data}", "--ranks", "2", "--k", "2", "--warmup-steps", "1", "--seeds", "1",
                          "--epochs", "1", "--batch", "32", "--hidden", "8", "--out", "{tmp}/local_sgd.json"),
                         prints=("| N | sync |", "| 2 | local:2, own Adam moments |")),
    "numba_startup.py": Case(("--processes", "2", "--repeat", "1"), prints=("| run | cache |", "| 1 | written |"),
                             needs="numba"),
    "predict_output.py": Case(("--ranks", "2", "--rows", "1000", "--round", "64", "--repeat", "1", "--dir", "{tmp}/po"),
                              prints=("| way | seconds |", "| offsets |", "| virtual |", "| gather |")),
    "predict_memory.py": Case(("--rows", "100,300", "--features", "4", "--ranks", "2", "--workdir", "{tmp}/predict"),
                              prints=("| rows | rank 0 peak RSS MB |", "| 300 |")),
    # io: one launch. The other sections launch 4 to ~30 jobs each, or time fixed budgets (mpi: ~7 s).
    # Its data() writes nothing: the fixture has put tiny files where it would write ~1.2 GB.
    "run.py": Case(("--only", "io", "--out", "{run_out}", "--wait-idle", "0", "--repeat", "1"),
                   prints=("| page cache |", "wrote ")),
    "scaling_parts.py": Case(("--budget", "0.001", "--rounds", "1", "--max-rows", "2", "--steps", "1",
                              "--max-ranks", "2"), reports=("compute", "update", "collectives", "in_situ"), ranks=2),
    "schedule_memory.py": Case(("--ranks", "2", "--sizes", "1000", "--batch-per-rank", "10"),
                               prints=("| n | permutation |", "| 1e+03 | keyed |")),
    "search.py": Case(("--cases", "even,coordinator", "--epochs", "1", "--repeat", "1", "--work", "10",
                       "--wait-idle", "0", "--out", "{tmp}/search.json"),
                      reports=("even_1", "even_2", "coordinator"), needs="sklearn"),
    # --sync shm: every part it wraps, the shared-memory ones included.
    "step_parts.py": Case(("--data", "{data}", "--hidden", "8", "--batch", "16", "--sync", "shm"),
                          reports=("ms_per_step",), ranks=2),
    # --target 0: reached at once, so the second (wall-time) run of each recipe runs too.
    "time_to_accuracy.py": Case(("--data", "{data}", "--solvers", "adam", "--ranks", "1", "--seeds", "1",
                                 "--epochs", "1", "--target", "0", "--extrapolate", "2", "--hidden", "8",
                                 "--batch", "32", "--out", "{tmp}/tta.json"),
                                prints=("| solver, base lr | recipe | N |", "| solver, base lr | recipe | as ranks |"),
                                check=every_train_run_worked),
    "train_mpinn.py": Case(("--data", "{data}", "--hidden", "8", "--batch", "16", "--epochs", "2"),
                           reports=("samples_per_second", "per_rank"), ranks=2),
    "train_sklearn.py": Case(("--prefix", "{prefix}", "--hidden", "4", "--batch", "16", "--epochs", "2"),
                             reports=("samples_per_second",), needs="sklearn"),
    "train_torch.py": Case(("--prefix", "{prefix}", "--hidden", "4", "--batch", "16", "--epochs", "2"),
                           reports=("samples_per_second",), needs="torch"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny inputs: an HDF5 file, the .npy pair of the sklearn/torch scripts, bench/run.py's --out."""
    tmp = tmp_path_factory.mktemp("bench")
    data = tmp / "data.h5"
    run(["data", "synthetic", data, "--samples", 200, "--features", 8, "--classes", 3])
    rng = np.random.default_rng(0)
    np.save(tmp / "xy_X.npy", rng.standard_normal((64, 8)).astype(np.float32))
    np.save(tmp / "xy_y.npy", np.arange(64) % 3)
    from mpinn.data.builtin import make_synthetic, write_hdf5

    run_out = tmp / "run"
    run_out.mkdir()
    for name, features in (("big", 784), ("small", 64)):  # the names and widths bench/run.py's data() uses
        X, y = make_synthetic(64, features, 10, seed=0)
        X = X.astype(np.float32)
        write_hdf5(run_out / f"{name}.h5", X, y)
        np.save(run_out / f"{name}_X.npy", X)
        np.save(run_out / f"{name}_y.npy", y)
    shutil.copyfile(run_out / "big.h5", run_out / "big4x.h5")  # data() only checks that it exists
    return {"data": data, "prefix": tmp / "xy", "run_out": run_out}


def run_script(cmd, env, cwd):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the script and every mpiexec job it started
        out, err = proc.communicate()
        pytest.fail(f"{cmd} did not finish in {TIMEOUT} s\n{out[-3000:]}\n{err[-3000:]}")
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{out[-3000:]}\n{err[-3000:]}"
    return out, err


def test_every_bench_script_is_covered():
    # A new script in bench/ needs a case here (or a line in LIBRARIES).
    assert {p.name for p in BENCH.glob("*.py")} == set(CASES) | set(LIBRARIES)


@pytest.mark.long  # ~100 s for all of them: make test-long (CI) runs them
@pytest.mark.parametrize("script", sorted(CASES))
def test_bench_script_runs(script, files, tmp_path):
    case = CASES[script]
    if case.needs:
        pytest.importorskip(case.needs)
    args = [a.format(tmp=tmp_path, **files) for a in case.args]
    cmd = [sys.executable, str(BENCH / script), *args]
    if case.ranks:
        cmd = [*mpiexec(), "-n", str(case.ranks), *cmd]
    # MPINN_NUMBA=0: loading numba costs each process about a second (tests/test_fused.py covers
    # the kernels); fused_adam.py is about them. TMPDIR: balance.py's mkdtemp lands in tmp_path.
    env = clean_env(OMP_NUM_THREADS=1, OPENBLAS_NUM_THREADS=1, MKL_NUM_THREADS=1, TMPDIR=tmp_path)
    if script != "fused_adam.py":
        env["MPINN_NUMBA"] = "0"
    out, err = run_script(cmd, env, cwd=tmp_path)
    lines = out.splitlines()
    for prefix in case.prints:
        assert any(line.startswith(prefix) for line in lines), f"no line starting {prefix!r}\n{out}\n{err[-3000:]}"
    if case.reports:
        result = parse(out)
        assert result is not None, f"no BENCH_JSON line\n{out}\n{err[-3000:]}"
        missing = [key for key in case.reports if result.get(key) is None]
        assert not missing, f"BENCH_JSON without {missing}\n{out[-3000:]}\n{err[-3000:]}"
    if case.check:
        case.check(tmp_path)
