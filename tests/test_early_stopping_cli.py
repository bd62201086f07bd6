"""`mpinn train --early-stopping`: scikit-learn's rule (validation score, --n-iter-no-change, the
best weights restored), the same epochs and weights as the estimators with early_stopping=True,
on 1 and 2 ranks, also across a preemption and a resume on another rank count. Both hold out
their rows with mpinn.train.early_stopping.hold_out."""


import h5py
import numpy as np
import pytest

import mpinn
from launch import clean_env, run
from mpinn.train.config import TrainConfig
from mpinn.errors import InputError
from mpinn.train.logs import epoch_records

ESTIMATOR = dict(hidden_layer_sizes=(8,), learning_rate_init=0.01, max_iter=300, batch_size=32, random_state=1,
                 n_iter_no_change=5, early_stopping=True)
CLI = ["--hidden", "8", "--lr", "0.01", "--epochs", "300", "--batch-size", "32", "--seed", "1", "--n-iter-no-change",
       "5", "--scale", "none", "--quiet", "--early-stopping"]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    d = tmp_path_factory.mktemp("es")
    run(["data", "synthetic", d / "binary.h5", "--samples", "400", "--features", "6", "--classes", "2", "--seed", "2"])
    run(["data", "synthetic", d / "multiclass.h5", "--samples", "400", "--features", "6", "--classes", "3",
         "--seed", "2"])
    run(["data", "synthetic", d / "regress.h5", "--samples", "400", "--features", "6", "--task", "regress",
         "--seed", "2"])
    return d


def _estimator(path, fraction):
    with h5py.File(path) as f:
        X, y = f["X"][()], f["y"][()]
    cls = mpinn.MLPRegressor if "regress" in path.name else mpinn.MLPClassifier
    return cls(**ESTIMATOR, validation_fraction=fraction).fit(X, y)


def _assert_same(cli, est, metrics=None):
    assert len(cli.loss_curve_) == est.n_iter_ < ESTIMATOR["max_iter"]  # stopped early, at the same epoch
    assert int(np.argmax(est.validation_scores_)) < est.n_iter_ - 1  # so ending on the best weights matters
    diff = max(np.abs(a - b).max() for a, b in zip(cli.coefs_ + cli.intercepts_, est.coefs_ + est.intercepts_))
    assert diff <= 1e-12
    np.testing.assert_allclose(cli.validation_scores_, est.validation_scores_, rtol=0, atol=1e-12)
    if metrics is not None:
        scores = [r["validation_score"] for r in epoch_records(open(metrics))]
        np.testing.assert_allclose(scores, est.validation_scores_, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind,n,fraction", [("multiclass", 1, 0.1), ("binary", 2, 0.2), ("regress", 2, 0.1)])
def test_cli_early_stopping_is_the_estimator_s(datasets, tmp_path, kind, n, fraction):
    path = datasets / f"{kind}.h5"
    ck, metrics = tmp_path / "ck", tmp_path / "m.jsonl"
    run(["train", "--data", path, *CLI, "--validation-fraction", fraction, "--checkpoint", ck, "--metrics", metrics],
        np_=n)
    _assert_same(mpinn.load(ck), _estimator(path, fraction), metrics)


def test_preempted_and_resumed_on_another_rank_count(datasets, tmp_path):
    """The validation state (scores, best weights) is in the checkpoint: a run preempted on 2
    ranks and resumed on 1 stops where the estimator stops, on the same best weights."""
    path, ck = datasets / "binary.h5", tmp_path / "ck"
    proc = run(["train", "--data", path, *CLI, "--checkpoint", ck], np_=2, check=False,
               env=clean_env(MPINN_FAULT="0:40:term"))  # 360 training rows: 12 steps an epoch
    assert proc.returncode == 75, proc.stderr
    run(["train", "--data", path, *CLI, "--checkpoint", ck, "--resume"], np_=1)
    _assert_same(mpinn.load(ck), _estimator(path, 0.1))


def test_early_stopping_options_are_checked():
    with pytest.raises(InputError, match=r"--validation-fraction: must be in \(0, 1\), got 1.5"):
        TrainConfig.from_dict({"validation_fraction": 1.5})
    with pytest.raises(InputError, match="--early-stopping .* does not combine with --stream"):
        TrainConfig.from_dict({"early_stopping": True, "stream": True, "shuffle": "none"})


def test_keyed_permutation_holds_out_the_same_rows_on_1_and_3_ranks(datasets, tmp_path):
    """Beyond scikit-learn's size (--permutation keyed) the hold-out comes from a keyed
    permutation of the training rows, each rank looking at its own (it was refused before):
    1 and 3 ranks train the same model on the same rows and score the same validation rows.
    test_schedule.py checks which rows TrainRows.hold_out_keyed holds out."""
    path = datasets / "binary.h5"
    models = []
    for ranks in (1, 3):
        ck, metrics = tmp_path / f"ck{ranks}", tmp_path / f"m{ranks}.jsonl"
        run(["train", "--data", path, *CLI, "--permutation", "keyed", "--epochs", "4", "--checkpoint", ck,
             "--metrics", metrics], np_=ranks)
        models.append((mpinn.load(ck), [r["validation_score"] for r in epoch_records(open(metrics))]))
    (one, scores1), (three, scores3) = models
    assert len(scores1) == 4
    np.testing.assert_allclose(scores3, scores1, rtol=0, atol=1e-12)
    for a, b in zip(one.coefs_ + one.intercepts_, three.coefs_ + three.intercepts_):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)
    assert all(abs(s * 40 - round(s * 40)) < 1e-9 for s in scores1)  # accuracy over ceil(0.1 * 400) rows
