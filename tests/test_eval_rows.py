"""`mpinn eval` scores the rows the training held out (the checkpoint records the
--test-fraction split), so it repeats the training summary's test metrics; `--rows` chooses.

The first test runs `make run` itself, from a directory whose path holds a space."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from launch import TIMEOUT, clean_env, run
from mpinn.train.checkpoint import recorded_split

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parents[1]
METRICS = ("accuracy", "f1_macro", "precision_macro", "recall_macro")


def text_blocks(text):
    return "\n".join(re.findall(r"^```text\n(.*?)^```", text, re.S | re.M))


def test_make_run_from_a_path_with_a_space_evaluates_the_test_rows(tmp_path):
    """`make run` in "dir with space/" (the Makefile, config files and a link to this venv),
    the venv taken as installed (-o): its eval prints the summary's test metrics, as README shows."""
    work = tmp_path / "dir with space"
    work.mkdir()
    shutil.copy(ROOT / "Makefile", work)
    for name in ("setup.cfg", "pyproject.toml"):
        (work / name).touch()
    (work / ".venv").symlink_to(VENV)
    env = {k: v for k, v in clean_env().items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MPIEXEC", "MPINN_MPIEXEC", "MPIEXEC_FLAGS", "NP", "OUT")}
    # The launcher this suite runs with: its flags (e.g. --oversubscribe under Open MPI), and a
    # site MPI's mpiexec when it is not the venv's (then the Makefile's own path is not used).
    launcher, *flags = shlex.split(os.environ.get("MPINN_MPIEXEC", "")) or [str(VENV / "bin" / "mpiexec")]
    site = [] if Path(shutil.which(launcher) or launcher).resolve() == (VENV / "bin" / "mpiexec").resolve() \
        else ["MPI=site", f"MPIEXEC={launcher}"]
    proc = subprocess.run(["make", "-o", ".venv/.installed", "run", f"MPIEXEC_FLAGS={shlex.join(flags)}", *site],
                          cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    done = next(line for line in lines if line.startswith("done:"))
    summary = dict(re.findall(r"test_(\w+) ([\d.]+)", done))
    evaluation = lines[next(i for i, line in enumerate(lines) if " eval --model " in line) + 1:]  # after make's echo
    report = dict(line.split(": ", 1) for line in evaluation)
    assert report["rows"].startswith("test (30 of 150")
    for name in METRICS:
        assert report[name] == summary[name], (name, report[name], summary[name])
    # The same numbers at full precision: the last epoch's record against eval --json.
    last = json.loads((work / "out" / "iris-metrics.jsonl").read_text().splitlines()[-1])
    full = json.loads(run(["eval", "--model", work / "out" / "iris-checkpoints", "--data", work / "out" / "iris.h5",
                           "--json"]).stdout)
    assert {m: full[m] for m in METRICS} == {m: last[f"test_{m}"] for m in METRICS}
    # README shows what make run printed: the summary line and the start of the evaluation.
    readme = text_blocks((ROOT / "README.md").read_text())
    for line in [done] + evaluation[:5]:
        assert line in readme.splitlines(), f"README.md should show: {line}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalrows")
    run(["data", "iris", d / "iris.h5"])
    summary = json.loads(run(["train", "--data", d / "iris.h5", "--test-fraction", "0.3", "--seed", "7",
                              "--hidden", "5", "--epochs", "30", "--checkpoint", d / "ck", "--quiet",
                              "--json"]).stdout.splitlines()[-1])
    return d, summary


def eval_json(*args, np_=1):
    return json.loads(run(["eval", *map(str, args), "--json"], np_=np_).stdout)


def test_eval_defaults_to_the_held_out_rows(trained):
    d, summary = trained
    report = eval_json("--model", d / "ck", "--data", d / "iris.h5")
    assert report["rows"] == "test" and report["n_rows"] == 45  # ceil(0.3 * 150)
    assert {m: report[m] for m in METRICS} == {m: summary[f"test_{m}"] for m in METRICS}
    assert eval_json("--model", d / "ck", "--data", d / "iris.h5", "--rows", "test", np_=2) == report


def test_rows_train_and_test_against_an_independent_split(trained):
    """scikit-learn's train_test_split with the same seed and fraction picks the same rows."""
    from sklearn.model_selection import train_test_split

    import mpinn

    d, _ = trained
    with h5py.File(d / "iris.h5", "r") as f:
        X, y, names = f["X"][()], f["y"][()], json.loads(f.attrs["class_names"])
    train_rows, test_rows = train_test_split(np.arange(150), test_size=0.3, random_state=7)
    pred = mpinn.load(d / "ck").predict(X)
    truth = np.array(names)[y] if pred.dtype.kind in "US" else y  # predict gives names or codes
    for rows, which in ((train_rows, "train"), (test_rows, None)):
        report = eval_json("--model", d / "ck", "--data", d / "iris.h5", *(["--rows", which] if which else []))
        assert report["n_rows"] == len(rows)
        assert report["accuracy"] == pytest.approx(np.mean(pred[rows] == truth[rows]), abs=1e-15)


def test_without_a_split_or_on_another_file(trained, tmp_path):
    d, _ = trained
    # Another file (here 100 rows): every row by default, and the line says why.
    with h5py.File(d / "iris.h5", "r") as f, h5py.File(tmp_path / "part.h5", "w") as g:
        g["X"], g["y"] = f["X"][:100], f["y"][:100]
    out = run(["eval", "--model", d / "ck", "--data", tmp_path / "part.h5"]).stdout
    assert out.splitlines()[0] == "rows: all (100; the model's --test-fraction split was of a 150-row file)"
    proc = run(["eval", "--model", d / "ck", "--data", tmp_path / "part.h5", "--rows", "test"], check=False)
    assert proc.returncode == 2 and proc.stderr == (
        f"mpinn: error: --rows test: {tmp_path / 'part.h5'} has 100 rows, but the model's --test-fraction split "
        "was drawn over a file of 150 rows\n")
    # A model trained without --test-fraction.
    run(["train", "--data", d / "iris.h5", "--hidden", "4", "--epochs", "2", "--checkpoint", tmp_path / "ck",
         "--quiet"])
    assert eval_json("--model", tmp_path / "ck", "--data", d / "iris.h5")["n_rows"] == 150
    proc = run(["eval", "--model", tmp_path / "ck", "--data", d / "iris.h5", "--rows", "train"], check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "--rows train: the model was trained without --test-fraction" in proc.stderr


def test_regression_eval_repeats_the_test_metrics(tmp_path):
    run(["data", "synthetic", tmp_path / "r.h5", "--samples", "200", "--features", "4", "--task", "regress"])
    summary = json.loads(run(["train", "--data", tmp_path / "r.h5", "--test-fraction", "0.25", "--hidden", "6",
                              "--epochs", "5", "--checkpoint", tmp_path / "ck", "--quiet", "--json"]
                             ).stdout.splitlines()[-1])
    report = eval_json("--model", tmp_path / "ck", "--data", tmp_path / "r.h5")
    assert report["rows"] == "test" and report["n_rows"] == 50
    for m in ("r2", "mse", "mae"):  # sums in another order: equal to rounding
        assert report[m] == pytest.approx(summary[f"test_{m}"], rel=1e-12, abs=1e-15)


def test_split_of_checkpoints_written_before_it_was_recorded():
    """Older checkpoints hold the same facts in config (fraction, seed) and model (n_rows)."""
    old = {"model": {"n_rows": 150}, "config": {"test_fraction": 0.2, "seed": 42}}
    assert recorded_split(old) == {"test_fraction": 0.2, "seed": 42, "n_rows": 150}
    assert recorded_split({"model": {"n_rows": 150}, "config": {"test_fraction": None, "seed": 0}}) is None


# Each rank scores only its own rows of the split (train/evaluation.chosen_rows), redrawn by
# split_rows; the reference below redraws the whole split with split_indices (O(n), one process)
# and scores those rows with the model's own predict and scikit-learn's metrics.
@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalkeyed")
    models = {}
    for task, extra in (("classify", ["--classes", "3"]), ("regress", ["--task", "regress"])):
        run(["data", "synthetic", d / f"{task}.h5", "--samples", "1001", "--features", "4", *extra])
        run(["train", "--data", d / f"{task}.h5", "--test-fraction", "0.37", "--seed", "5", "--permutation", "keyed",
             "--hidden", "6", "--epochs", "2", "--checkpoint", d / f"{task}-ck", "--quiet"])
        models[task] = (d / f"{task}.h5", d / f"{task}-ck")
    return models


def _reference(data, ck, which):
    from sklearn import metrics

    import mpinn
    from mpinn.data.schedule import split_indices

    with h5py.File(data, "r") as f:
        X, y = f["X"][()], f["y"][()]
    train, test = split_indices(len(X), 0.37, 5, "keyed")
    rows = np.sort(test if which == "test" else train)
    model = mpinn.load(ck)
    if hasattr(model, "classes_"):
        pred = model.predict(X[rows])
        return len(rows), {"accuracy": metrics.accuracy_score(y[rows], pred),
                           "f1_macro": metrics.f1_score(y[rows], pred, average="macro")}
    pred = model.predict(X[rows])
    return len(rows), {"r2": metrics.r2_score(y[rows], pred), "mse": metrics.mean_squared_error(y[rows], pred),
                       "mae": metrics.mean_absolute_error(y[rows], pred)}


@pytest.mark.parametrize("task", ["classify", "regress"])
def test_keyed_split_rows_on_1_2_3_ranks_equal_an_independent_split(keyed, task):
    data, ck = keyed[task]
    for which in ("test", "train"):
        n_rows, want = _reference(data, ck, which)
        for ranks in (1, 2, 3):
            report = eval_json("--model", ck, "--data", data, "--rows", which, np_=ranks)
            assert report["rows"] == which and report["n_rows"] == n_rows
            for name, value in want.items():
                assert report[name] == pytest.approx(value, rel=1e-12, abs=1e-12), (which, ranks, name)


COUNT_READS = """
import json, sys
from mpi4py import MPI
import mpinn.train.checkpoint as checkpoint
from mpinn.cli.app import main

ck, data, out = sys.argv[1:4]
reads = []
original = checkpoint.read_checkpoint
checkpoint.read_checkpoint = lambda *a, **k: reads.append(1) or original(*a, **k)
codes = [main(["eval", "--model", ck, "--data", data, "--json"]),
         main(["predict", "--model", ck, "--data", data, "--out", out])]
counts = MPI.COMM_WORLD.gather(len(reads))
if MPI.COMM_WORLD.rank == 0:
    print("READS", json.dumps({"codes": codes, "counts": counts}))
"""


def test_eval_and_predict_read_the_checkpoint_once_on_rank_0(keyed, tmp_path):
    """Under 3 ranks, eval and predict each read (and verify) the checkpoint once, on rank 0."""
    import subprocess

    from launch import mpiexec

    data, ck = keyed["classify"]
    script = tmp_path / "count.py"
    script.write_text(COUNT_READS)
    proc = subprocess.run([*mpiexec(), "-n", "3", sys.executable, str(script), str(ck), str(data),
                           str(tmp_path / "p.h5")], capture_output=True, text=True, timeout=TIMEOUT, env=clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("READS"))[6:])
    assert result == {"codes": [0, 0], "counts": [2, 0, 0]}
