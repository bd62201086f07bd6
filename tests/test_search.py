"""mpinn.GridSearchCV / RandomizedSearchCV on one rank against scikit-learn's searches over
sklearn's MLPClassifier, failure isolation, the task log and resume, the grid file's checks.
The same cases run on 2 and 3 ranks in test_search_mpi.py."""

import json
import warnings

import numpy as np
import pytest

import mpinn

sk_ms = pytest.importorskip("sklearn.model_selection")
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, FitFailedWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkMLP  # noqa: E402

X_IRIS, Y_IRIS = load_iris(return_X_y=True)
# 6 candidates x 3 folds; short fits (2 steps per epoch) keep the MPI runs quick.
GRID = {"hidden_layer_sizes": [(4,), (8,)], "learning_rate_init": [0.01, 0.05, 0.2]}
FIXED = dict(max_iter=8, batch_size=100, random_state=0)


def quiet_fit(search, X=X_IRIS, y=Y_IRIS):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return search.fit(X, y)


def sklearn_reference(grid=GRID, **search_kw):
    search_kw.setdefault("scoring", "neg_log_loss")
    return quiet_fit(sk_ms.GridSearchCV(SkMLP(**FIXED), grid, cv=3, **search_kw))


def assert_same_results(ours, ref, tol=1e-10):
    """Same keys, parameter columns, ranks and best candidate; scores within ``tol``."""
    a, b = ours.cv_results_, ref.cv_results_
    assert sorted(a) == sorted(b)
    for key in b:
        if key == "params":
            assert a[key] == b[key]
        elif key.startswith("param_"):
            assert list(a[key]) == list(b[key]) and a[key].dtype == b[key].dtype, key
        elif "_test_" in key or "_train_" in key:
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=tol, err_msg=key)
            assert a[key].dtype == b[key].dtype, key
    assert ours.best_params_ == ref.best_params_ and ours.best_index_ == ref.best_index_
    assert abs(ours.best_score_ - ref.best_score_) <= tol
    assert ours.n_splits_ == ref.n_splits_ and ours.multimetric_ == ref.multimetric_


@pytest.mark.parametrize("allocation", ["dynamic", "round-robin"])
def test_grid_search_matches_sklearn(allocation):
    ref = sklearn_reference()
    ours = quiet_fit(mpinn.GridSearchCV(mpinn.MLPClassifier(**FIXED), GRID, scoring="neg_log_loss", cv=3,
                                        allocation=allocation))
    assert_same_results(ours, ref)
    np.testing.assert_allclose(ours.predict_proba(X_IRIS), ref.predict_proba(X_IRIS), atol=1e-12)
    assert ours.score(X_IRIS, Y_IRIS) == pytest.approx(ref.score(X_IRIS, Y_IRIS), abs=1e-12)
    assert ours.tasks_run_ == 18 and ours.refit_time_ > 0 and list(ours.classes_) == [0, 1, 2]


def test_multimetric_train_scores_stratified_shuffled_folds_and_pipeline():
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cv = StratifiedKFold(3, shuffle=True, random_state=5)
    grid = {"mlpclassifier__alpha": [1e-4, 1e-1], "mlpclassifier__learning_rate_init": [0.01, 0.1]}
    kw = dict(scoring=["neg_log_loss", "accuracy"], refit="neg_log_loss", cv=cv, return_train_score=True)
    ref = quiet_fit(sk_ms.GridSearchCV(make_pipeline(StandardScaler(), SkMLP(**FIXED)), grid, **kw))
    ours = quiet_fit(mpinn.GridSearchCV(make_pipeline(StandardScaler(), mpinn.MLPClassifier(**FIXED)), grid, **kw))
    assert_same_results(ours, ref)
    assert "split2_train_accuracy" in ours.cv_results_


def test_randomized_search_samples_sklearns_candidates():
    from scipy.stats import loguniform

    dist = {"hidden_layer_sizes": [(4,), (8,)], "learning_rate_init": loguniform(1e-3, 1e-1)}
    kw = dict(n_iter=4, scoring="neg_log_loss", cv=3, random_state=7)
    ref = quiet_fit(sk_ms.RandomizedSearchCV(SkMLP(**FIXED), dist, **kw))
    ours = quiet_fit(mpinn.RandomizedSearchCV(mpinn.MLPClassifier(**FIXED), dist, **kw))
    assert_same_results(ours, ref)


def test_callable_scoring_returning_several_metrics():
    from sklearn.metrics import accuracy_score, log_loss

    def scores(est, X, y):
        return {"acc": accuracy_score(y, est.predict(X)), "nll": -log_loss(y, est.predict_proba(X))}

    grid = {"learning_rate_init": [0.01, 0.2]}
    ref = sklearn_reference(grid, scoring=scores, refit="nll")
    ours = quiet_fit(mpinn.GridSearchCV(mpinn.MLPClassifier(**FIXED), grid, cv=3, scoring=scores, refit="nll"))
    assert_same_results(ours, ref)
    assert ours.multimetric_ and "rank_test_acc" in ours.cv_results_


def test_a_raising_candidate_is_recorded_and_the_rest_complete():
    grid = {"activation": ["relu", "no-such-activation"], "learning_rate_init": [0.01, 0.1]}
    with pytest.warns(FitFailedWarning, match="6 fits failed out of a total of 12"):
        ours = quiet_fit(mpinn.GridSearchCV(mpinn.MLPClassifier(**FIXED), grid, cv=3, error_score=-1.0))
    res = ours.cv_results_
    failed = [p["activation"] == "no-such-activation" for p in res["params"]]
    assert (res["mean_test_score"][failed] == -1.0).all() and (res["mean_test_score"][~np.array(failed)] > 0.3).all()
    assert all("no-such-activation" in res["fit_error"][c] for c in np.flatnonzero(failed))
    assert all(res["fit_error"][c] is None for c in np.flatnonzero(~np.array(failed)))
    assert ours.best_params_["activation"] == "relu"
    with pytest.raises(ValueError, match="no-such-activation"):  # one rank: the original exception
        quiet_fit(mpinn.GridSearchCV(mpinn.MLPClassifier(**FIXED), grid, cv=3, error_score="raise"))


def test_checkpoint_resumes_only_unfinished_tasks(tmp_path):
    def search(**kw):
        return mpinn.GridSearchCV(mpinn.MLPClassifier(**FIXED), GRID, scoring="neg_log_loss", cv=3,
                                  checkpoint=tmp_path / "ck", **kw)

    full = quiet_fit(search())
    files = sorted((tmp_path / "ck").glob("tasks-*.jsonl"))
    lines = files[0].read_text().splitlines()
    assert len(files) == 1 and len(lines) == 18 and json.loads(lines[0])["search"]
    # Keep 11 tasks and a line cut short by a kill; the restart runs the other 7, in groups of its own.
    files[0].write_text("\n".join(lines[:11]) + "\n" + lines[11][:25])
    again = quiet_fit(search(allocation="round-robin"))
    assert (again.tasks_resumed_, again.tasks_run_) == (11, 7)
    assert_same_results(again, full, tol=0)
    assert quiet_fit(search()).tasks_run_ == 0
    with pytest.raises(ValueError, match="another search"):
        quiet_fit(mpinn.GridSearchCV(mpinn.MLPClassifier(**FIXED), {"alpha": [1e-3, 1e-2]}, cv=3,
                                     checkpoint=tmp_path / "ck"))
    changed = X_IRIS.copy()  # the same search on data with one value changed: its data digest differs
    changed[149, 3] += 0.5
    with pytest.raises(ValueError, match="another search"):
        quiet_fit(search(), changed)


def test_bad_parameters_are_refused_before_any_fit():
    est = mpinn.MLPClassifier(**FIXED)
    for kw, match in [({"group_size": 0}, "group_size"), ({"allocation": "random"}, "allocation"),
                      ({"error_score": "ignore"}, "error_score"), ({"group_size": 2}, "does not divide"),
                      ({"scoring": ["accuracy", "neg_log_loss"]}, "refit must be set")]:
        with pytest.raises(ValueError, match=match):
            mpinn.GridSearchCV(est, GRID, cv=3, **kw).fit(X_IRIS, Y_IRIS)


def test_allocations_order_and_balance():
    from mpinn.search.run import lpt_assignment
    from mpinn.search.tasks import expected_cost, longest_first

    small, big = (expected_cost(mpinn.MLPClassifier(hidden_layer_sizes=h, max_iter=e), 100, 4, 3)
                  for h, e in (((10,), 10), ((40, 20), 40)))
    assert big / small == pytest.approx((40 * (5 * 40 + 41 * 20 + 21 * 3)) / (10 * (5 * 10 + 11 * 3)))
    costs = [1, 16, 1, 16, 4, 4]
    order = longest_first(costs)
    assert order == [1, 3, 4, 5, 0, 2]
    assert lpt_assignment(order, costs, 2) == [[1, 4, 0], [3, 5, 2]]


def test_grid_file_rules(tmp_path):
    from mpinn.cli.search_grid import estimator_values, parse_grid
    from mpinn.errors import InputError

    path = tmp_path / "grid.toml"
    path.write_text('hidden = [[10], [50], "100,50"]\nlr = [0.001, 0.01]\nsolver = ["sgd", "adam"]\nepochs = 20\n'
                    'seed = 3\nshuffle = ["global", "none"]\n')
    fixed, varied = parse_grid(str(path), randomized=False)
    assert fixed == {"epochs": 20, "seed": 3}
    assert estimator_values("hidden", varied["hidden"]) == ("mlp__hidden_layer_sizes", [(10,), (50,), (100, 50)])
    assert estimator_values("lr", varied["lr"]) == ("mlp__learning_rate_init", [0.001, 0.01])
    assert estimator_values("shuffle", varied["shuffle"]) == ("mlp__shuffle", [True, False])
    path.write_text('hidden = [64, 32]\nalpha = {loguniform = [1e-5, 1e-1]}\nscale = ["standard", "none"]\n')
    fixed, varied = parse_grid(str(path), randomized=True)
    assert fixed == {"hidden": [64, 32]} and varied["alpha"] == {"loguniform": [1e-5, 1e-1]}
    for text, match in [("epochs = {uniform = [10, 20]}", "epochs: expected int"),
                        ("lr = {normal = [0, 1]}", "one of"), ("lr = {uniform = [0.1]}", "two numbers")]:
        path.write_text(text + "\n")
        with pytest.raises(InputError, match=match):
            parse_grid(str(path), randomized=True)
    name, steps = estimator_values("scale", varied["scale"])
    assert name == "scale" and type(steps[0]).__name__ == "StandardScaler" and steps[1] == "passthrough"
    for text, match in [("lr = []", "empty list"), ("learning-rate = [0.1]", "not a searchable"),
                        ('lr = ["fast"]', "lr: expected int/float"), ("lr = [0.1, -1.0]", "must be > 0"),
                        ("epochs = 5", "no option has a list"), ("alpha = {uniform = [0, 1]}", "needs --n-iter"),
                        ('shuffle = ["local"]', "not available in a search"), ("lr = [0.1", "not valid TOML"),
                        ('task = ["classify", "regress"]', "give one value")]:
        path.write_text(text + "\n")
        with pytest.raises(InputError, match=match):
            parse_grid(str(path), randomized=False)
