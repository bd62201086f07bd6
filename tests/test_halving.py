"""mpinn.HalvingGridSearchCV / HalvingRandomSearchCV on one rank against scikit-learn's halving
searches run with the same mpinn estimator: iris and digits, resource n_samples and max_iter,
factor 2 and 3, min_resources exhaust / smallest / int, aggressive elimination on and off.
The same cases run on 2 and 3 ranks in test_halving_mpi.py."""

import os
import warnings

import numpy as np
import pytest

import mpinn

pytest.importorskip("sklearn.model_selection")
from sklearn.datasets import load_digits, load_iris  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.experimental import enable_halving_search_cv  # noqa: E402,F401
from sklearn.model_selection import HalvingGridSearchCV as SkHalvingGrid  # noqa: E402
from sklearn.model_selection import HalvingRandomSearchCV as SkHalvingRandom  # noqa: E402

IRIS = load_iris(return_X_y=True)
_digits = load_digits()
DIGITS = (_digits.data[:720] / 16.0, _digits.target[:720])  # 720 of the 1797 rows keep the tests quick
GRID = {"hidden_layer_sizes": [(4,), (8,)], "learning_rate_init": [0.01, 0.05, 0.2]}
FITTED = ("n_resources_", "n_candidates_", "n_remaining_candidates_", "min_resources_", "max_resources_",
          "n_iterations_", "n_possible_iterations_", "n_required_iterations_", "best_params_", "best_index_",
          "n_splits_")

# (data, search keywords): together every resource, factor, min_resources and aggressive_elimination
CASES = {
    "iris-samples-f2-exhaust": (IRIS, dict(resource="n_samples", factor=2, random_state=0)),
    "iris-epochs-f3-smallest-aggressive": (IRIS, dict(resource="max_iter", max_resources=9, factor=3,
                                                      min_resources="smallest", aggressive_elimination=True)),
    "digits-samples-f3-smallest-aggressive": (DIGITS, dict(resource="n_samples", factor=3, min_resources="smallest",
                                                           aggressive_elimination=True, random_state=1)),
    "digits-epochs-f2-exhaust": (DIGITS, dict(resource="max_iter", max_resources=8, factor=2)),
}


def estimator(**kw):
    return mpinn.MLPClassifier(max_iter=6, batch_size=64, random_state=0, **kw)


def quiet_fit(search, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)  # batch_size clipped on the smallest subsamples
        return search.fit(*data)


def sklearn_reference(case, grid=GRID):
    data, kw = CASES[case]
    return quiet_fit(SkHalvingGrid(estimator(), grid, cv=3, **kw), data)


def assert_same_results(ours, ref, tol=1e-10):
    """Every key of cv_results_ but the times: the same values (scores within ``tol``) and
    dtypes; the same fitted attributes and best candidate."""
    a, b = ours.cv_results_, ref.cv_results_
    assert sorted(a) == sorted(b)
    for key in b:
        if "_time" in key:
            continue
        if key == "params":
            assert list(a[key]) == list(b[key])
            continue
        va, vb = np.asarray(a[key]), np.asarray(b[key])
        assert va.dtype == vb.dtype, key
        if va.dtype.kind == "f":
            np.testing.assert_allclose(va, vb, rtol=0, atol=tol, err_msg=key)
        else:
            assert list(va) == list(vb), key
    for name in FITTED:
        assert getattr(ours, name) == getattr(ref, name), name
    assert abs(ours.best_score_ - ref.best_score_) <= tol


@pytest.mark.parametrize("case", sorted(CASES))
def test_halving_grid_matches_sklearn(case):
    data, kw = CASES[case]
    ref = sklearn_reference(case)
    ours = quiet_fit(mpinn.HalvingGridSearchCV(estimator(), GRID, cv=3, **kw), data)
    assert_same_results(ours, ref)
    assert ours.n_iterations_ >= 2 and len(set(ours.cv_results_["iter"])) == ours.n_iterations_
    np.testing.assert_allclose(ours.predict_proba(data[0]), ref.predict_proba(data[0]), rtol=0, atol=1e-12)


def test_halving_random_search_and_int_min_resources():
    from scipy.stats import loguniform

    dist = {"hidden_layer_sizes": [(4,), (8,)], "learning_rate_init": loguniform(1e-3, 3e-1)}
    kw = dict(n_candidates=7, factor=2, min_resources=20, random_state=3, cv=3)
    ref = quiet_fit(SkHalvingRandom(estimator(), dist, **kw), IRIS)
    ours = quiet_fit(mpinn.HalvingRandomSearchCV(estimator(), dist, **kw), IRIS)
    assert_same_results(ours, ref)
    assert ours.n_resources_ == [20, 40, 80] and ours.n_candidates_ == [7, 4, 2]
    kw = dict(resource="max_iter", max_resources=8, random_state=3, cv=3)  # n_candidates="exhaust"
    ref = quiet_fit(SkHalvingRandom(estimator(), dist, **kw), IRIS)
    assert_same_results(quiet_fit(mpinn.HalvingRandomSearchCV(estimator(), dist, **kw), IRIS), ref)


def test_nan_scores_and_ties_select_as_sklearn():
    """Failed fits (NaN scores) go last, tied scores (the same candidate twice) keep argsort's order."""
    from sklearn.exceptions import FitFailedWarning

    grid = {"activation": ["relu", "no-such-activation", "tanh"], "learning_rate_init": [0.05, 0.05, 0.2]}
    kw = dict(resource="max_iter", max_resources=8, factor=2, cv=3)
    with pytest.warns(FitFailedWarning):
        ref = quiet_fit(SkHalvingGrid(estimator(), grid, **kw), IRIS)
    with pytest.warns(FitFailedWarning):
        ours = quiet_fit(mpinn.HalvingGridSearchCV(estimator(), grid, **kw), IRIS)
    res = ours.cv_results_
    bad = np.array([p["activation"] == "no-such-activation" for p in res["params"]])
    assert np.isnan(res["mean_test_score"][bad]).all() and set(res["iter"][bad]) == {0}
    res.pop("fit_error")  # mpinn's own column
    assert_same_results(ours, ref)


def test_bad_parameters_raise_as_sklearn():
    grid = {"learning_rate_init": [0.01, 0.1]}
    with pytest.raises(ValueError, match="part of the searched parameters"):
        mpinn.HalvingGridSearchCV(estimator(), {"max_iter": [2, 4]}, resource="max_iter", max_resources=8).fit(*IRIS)
    with pytest.raises(ValueError, match="resource can only be 'n_samples' when max_resources='auto'"):
        mpinn.HalvingGridSearchCV(estimator(), grid, resource="max_iter").fit(*IRIS)
    with pytest.raises(ValueError, match="Cannot use resource=no_such"):
        mpinn.HalvingGridSearchCV(estimator(), grid, resource="no_such").fit(*IRIS)
    with pytest.raises(ValueError, match="min_resources_=200 is greater than max_resources_=150"):
        mpinn.HalvingGridSearchCV(estimator(), grid, min_resources=200).fit(*IRIS)
    with pytest.raises(ValueError, match="'factor' parameter"):
        mpinn.HalvingGridSearchCV(estimator(), grid, factor=0).fit(*IRIS)
    with pytest.raises(ValueError, match="needs the epochs as the resource"):
        mpinn.HalvingGridSearchCV(estimator(), grid, warm_start_promoted=True).fit(*IRIS)


def test_checkpoint_runs_only_the_unfinished_tasks(tmp_path):
    """One task log per iteration; with the second iteration's records gone, a new fit runs
    exactly those tasks again and gives the same results."""
    data, kw = CASES["iris-samples-f2-exhaust"]

    def search():
        return mpinn.HalvingGridSearchCV(estimator(), GRID, cv=3, checkpoint=tmp_path / "ck", **kw)

    full = quiet_fit(search(), data)
    assert sorted(os.listdir(tmp_path / "ck")) == ["iter-0", "iter-1", "iter-2"]
    assert (full.tasks_run_, full.tasks_resumed_) == (33, 0)  # (6 + 3 + 2) candidates x 3 folds
    for name in os.listdir(tmp_path / "ck" / "iter-1"):
        if name.startswith("tasks-"):
            os.remove(tmp_path / "ck" / "iter-1" / name)
    again = quiet_fit(search(), data)
    assert (again.tasks_run_, again.tasks_resumed_) == (9, 24)
    assert_same_results(again, full, tol=1e-12)


# ---- warm_start_promoted: a promoted candidate continues its fold's model -------------------------

WARM_GRID = {"hidden_layer_sizes": [(8,), (16,), (32,)], "learning_rate_init": [0.003, 0.01, 0.03]}


def warm_and_cold(data, base, **kw):
    """The same halving search (9 candidates, max_iter 1, 3, 9) retraining from epoch 0 and continuing."""
    kw = dict(resource="max_iter", max_resources=9, factor=3, cv=3, **kw)
    cold = quiet_fit(mpinn.HalvingGridSearchCV(base, WARM_GRID, **kw), data)
    warm = quiet_fit(mpinn.HalvingGridSearchCV(base, WARM_GRID, warm_start_promoted=True, **kw), data)
    return cold, warm


@pytest.mark.parametrize("fixed", [dict(), dict(solver="sgd", learning_rate="invscaling", momentum=0.5,
                                                early_stopping=True, validation_fraction=0.2, n_iter_no_change=2)],
                         ids=["adam", "sgd-invscaling-early-stopping"])
def test_warm_start_promoted_equals_from_scratch_with_fewer_epochs(fixed):
    base = mpinn.MLPClassifier(batch_size=200, random_state=0, **fixed)
    cold, warm = warm_and_cold(DIGITS, base)
    assert_same_results(warm, cold, tol=1e-12)
    assert cold.n_resources_ == [1, 3, 9] and cold.n_candidates_ == [9, 3, 1]
    if not fixed.get("early_stopping"):  # every fit runs to max_iter: 3 folds x (9x1 + 3x3 + 1x9) epochs, and
        assert (cold.epochs_trained_, warm.epochs_trained_) == (81, 63)  # x (9x1 + 3x2 + 1x6) continuing
    else:
        assert warm.epochs_trained_ < cold.epochs_trained_


def test_a_continued_fit_equals_a_longer_one(tmp_path):
    """The estimator's end state, restored and trained to more epochs, is the longer fit bit for bit:
    Adam's moments, the shuffling RandomState, t_, the stopping counters, and with early stopping
    the last epoch's weights (the fit ended on its best validation epoch's). The same from the
    estimator's HDF5 checkpoint (what `mpinn train --resume --epochs` continues)."""
    from mpinn.search.warm import load_state, save_state
    from mpinn.train.checkpoint import read_checkpoint

    X, y = DIGITS
    kw = dict(hidden_layer_sizes=(16,), batch_size=100, random_state=0, early_stopping=True, learning_rate_init=0.1,
              validation_fraction=0.2, n_iter_no_change=3)
    short = mpinn.MLPClassifier(max_iter=9, **kw)
    short._keep_run_state = True
    quiet_fit(short, DIGITS)
    assert np.argmax(short.validation_scores_) < 8  # it ended on an earlier epoch's weights
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"mpinn-test-state-{os.getpid()}.npz")
    save_state(path, short._run_state)
    try:
        longer = mpinn.MLPClassifier(max_iter=27, **kw)
        longer._continue_from = load_state(path)
        quiet_fit(longer, DIGITS)
    finally:
        os.remove(path)
    scratch = quiet_fit(mpinn.MLPClassifier(max_iter=27, **kw), DIGITS)
    assert 9 < scratch.n_iter_ < 27 and longer.n_iter_ == scratch.n_iter_ and longer.t_ == scratch.t_
    for a, b in zip(longer.coefs_ + longer.intercepts_, scratch.coefs_ + scratch.intercepts_):
        assert np.array_equal(a, b)
    assert longer.validation_scores_ == scratch.validation_scores_ and longer.loss_curve_ == scratch.loss_curve_
    assert np.array_equal(longer.predict_proba(X), scratch.predict_proba(X))
    quiet_fit(mpinn.MLPClassifier(max_iter=9, checkpoint=tmp_path / "ck", **kw), DIGITS)
    attrs, arrays = read_checkpoint(str(tmp_path / "ck"))
    from_file = mpinn.MLPClassifier(max_iter=27, **kw)
    from_file._continue_from = (attrs["state"], arrays)
    quiet_fit(from_file, DIGITS)
    assert np.array_equal(from_file.predict_proba(X), scratch.predict_proba(X))
