"""The CLI end to end, launched the way users launch it: `mpiexec -n N mpinn ...`.

Each launch runs under a timeout so a hang fails the test instead of blocking the suite.
"""

import json

import h5py
import numpy as np
import pytest

import mpinn
from launch import run


def test_classic_iris_example_distributed(iris, tmp_path):
    """The sklearn iris example (hidden 10, sgd, 1000 epochs), on 2 ranks."""
    proc = run(["train", "--data", iris, "--test-fraction", "0.2", "--hidden", "10", "--solver", "sgd",
                "--epochs", "1000", "--seed", "42", "--json", "--checkpoint", tmp_path / "ck",
                "--metrics", tmp_path / "m.jsonl", "--log-every", "100"], np_=2)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("epochs", "final_loss", "train_seconds", "samples_per_second", "ranks", "checkpoint",
                "test_accuracy"):
        assert key in summary
    assert summary["ranks"] == 2 and summary["epochs"] == 1000
    assert summary["test_accuracy"] >= 0.9
    # rank 0 alone prints: one start line, epoch lines 1, 100, ..., 1000, the done line, JSON.
    lines = proc.stdout.strip().splitlines()
    assert sum(line.startswith("epoch ") for line in lines) == 11
    config, *records = [json.loads(line) for line in open(tmp_path / "m.jsonl")]
    assert config["config"]["hidden"] == [10] and config["config"]["epochs"] == 1000 and config["ranks"] == 2
    assert [r["epoch"] for r in records] == list(range(1, 1001))
    assert records[-1]["loss"] == pytest.approx(summary["final_loss"], rel=1e-15)
    model = mpinn.load(summary["checkpoint"])
    assert [c.shape for c in model.coefs_] == [(4, 10), (10, 3)]
    assert model.loss_curve_[-1] == summary["final_loss"]


@pytest.mark.parametrize("shard", ["block", "strided", "weighted"])
def test_one_two_three_ranks_give_the_same_weights(iris, tmp_path, shard):
    models = {}
    for n in (1, 2, 3):
        spec = "weighted:" + ",".join(str(i + 2) for i in range(n)) if shard == "weighted" else shard
        run(["train", "--data", iris, "--hidden", "8,5", "--solver", "adam", "--lr", "0.01", "--epochs", "30",
             "--batch-size", "32", "--seed", "5", "--shard", spec, "--quiet", "--checkpoint", tmp_path / str(n)], np_=n)
        models[n] = mpinn.load(tmp_path / str(n))
    ref = models[1]
    for n in (2, 3):
        for a, b in zip(models[n].coefs_ + models[n].intercepts_, ref.coefs_ + ref.intercepts_):
            assert np.max(np.abs(a - b)) <= 1e-10 * np.max(np.abs(b))
        np.testing.assert_allclose(models[n].loss_curve_, ref.loss_curve_, rtol=1e-10)


def test_checkpoint_round_trip_predictions(iris, tmp_path):
    run(["train", "--data", iris, "--hidden", "6", "--epochs", "20", "--quiet", "--checkpoint", tmp_path / "ck"], np_=2)
    model = mpinn.load(tmp_path / "ck")
    latest = tmp_path / "ck" / "latest"
    # The pointer is as readable as the checkpoint it names (not a private 0600 temp file).
    assert latest.stat().st_mode & 0o777 == (tmp_path / "ck" / latest.read_text().strip()).stat().st_mode & 0o777
    with h5py.File(iris, "r") as f:
        X, y = f["X"][()], f["y"][()]
    run(["predict", "--model", tmp_path / "ck", "--data", iris, "--out", tmp_path / "pred.h5"], np_=3)
    with h5py.File(tmp_path / "pred.h5", "r") as f:
        names = np.array(["setosa", "versicolor", "virginica"])
        assert model.classes_.tolist() == names.tolist()  # the file's class names, not its codes
        np.testing.assert_array_equal(names[f["y_pred_code"][()]], model.predict(X))
        np.testing.assert_array_equal(f["y_pred"].asstr()[()], model.predict(X))
        np.testing.assert_array_equal(f["proba"][()], model.predict_proba(X))
    report = json.loads(run(["eval", "--model", tmp_path / "ck", "--data", iris, "--json"], np_=2).stdout)
    assert report["accuracy"] == pytest.approx(np.mean(model.predict(X) == names[y]))
    assert sum(map(sum, report["confusion"])) == 150


def test_regression_and_float32(tmp_path):
    data = tmp_path / "reg.h5"
    run(["data", "synthetic", data, "--samples", "400", "--features", "6", "--task", "regress", "--seed", "1"])
    proc = run(["train", "--data", data, "--test-fraction", "0.25", "--hidden", "16", "--lr", "0.01",
                "--epochs", "60", "--dtype", "float32", "--json", "--quiet", "--checkpoint", tmp_path / "ck"], np_=2)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["task"] == "regress" and "test_r2" in summary and summary["test_r2"] > 0.5
    assert mpinn.load(tmp_path / "ck").coefs_[0].dtype == np.float32


def test_info_names_the_mpi_library():
    out = run(["info"], np_=2).stdout
    assert "mpi_library:" in out and "ranks: 2" in out and out.count("mpinn:") == 1


@pytest.mark.parametrize("args,message", [
    (["--data", "missing.h5"], "data file not found: missing.h5"),
    (["--data", "IRIS", "--hidden", "10,x"], "--hidden: expected comma-separated integers"),
    (["--data", "IRIS", "--lr", "-1"], "--lr: must be > 0"),
    (["--data", "IRIS", "--momentum", "1.5"], "--momentum: must be in [0, 1]"),
    (["--data", "IRIS", "--activation", "swish"], "--activation: choose from"),
    (["--data", "IRIS", "--solver", "lbfgs"], "--solver: choose from"),
    (["--data", "IRIS", "--shard", "weighted:1,2,3"], "--shard: 3 weights given for 2 ranks"),
    (["--data", "IRIS", "--batch-size", "0"], "--batch-size: must be >= 1"),
    (["--data", "IRIS", "--y-name", "labels"], "no dataset 'labels' (datasets in file: X, y)"),
    (["--data", "IRIS", "--checkpoint", "/proc/nope"], "--checkpoint: directory /proc/nope is not writable"),
])
def test_bad_input_is_one_line_and_exit_2_on_every_rank(iris, tmp_path, args, message):
    args = [str(iris) if a == "IRIS" else a for a in args]
    keep = tmp_path / "keep.jsonl"
    keep.write_text("precious\n")
    proc = run(["train", *args, "--metrics", keep], np_=2, cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert keep.read_text() == "precious\n"


def test_regression_eval_with_a_rank_holding_no_test_rows(tmp_path):
    """A rank with no test rows (here rank 0 owns no rows at all) still joins the evaluation."""
    data = tmp_path / "reg.h5"
    run(["data", "synthetic", data, "--samples", "200", "--features", "4", "--task", "regress", "--seed", "2"])
    proc = run(["train", "--data", data, "--task", "regress", "--test-fraction", "0.2", "--shard", "weighted:0,1",
                "--epochs", "2", "--json", "--quiet"], np_=2)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["epochs"] == 2 and np.isfinite(summary["test_mse"])
