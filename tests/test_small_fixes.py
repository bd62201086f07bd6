"""What a new user meets on day one: --task auto by scikit-learn's type_of_target, eval's
precision, the note when a model will not be saved, export's errors and default file, a quiet
install, one ConvergenceWarning per job."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from launch import TIMEOUT, clean_env, command, run

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--hidden", "4", "--epochs", "2"]


def start_line(stdout):
    return next(line for line in stdout.splitlines() if line.startswith("mpinn ") and "rank(s)" in line)


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    """iris with float labels: all integral-valued, and with one 0.5 in the last row (which
    lives on the last rank)."""
    d = tmp_path_factory.mktemp("labels")
    run(["data", "iris", d / "iris.h5"])
    with h5py.File(d / "iris.h5", "r") as f:
        X, y = f["X"][()], f["y"][()].astype(np.float64)
    for name, values in (("codes", y), ("real", np.where(np.arange(150) == 149, 0.5, y))):
        with h5py.File(d / f"{name}.h5", "w") as f:
            f["X"], f["y"] = X, values
    return d


def test_float_labels_classify_under_auto(labels):
    from sklearn.utils.multiclass import type_of_target

    with h5py.File(labels / "codes.h5", "r") as f:
        assert f["y"].dtype == np.float64 and type_of_target(f["y"][()]) == "multiclass"
    proc = run(["train", "--data", labels / "codes.h5", *TRAIN, "--checkpoint", labels / "ck", "--json"])
    assert "rank(s), classify (auto: float labels, all integral-valued), layers [4, 4, 3]" in start_line(proc.stdout)
    assert json.loads(proc.stdout.splitlines()[-1])["task"] == "classify"


def test_a_non_integral_value_regresses_and_says_so(labels):
    """At 2 ranks only rank 1 holds the 0.5: the decision is agreed, not rank 0's alone."""
    from sklearn.utils.multiclass import type_of_target

    with h5py.File(labels / "real.h5", "r") as f:
        assert type_of_target(f["y"][()]) == "continuous"
    proc = run(["train", "--data", labels / "real.h5", *TRAIN, "--json"], np_=2)
    assert "rank(s), regress (auto: float targets, row 149 holds 0.5 (not an integer)), layers [4, 4, 1]" \
        in start_line(proc.stdout)
    assert json.loads(proc.stdout.splitlines()[-1])["task"] == "regress"


@pytest.mark.mpi(min_size=2)
def test_auto_task_is_agreed_by_all_ranks(world):
    from mpinn.parallel.comm import Comm
    from mpinn.data.hdf5 import DataInfo
    from mpinn.data.partition import make_shard
    from mpinn.train.problem import auto_task

    comm = Comm(world)
    n = 10 * world.size
    y = np.arange(n, dtype=np.float64) % 3
    info = DataInfo("y.h5", "X", "y", n, 1, [n], "float")
    shard = make_shard(n, world.rank, world.size, "block")
    assert auto_task(comm, info, y[shard.as_slice()], shard) == ("classify", "auto: float labels, all integral-valued")
    y[n - 2] = 2.25  # on the last rank only
    assert auto_task(comm, info, y[shard.as_slice()], shard) == (
        "regress", f"auto: float targets, row {n - 2} holds 2.25 (not an integer)")


def test_eval_prints_four_decimals_and_json_keeps_all(labels):
    out = run(["eval", "--model", labels / "ck", "--data", labels / "codes.h5"]).stdout
    report = json.loads(run(["eval", "--model", labels / "ck", "--data", labels / "codes.h5", "--json"]).stdout)
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    assert report["accuracy"] == np.trace(report["confusion"]) / 150  # JSON: every digit
    for key in ("accuracy", "f1_macro", "precision_macro", "recall_macro"):
        assert lines[key] == f"{report[key]:.4f}"
    assert json.loads(lines["recall"]) == [round(v, 4) for v in report["recall"]]


def test_train_without_checkpoint_says_the_model_is_not_saved(labels, tmp_path):
    note = ("mpinn: note: no --checkpoint: the trained model will not be saved "
            "(add --checkpoint DIR to keep it)\n")
    assert run(["train", "--data", labels / "codes.h5", *TRAIN]).stderr == note
    assert run(["train", "--data", labels / "codes.h5", *TRAIN, "--checkpoint", tmp_path / "ck"]).stderr == ""
    assert run(["train", "--data", labels / "codes.h5", *TRAIN, "--quiet"]).stderr == ""


def test_export_default_file_and_unwritable_directory(labels, tmp_path):
    # Default: the current directory, named after the checkpoint directory; not inside it.
    proc = run(["export", labels / "ck", "--format", "npz"], cwd=tmp_path)
    assert proc.stdout.startswith("wrote ck.npz (from ")
    assert (tmp_path / "ck.npz").is_file() and not list(labels.joinpath("ck").glob("*.npz"))
    # A directory that cannot be written: one line, exit 2 (as root, chmod does not stop
    # writes, but /sys refuses them).
    target = Path("/sys") if os.geteuid() == 0 else tmp_path / "ro"
    if os.geteuid() != 0:
        target.mkdir()
        target.chmod(0o555)
    proc = run(["export", labels / "ck", "--format", "npz", "-o", target / "m.npz"], check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"mpinn: error: export: cannot write {target / 'm.npz'} (")
    assert proc.stderr.count("\n") == 1 and not (target / "m.npz").exists()


def test_package_builds_without_setuptools_warnings(tmp_path):
    """setuptools' build_py on the package as setup.cfg declares it: no warning (mpinn._data
    used to be 'absent from the packages configuration'), and the iris CSV is included."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src)
    shutil.copytree(ROOT / "mpinn", src / "mpinn", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()", "-q", "build_py",
                           "--build-lib", str(tmp_path / "lib")], cwd=src, capture_output=True, text=True,
                          timeout=TIMEOUT, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr and "!!" not in proc.stderr, proc.stderr
    assert (tmp_path / "lib" / "mpinn" / "_data" / "iris.csv").is_file()


@pytest.mark.parametrize("python_flags", [[], ["-W", "default"]])  # a filter that shows every warning
def test_convergence_warning_is_printed_once_per_job(tmp_path, python_flags):
    script = tmp_path / "fit.py"
    script.write_text(textwrap.dedent("""
        import warnings
        import numpy as np
        import mpinn
        from mpi4py import MPI

        X = np.random.RandomState(0).normal(size=(40, 3))
        y = (X[:, 0] > 0).astype(int)
        for solver in ("adam", "lbfgs"):
            mpinn.MLPClassifier(hidden_layer_sizes=(3,), solver=solver, max_iter=2, random_state=0).fit(X, y)
        with warnings.catch_warnings(record=True) as caught:  # every rank still raises it
            warnings.simplefilter("always")
            mpinn.MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, random_state=0).fit(X, y)
        print(f"rank {MPI.COMM_WORLD.rank} caught {len(caught)}", flush=True)
    """))
    cmd = command([], np_=2)[:-1] + [sys.executable, *python_flags, str(script)]  # mpiexec -n 2 python fit.py
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=clean_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(re.findall(r"rank (\d) caught (\d)", proc.stdout)) == [("0", "1"), ("1", "1")], proc.stdout
    assert proc.stderr.count("ConvergenceWarning: Stochastic Optimizer") == 1, proc.stderr
    assert proc.stderr.count("ConvergenceWarning: lbfgs failed to converge") == 1, proc.stderr
    assert f"{script}:10: ConvergenceWarning" in proc.stderr  # points at the line that called fit


def test_a_warning_every_rank_raises_is_shown_once_yet_errors_everywhere(tmp_path):
    """errors.warnings_shown_by_rank0, which the CLI's main wraps every command in: shown by rank 0
    even under -W default; -W error still raises on every rank (no rank left waiting)."""
    script = tmp_path / "warn.py"
    script.write_text(textwrap.dedent("""
        import warnings
        from mpi4py import MPI
        from mpinn.errors import warnings_shown_by_rank0

        try:
            with warnings_shown_by_rank0(MPI.COMM_WORLD.rank):
                warnings.warn("raised by every rank")
        except UserWarning:
            print(f"rank {MPI.COMM_WORLD.rank} raised", flush=True)
    """))
    for flag, shown, raised in (("default", 1, []), ("error", 0, ["rank 0 raised", "rank 1 raised"])):
        cmd = command([], np_=2)[:-1] + [sys.executable, "-W", flag, str(script)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=clean_env(), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.count("UserWarning: raised by every rank") == shown, proc.stderr
        assert sorted(re.findall(r"rank \d raised", proc.stdout)) == raised, proc.stdout  # lines may interleave
