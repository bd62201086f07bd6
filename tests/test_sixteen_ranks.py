"""16 ranks, oversubscribed on a small machine, give the 1-rank results: `mpinn train`, `eval`,
`predict` and a small `search` launched as users launch them, on the built-in iris data (150
rows: at 16 ranks a rank holds 9 or 10 rows, and 0 to 2 of the 30 test rows).

Start-up dominates at 16 ranks on 2 cores (`mpinn info` alone takes 3-6 s there, and the
search's 16 scikit-learn imports 20-30 s), so the search runs in `make test-long`."""

import csv
import json

import h5py
import numpy as np
import pytest

import mpinn
from launch import run

RANKS = 16
TOL = 1e-12
GRID = "hidden = [6]\nlr = [0.01, 0.05]\nepochs = 3\nbatch-size = 32\n"


def assert_close(a, b):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=0, atol=TOL)


def assert_same_model(a, b):
    for x, y in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_, strict=True):
        assert_close(x, y)
    assert_close(a.loss_curve_, b.loss_curve_)


def train_eval_predict(iris, d, n):
    d.mkdir()
    run(["train", "--data", iris, "--hidden", "6", "--solver", "adam", "--lr", "0.01", "--epochs", "5",
         "--batch-size", "32", "--seed", "5", "--test-fraction", "0.2", "--quiet", "--checkpoint", d / "ck"], np_=n)
    report = json.loads(run(["eval", "--model", d / "ck", "--data", iris, "--rows", "test", "--json"], np_=n).stdout)
    run(["predict", "--model", d / "ck", "--data", iris, "--out", d / "pred.h5"], np_=n)
    with h5py.File(d / "pred.h5") as f:
        pred = {name: f[name].asstr()[()] if name == "y_pred" else f[name][()] for name in f}
    return mpinn.load(d / "ck"), report, pred


@pytest.mark.long  # ~21 s of 16 oversubscribed start-ups: make test-long (CI) runs it
def test_train_eval_predict_on_16_ranks_equal_1_rank(iris, tmp_path):
    model, report, pred = train_eval_predict(iris, tmp_path / "1", 1)
    model16, report16, pred16 = train_eval_predict(iris, tmp_path / "16", RANKS)
    assert_same_model(model16, model)
    # eval --rows test: every metric; the counts exactly
    assert report16["n_rows"] == report["n_rows"] == 30
    assert report16["confusion"] == report["confusion"] and report16["support"] == report["support"]
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "precision", "recall", "f1"):
        assert_close(report16[key], report[key])
    # predict: every row; the labels exactly
    assert sorted(pred16) == sorted(pred) == ["proba", "y_pred", "y_pred_code"]
    assert len(pred16["y_pred"]) == 150
    np.testing.assert_array_equal(pred16["y_pred"], pred["y_pred"])
    np.testing.assert_array_equal(pred16["y_pred_code"], pred["y_pred_code"])
    assert_close(pred16["proba"], pred["proba"])


def search(iris, d, n):
    d.mkdir()
    (d / "grid.toml").write_text(GRID)
    run(["search", "--data", iris, "--grid", d / "grid.toml", "--cv", "3", "--stratified", "--scoring",
         "neg_log_loss,accuracy", "--group-size", 4 if n > 1 else 1, "--results", d / "search.csv"], np_=n)
    with open(d / "search.csv", newline="") as fh:
        return list(csv.DictReader(fh)), mpinn.load(d / "search-best")


@pytest.mark.long
def test_search_on_16_ranks_equals_1_rank(iris, tmp_path):
    """2 candidates x 3 folds on 4 groups of 4 ranks, then the refit on all 16."""
    pytest.importorskip("sklearn")
    table, best = search(iris, tmp_path / "1", 1)
    table16, best16 = search(iris, tmp_path / "16", RANKS)
    assert len(table16) == len(table) == 2
    scores = [k for k in table[0] if k.startswith(("mean_test_", "std_test_", "split"))]
    assert len(scores) == 10
    for row16, row in zip(table16, table):
        assert (row16["rank"], row16["candidate"], row16["lr"]) == (row["rank"], row["candidate"], row["lr"])
        assert_close([float(row16[k]) for k in scores], [float(row[k]) for k in scores])
    assert_same_model(best16, best)
