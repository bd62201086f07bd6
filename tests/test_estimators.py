"""mpinn.MLPClassifier / MLPRegressor against scikit-learn itself, on one process.

test_estimators_mpi.py repeats the parity checks under `mpiexec -n 2|3`; the example script
test below launches mpiexec itself.
"""

import os
import pickle
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

import mpinn
from mpinn.data import inputs
from parity import (BIN_X, BIN_Y, DATA, DIGITS_X, DIGITS_Y, IRIS_X, IRIS_Y, REG_X, REG_Y, SOLVERS,
                    assert_same_fit, fit_both, quiet, rel, sk_nn)

sk_base = pytest.importorskip("sklearn.base")
sk_model_selection = pytest.importorskip("sklearn.model_selection")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- numerics: bit-identical init, identical trajectories ---------------------------------


@pytest.fixture
def frozen(monkeypatch):
    """Optimizers that do not move the weights: after one epoch coefs_ is the initial draw."""
    from sklearn.neural_network import _stochastic_optimizers as sko

    from mpinn.nn import optim

    monkeypatch.setattr(optim.SGD, "step", lambda self, params, grad, *finish: None)
    monkeypatch.setattr(sko.SGDOptimizer, "update_params", lambda self, params, grads: None)


@pytest.mark.parametrize("activation", ["relu", "logistic", "tanh", "identity"])
@pytest.mark.parametrize("cls,X,y,dtype", [
    ("MLPClassifier", IRIS_X, IRIS_Y, np.float64), ("MLPClassifier", BIN_X, BIN_Y, np.float64),
    ("MLPClassifier", IRIS_X.astype(np.float32), IRIS_Y, np.float32), ("MLPRegressor", REG_X, REG_Y, np.float64)])
def test_initial_weights_are_bit_identical(frozen, cls, X, y, dtype, activation):
    ours, ref = fit_both(cls, X, y, hidden_layer_sizes=(7, 5), activation=activation, solver="sgd",
                         max_iter=1, random_state=11)
    for a, b in zip(ours.coefs_ + ours.intercepts_, ref.coefs_ + ref.intercepts_):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shuffle", [True, False], ids=["shuffle", "no-shuffle"])
@pytest.mark.parametrize("solver", sorted(SOLVERS))
@pytest.mark.parametrize("data", sorted(DATA))
def test_training_trajectory_equals_sklearn(data, solver, shuffle):
    X, y, base = DATA[data]
    ours, ref = fit_both("MLPClassifier", X, y, **{**base, **SOLVERS[solver]}, shuffle=shuffle, random_state=3)
    assert_same_fit(ours, ref, rtol=1e-12)


def test_stops_when_the_loss_stalls_at_the_same_epoch():
    ours, ref = fit_both("MLPClassifier", IRIS_X, IRIS_Y, hidden_layer_sizes=(5,), learning_rate_init=0.05,
                         max_iter=500, tol=1e-3, n_iter_no_change=5, random_state=0)
    assert ref.n_iter_ < 500
    assert_same_fit(ours, ref, rtol=1e-12)


@pytest.mark.parametrize("case", ["multiclass", "binary-stratified", "regressor", "weighted"])
def test_early_stopping_stops_at_the_same_epoch(case):
    if case == "regressor":
        ours, ref = fit_both("MLPRegressor", REG_X, REG_Y, hidden_layer_sizes=(9,), learning_rate_init=0.01,
                             max_iter=300, early_stopping=True, random_state=2)
    elif case == "binary-stratified":  # sklearn stratifies the split for single-output classifiers
        ours, ref = fit_both("MLPClassifier", BIN_X, BIN_Y, hidden_layer_sizes=(7,), learning_rate_init=0.01,
                             max_iter=300, early_stopping=True, validation_fraction=0.2, random_state=1)
    else:
        fit_kw = {"sample_weight": np.random.RandomState(0).uniform(0.5, 2, len(IRIS_Y))} if case == "weighted" else {}
        ours, ref = fit_both("MLPClassifier", IRIS_X, IRIS_Y, fit_kw=fit_kw, hidden_layer_sizes=(10,),
                             solver="sgd", learning_rate_init=0.01, max_iter=300, early_stopping=True,
                             n_iter_no_change=5, random_state=0)
    assert ref.n_iter_ < 300 and ours.best_loss_ is None
    assert_same_fit(ours, ref, rtol=1e-12)  # includes the restored best weights
    assert len(ours.validation_loss_curve_) == ours.n_iter_  # mpinn's extra curve


@pytest.mark.parametrize("n,fraction,seed,labels", [
    (150, 0.1, 0, None), (37, 0.3, 5, None), (120, 0.2, 1, "binary"), (41, 0.25, 7, "binary"),
    (10, 0.5, 3, "binary"), (23, 0.17, 9, "ties")])
def test_validation_split_draws_the_rows_sklearn_draws(n, fraction, seed, labels):
    """train_test_split(random_state=rs, stratify=...) reproduced without sklearn, and the
    RandomState left in the same state for the epochs that follow."""
    rng = np.random.RandomState(seed)
    y = None if labels is None else (rng.rand(n) < (0.5 if labels == "ties" else 0.3)).astype(int)
    if labels == "ties":
        y[:2], y[2:4] = 0, 1
    ours_rs, ref_rs = np.random.RandomState(seed + 100), np.random.RandomState(seed + 100)
    train, val = inputs.train_validation_split(n, fraction, ours_rs, None if y is None else y.astype(float))
    stratify = None if y is None else y.reshape(-1, 1).astype(bool)  # what sklearn's MLP passes
    ref_train, ref_val = sk_model_selection.train_test_split(np.arange(n), test_size=fraction,
                                                             random_state=ref_rs, stratify=stratify)
    np.testing.assert_array_equal(train, ref_train)
    np.testing.assert_array_equal(val, ref_val)
    assert ours_rs.randint(1 << 30) == ref_rs.randint(1 << 30)


def test_sample_weight_and_class_weight():
    w = np.random.RandomState(0).uniform(0.2, 3, len(IRIS_Y))
    for solver in ("sgd", "adam"):
        ours, ref = fit_both("MLPClassifier", IRIS_X, IRIS_Y, fit_kw={"sample_weight": w}, hidden_layer_sizes=(8,),
                             solver=solver, learning_rate_init=0.02, max_iter=40, batch_size=32, random_state=4)
        assert_same_fit(ours, ref, rtol=1e-12)
    # class_weight (mpinn's) is sample_weight folded per class: the same run to the bit.
    kw = dict(hidden_layer_sizes=(8,), max_iter=20, random_state=0)
    a = quiet(mpinn.MLPClassifier(class_weight={0: 2.0, 2: 0.5}, **kw).fit, IRIS_X, IRIS_Y, sample_weight=w)
    b = quiet(mpinn.MLPClassifier(**kw).fit, IRIS_X, IRIS_Y, sample_weight=w * np.array([2.0, 1.0, 0.5])[IRIS_Y])
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])
    y = np.r_[IRIS_Y[:120], IRIS_Y[140:]]  # unbalanced: 50, 50, 30
    c = quiet(mpinn.MLPClassifier(class_weight="balanced", **kw).fit, IRIS_X[: len(y)], y)
    d = quiet(mpinn.MLPClassifier(**kw).fit, IRIS_X[: len(y)], y,
              sample_weight=(len(y) / (3 * np.bincount(y)))[y])
    np.testing.assert_array_equal(c.coefs_[0], d.coefs_[0])


def test_binary_multilabel_poisson_and_regression_equal_sklearn():
    ours, ref = fit_both("MLPClassifier", BIN_X, BIN_Y, hidden_layer_sizes=(7,), solver="sgd",
                         learning_rate_init=0.05, max_iter=40, random_state=2)
    assert ours.out_activation_ == "logistic"
    assert_same_fit(ours, ref, rtol=1e-12)
    Y = np.c_[BIN_Y, (BIN_X[:, 0] > 0).astype(int), BIN_Y * (BIN_X[:, 1] > 0)]
    ours, ref = fit_both("MLPClassifier", BIN_X, Y, hidden_layer_sizes=(7,), learning_rate_init=0.01,
                         max_iter=30, random_state=1)
    assert_same_fit(ours, ref, rtol=1e-12)
    np.testing.assert_array_equal(ours.predict(BIN_X), ref.predict(BIN_X))
    counts = np.random.RandomState(0).poisson(np.exp(0.5 * REG_X[:, 0]))
    ours, ref = fit_both("MLPRegressor", REG_X, counts, loss="poisson", hidden_layer_sizes=(9,),
                         learning_rate_init=0.01, max_iter=50, random_state=2)
    assert ours.out_activation_ == "exp"
    assert_same_fit(ours, ref, rtol=1e-12)
    ours, ref = fit_both("MLPRegressor", REG_X, REG_Y, hidden_layer_sizes=(9,), activation="tanh",
                         learning_rate_init=0.01, max_iter=30, batch_size=16, random_state=4)
    assert_same_fit(ours, ref, rtol=1e-12)


def test_multi_output_gradient_is_the_true_one_sklearn_8349():
    """sklearn's multi-output squared-error gradient is n_outputs times the gradient of the loss
    it reports (scikit-learn #8349); mpinn's is the true gradient. One full-batch plain-GD
    epoch: same loss, sklearn's step exactly k = 3 times mpinn's."""
    Y = np.c_[REG_Y, 0.5 * REG_Y, REG_X[:, 0]]
    kw = dict(hidden_layer_sizes=(6,), solver="sgd", momentum=0.0, alpha=0.0, batch_size=len(REG_X),
              learning_rate_init=0.01, max_iter=1, shuffle=False, random_state=0)
    ours, ref = fit_both("MLPRegressor", REG_X, Y, **kw)
    assert ours.loss_curve_[0] == pytest.approx(ref.loss_curve_[0], rel=1e-13)
    init = quiet(mpinn.MLPRegressor(**{**kw, "learning_rate_init": 1e-300}).fit, REG_X, Y)
    for a, b, w0 in zip(ours.coefs_, ref.coefs_, init.coefs_):
        np.testing.assert_allclose(b - w0, 3 * (a - w0), rtol=1e-9, atol=1e-15)


def test_lbfgs_equals_sklearn():
    ours, ref = fit_both("MLPRegressor", REG_X, REG_Y, hidden_layer_sizes=(9,), solver="lbfgs", max_iter=60,
                         random_state=2)
    assert_same_fit(ours, ref, rtol=1e-10)
    assert not hasattr(ours, "loss_curve_") and ours.t_ == 0
    # Classification: the loss is summed in another order, and L-BFGS's line search amplifies
    # that rounding over many iterations (docs/api.md); a short run still agrees closely.
    ours, ref = fit_both("MLPClassifier", IRIS_X, IRIS_Y, hidden_layer_sizes=(6,), solver="lbfgs", max_iter=15,
                         random_state=0)
    assert ours.n_iter_ == ref.n_iter_
    assert_same_fit(ours, ref, rtol=1e-6)
    assert not hasattr(mpinn.MLPClassifier(solver="lbfgs"), "partial_fit")


def test_lbfgs_without_scipy_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)
    with pytest.raises(ImportError, match="solver='lbfgs' needs scipy"):
        mpinn.MLPRegressor(solver="lbfgs", hidden_layer_sizes=(3,)).fit(REG_X, REG_Y)


# ---- warm start, partial_fit ---------------------------------------------------------------


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_warm_start_and_partial_fit_keep_the_state_sklearn_keeps(solver):
    kw = dict(hidden_layer_sizes=(6,), solver=solver, learning_rate="adaptive", learning_rate_init=0.05,
              max_iter=15, random_state=0, tol=1e-2, n_iter_no_change=2)
    ours, ref = mpinn.MLPClassifier(warm_start=True, **kw), sk_nn.MLPClassifier(warm_start=True, **kw)
    for _ in range(3):  # t_, loss_curve_, best_loss_, the no-improvement count carry over
        quiet(ours.fit, IRIS_X, IRIS_Y)
        quiet(ref.fit, IRIS_X, IRIS_Y)
        assert_same_fit(ours, ref, rtol=1e-12)
    ours, ref = mpinn.MLPClassifier(**kw), sk_nn.MLPClassifier(**kw)
    for i in range(4):  # one epoch each, the optimizer (velocity, Adam moments, lr) kept
        ours.partial_fit(IRIS_X[i::2], IRIS_Y[i::2], classes=[0, 1, 2])
        ref.partial_fit(IRIS_X[i::2], IRIS_Y[i::2], classes=[0, 1, 2])
        assert ours.n_iter_ == 1
        assert_same_fit(ours, ref, rtol=1e-12)
    quiet(ours.fit, IRIS_X, IRIS_Y)  # a cold fit starts over
    quiet(ref.fit, IRIS_X, IRIS_Y)
    ours.partial_fit(IRIS_X, IRIS_Y)
    ref.partial_fit(IRIS_X, IRIS_Y)
    assert_same_fit(ours, ref, rtol=1e-12)
    reg, sk_reg = mpinn.MLPRegressor(**kw), sk_nn.MLPRegressor(**kw)
    for _ in range(3):
        reg.partial_fit(REG_X, REG_Y)
        sk_reg.partial_fit(REG_X, REG_Y)
    assert_same_fit(reg, sk_reg, rtol=1e-12)


def test_partial_fit_errors_as_sklearn():
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        mpinn.MLPClassifier().partial_fit(IRIS_X, IRIS_Y)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        mpinn.MLPClassifier(early_stopping=True).partial_fit(IRIS_X, IRIS_Y, classes=[0, 1, 2])
    clf = mpinn.MLPClassifier(hidden_layer_sizes=(3,)).partial_fit(IRIS_X[:80], IRIS_Y[:80], classes=[0, 1, 2])
    with pytest.raises(ValueError, match="not the same as on last call"):
        clf.partial_fit(IRIS_X, IRIS_Y, classes=[0, 1])
    with pytest.raises(ValueError, match="`y` has classes not in"):
        clf.partial_fit(IRIS_X, IRIS_Y + 1)
    warm = quiet(mpinn.MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, warm_start=True).fit, IRIS_X, IRIS_Y)
    with pytest.raises(ValueError, match="warm_start can only be used where `y` has the same classes"):
        warm.fit(IRIS_X[:100], IRIS_Y[:100])


# ---- the sklearn API -------------------------------------------------------------------------


@pytest.mark.parametrize("est", [
    mpinn.MLPClassifier(max_iter=100), mpinn.MLPRegressor(max_iter=100),
    mpinn.MLPClassifier(solver="lbfgs", max_iter=100), mpinn.MLPRegressor(solver="sgd", max_iter=100),
], ids=lambda e: repr(e))
def test_check_estimator_passes(est):
    """sklearn's own estimator checks, none expected to fail. Checks sklearn itself skips here
    (pandas not installed, SCIPY_ARRAY_API unset, no decision_function) are skipped by sklearn;
    early_stopping=True is left out: the checks' datasets (10-30 rows) leave validation sets of
    1-3 rows, and sklearn 1.9.1's own MLPClassifier/MLPRegressor(early_stopping=True) fail the
    same checks (check_fit2d_1feature, check_estimators_nan_inf, check_fit_score_takes_y, ...)."""
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(est, on_fail=None)
    failed = {r["check_name"]: repr(r["exception"]) for r in results if r["status"] == "failed"}
    assert not failed
    assert sum(r["status"] == "passed" for r in results) >= 55


def test_params_clone_repr_pickle():
    est = mpinn.MLPClassifier(hidden_layer_sizes=(5,), solver="sgd", random_state=0, max_iter=5)
    params = est.get_params()
    for name in ("hidden_layer_sizes", "max_fun", "n_iter_no_change", "class_weight", "dtype", "shard", "comm",
                 "checkpoint", "checkpoint_every", "keep_checkpoints"):
        assert name in params
    sk_params = sk_nn.MLPClassifier().get_params()
    assert {k: params[k] for k in sk_params if k not in ("hidden_layer_sizes", "solver", "random_state", "max_iter")} \
        == {k: v for k, v in sk_params.items() if k not in ("hidden_layer_sizes", "solver", "random_state", "max_iter")}
    assert set(sk_nn.MLPRegressor().get_params()) < set(mpinn.MLPRegressor().get_params())
    assert repr(est) == "MLPClassifier(hidden_layer_sizes=(5,), solver='sgd', max_iter=5, random_state=0)"
    clone = sk_base.clone(est).set_params(alpha=0.5)
    assert clone.alpha == 0.5 and est.alpha == 0.0001
    with pytest.raises(ValueError, match="Invalid parameter 'nope'"):
        est.set_params(nope=1)
    with pytest.raises(ValueError, match="'alpha' parameter of MLPClassifier must be"):
        mpinn.MLPClassifier(alpha=-1).fit(IRIS_X, IRIS_Y)
    quiet(est.fit, IRIS_X, IRIS_Y)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict_proba(IRIS_X), est.predict_proba(IRIS_X))
    assert sk_base.is_classifier(est) and sk_base.is_regressor(mpinn.MLPRegressor())


@pytest.mark.parametrize("cls,X,y", [("MLPClassifier", IRIS_X, IRIS_Y), ("MLPClassifier", BIN_X, BIN_Y),
                                     ("MLPClassifier", BIN_X, np.c_[BIN_Y, 1 - BIN_Y * (BIN_X[:, 0] > 0)]),
                                     ("MLPRegressor", REG_X, REG_Y)])
def test_to_sklearn_round_trip(cls, X, y):
    ours = quiet(getattr(mpinn, cls)(hidden_layer_sizes=(8,), max_iter=30, random_state=0).fit, X, y)
    exported = ours.to_sklearn()
    assert type(exported) is getattr(sk_nn, cls)
    if cls == "MLPClassifier":
        np.testing.assert_allclose(exported.predict_proba(X), ours.predict_proba(X), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(exported.predict_log_proba(X), ours.predict_log_proba(X), rtol=1e-12)
    np.testing.assert_array_equal(exported.predict(X), ours.predict(X))
    assert exported.score(X, y) == pytest.approx(ours.score(X, y), rel=1e-12)
    assert exported.loss_curve_ == ours.loss_curve_ and exported.n_iter_ == ours.n_iter_


def test_string_labels_and_predict_api():
    names = np.array(["setosa", "versicolor", "virginica"])[IRIS_Y]
    ours, ref = fit_both("MLPClassifier", IRIS_X, names, hidden_layer_sizes=(6,), max_iter=20, random_state=0)
    assert_same_fit(ours, ref, rtol=1e-12)
    np.testing.assert_array_equal(ours.predict(IRIS_X), ref.predict(IRIS_X))
    assert ours.score(IRIS_X, names) == ref.score(IRIS_X, names)
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is expecting 4"):
        ours.predict(IRIS_X[:, :3])


# ---- HDF5 input, checkpoints, mpinn.load -----------------------------------------------------


def _write_h5(path, X, y):
    from mpinn.data.builtin import write_hdf5

    write_hdf5(path, X, y)
    return path


def test_fit_from_an_hdf5_path_equals_fit_from_arrays(tmp_path):
    path = _write_h5(tmp_path / "iris.h5", IRIS_X, IRIS_Y)
    kw = dict(hidden_layer_sizes=(6,), max_iter=15, random_state=0)
    a = quiet(mpinn.MLPClassifier(**kw).fit, path)
    b = quiet(mpinn.MLPClassifier(**kw).fit, IRIS_X, IRIS_Y)
    assert_same_fit(a, b, rtol=0)
    path = _write_h5(tmp_path / "bin.h5", BIN_X, BIN_Y)
    a = quiet(mpinn.MLPClassifier(early_stopping=True, **kw).fit, str(path))
    b = quiet(mpinn.MLPClassifier(early_stopping=True, **kw).fit, BIN_X, BIN_Y)
    assert_same_fit(a, b, rtol=0)
    import h5py

    w = np.random.RandomState(0).uniform(0.5, 2, len(REG_Y))
    with h5py.File(tmp_path / "reg.h5", "w") as f:
        f["X"], f["target"], f["w"] = REG_X, REG_Y, w
    a = quiet(mpinn.MLPRegressor(**kw).fit, tmp_path / "reg.h5", "target", sample_weight="w")
    b = quiet(mpinn.MLPRegressor(**kw).fit, REG_X, REG_Y, sample_weight=w)
    assert_same_fit(a, b, rtol=0)


def test_checkpoint_and_load_return_the_estimator(tmp_path):
    kw = dict(hidden_layer_sizes=(6,), solver="sgd", max_iter=12, random_state=0)
    est = quiet(mpinn.MLPClassifier(checkpoint=str(tmp_path / "ck"), checkpoint_every=5, **kw).fit, IRIS_X, IRIS_Y)
    loaded = mpinn.load(tmp_path / "ck")
    assert type(loaded) is mpinn.MLPClassifier and loaded.get_params()["max_iter"] == 12
    assert_same_fit(loaded, est, rtol=0)
    np.testing.assert_array_equal(loaded.predict_proba(IRIS_X), est.predict_proba(IRIS_X))
    # partial_fit continues with the stored optimizer state: same as continuing in memory.
    loaded.partial_fit(IRIS_X, IRIS_Y)
    est.partial_fit(IRIS_X, IRIS_Y)
    assert_same_fit(loaded, est, rtol=0)
    # The CLI reads an estimator's checkpoint too.
    from launch import run

    data = _write_h5(tmp_path / "iris.h5", IRIS_X, IRIS_Y)
    run(["predict", "--model", tmp_path / "ck", "--data", data, "--out", tmp_path / "pred.h5"])
    import h5py

    with h5py.File(tmp_path / "pred.h5", "r") as f:
        np.testing.assert_array_equal(f["y_pred"][()], loaded.predict(IRIS_X))
    reg = quiet(mpinn.MLPRegressor(solver="lbfgs", hidden_layer_sizes=(4,), max_iter=20, random_state=0,
                                   checkpoint=tmp_path / "reg").fit, REG_X, REG_Y)
    back = mpinn.load(tmp_path / "reg")
    assert type(back) is mpinn.MLPRegressor and back.n_iter_ == reg.n_iter_
    np.testing.assert_array_equal(back.predict(REG_X), reg.predict(REG_X))


def test_load_a_cli_checkpoint_gives_an_estimator(tmp_path):
    from launch import run

    data = _write_h5(tmp_path / "iris.h5", IRIS_X, IRIS_Y)
    run(["train", "--data", data, "--hidden", "5", "--epochs", "5", "--quiet", "--checkpoint", tmp_path / "ck"])
    model = mpinn.load(tmp_path / "ck")
    assert type(model) is mpinn.MLPClassifier and model.n_iter_ == 5
    assert model.get_params()["hidden_layer_sizes"] == (5,)
    legacy = __import__("mpinn.train.checkpoint", fromlist=["load_model"]).load_model(tmp_path / "ck")
    np.testing.assert_array_equal(model.predict_proba(IRIS_X), legacy.predict_proba(IRIS_X))
    np.testing.assert_array_equal(model.predict(IRIS_X), legacy.predict(IRIS_X))


# ---- no sklearn needed; the example script ---------------------------------------------------


def test_training_does_not_need_sklearn():
    code = """
import sys
sys.modules["sklearn"] = None  # any import of scikit-learn fails
import numpy as np, mpinn
rng = np.random.RandomState(0)
X = rng.normal(size=(60, 3)); y = (X[:, 0] > 0).astype(int)
clf = mpinn.MLPClassifier(hidden_layer_sizes=(4,), max_iter=30, early_stopping=True, random_state=0).fit(X, y)
reg = mpinn.MLPRegressor(hidden_layer_sizes=(4,), solver="lbfgs", max_iter=20).fit(X, X[:, 1])
print(clf.score(X, y) > 0.5, reg.predict(X).shape, "mpi4py" in sys.modules)
try:
    clf.to_sklearn()
except ImportError as exc:
    print(exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("True (60,)")
    assert "pip install 'mpinn[sklearn]'" in lines[1]


def _accuracy(text):
    return re.findall(r"^Accuracy: (\S+)$", text, re.M)


def test_classic_example_under_mpiexec_prints_sklearn_accuracy(tmp_path):
    """examples/iris_sklearn.py under `mpiexec -n 2`, and the same script with sklearn's import."""
    from launch import clean_env, mpiexec

    script = os.path.join(ROOT, "examples", "iris_sklearn.py")
    source = open(script).read()
    assert source.count("from mpinn import MLPClassifier") == 1
    sk_script = tmp_path / "iris_sk.py"
    sk_script.write_text(source.replace("from mpinn import MLPClassifier",
                                        "from sklearn.neural_network import MLPClassifier"))
    env = clean_env(OMP_NUM_THREADS=1, OPENBLAS_NUM_THREADS=1)
    # Block-buffered, each rank's output reaches mpiexec in whole pieces; unbuffered, the two
    # ranks' lines could interleave mid-line.
    env.pop("PYTHONUNBUFFERED", None)
    ours = subprocess.run([*mpiexec(), "-n", "2", sys.executable, script], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)
    assert ours.returncode == 0, ours.stderr
    ref = subprocess.run([sys.executable, str(sk_script)], capture_output=True, text=True, timeout=300, env=env)
    assert ref.returncode == 0, ref.stderr
    assert _accuracy(ours.stdout) == _accuracy(ref.stdout) * 2  # each rank prints it
    # mpinn's verbose lines (rank 0 only) are sklearn's, loss for loss.
    ours_iter = [l for l in ours.stdout.splitlines() if l.startswith("Iteration")]
    assert ours_iter == [l for l in ref.stdout.splitlines() if l.startswith("Iteration")]
