"""Shared by test_estimators.py and test_estimators_mpi.py: data, configurations, and the
comparison of an mpinn estimator with scikit-learn's fitted on the same data and seed."""

import warnings

import numpy as np
import pytest

import mpinn

sk_nn = pytest.importorskip("sklearn.neural_network")
sk_datasets = pytest.importorskip("sklearn.datasets")

IRIS_X, IRIS_Y = sk_datasets.load_iris(return_X_y=True)
_digits = sk_datasets.load_digits()
DIGITS_X, DIGITS_Y = _digits.data[:300] / 16.0, _digits.target[:300]  # a subset keeps the suite fast
BIN_X, BIN_Y = sk_datasets.make_classification(n_samples=120, n_features=6, random_state=0)
_reg_X, _reg_y = sk_datasets.make_regression(n_samples=100, n_features=5, noise=0.1, random_state=0)
REG_X, REG_Y = _reg_X, _reg_y / _reg_y.std()

# Every SGD rule (momentum, Nesterov, each learning-rate schedule) and Adam.
SOLVERS = {
    "sgd-nesterov": dict(solver="sgd", momentum=0.9, nesterovs_momentum=True, learning_rate="constant"),
    "sgd-momentum": dict(solver="sgd", momentum=0.9, nesterovs_momentum=False, learning_rate="constant"),
    "sgd-plain": dict(solver="sgd", momentum=0.0, nesterovs_momentum=False, learning_rate="constant"),
    "sgd-invscaling": dict(solver="sgd", momentum=0.5, learning_rate="invscaling", learning_rate_init=0.2),
    "sgd-adaptive": dict(solver="sgd", learning_rate="adaptive", tol=1e-2, n_iter_no_change=2),
    "adam": dict(solver="adam"),
}
DATA = {
    "iris": (IRIS_X, IRIS_Y, dict(hidden_layer_sizes=(10,), learning_rate_init=0.01, max_iter=60, batch_size=32)),
    "digits": (DIGITS_X, DIGITS_Y, dict(hidden_layer_sizes=(16,), learning_rate_init=0.05, max_iter=12, batch_size=64)),
}


def quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def fit_both(cls_name, X, y, fit_kw=None, mpinn_kw=None, **kw):
    """(mpinn estimator, sklearn estimator) fitted on the same data with the same parameters."""
    fit_kw = fit_kw or {}
    ours = quiet(getattr(mpinn, cls_name)(**kw, **(mpinn_kw or {})).fit, X, y, **fit_kw)
    ref = quiet(getattr(sk_nn, cls_name)(**kw).fit, X, y, **fit_kw)
    return ours, ref


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    scale = np.max(np.abs(b)) if b.size else 0.0
    return np.max(np.abs(a - b)) / scale if scale else np.max(np.abs(a - b), initial=0.0)


def assert_same_fit(ours, ref, rtol=1e-10):
    """The whole fitted state sklearn defines: n_iter_, t_, loss curve, best loss, validation
    scores, the final weights."""
    assert ours.n_iter_ == ref.n_iter_
    assert ours.n_layers_ == ref.n_layers_ and ours.n_outputs_ == ref.n_outputs_
    assert ours.out_activation_ == ref.out_activation_
    if hasattr(ref, "loss_curve_"):
        assert ours.t_ == ref.t_
        assert len(ours.loss_curve_) == len(ref.loss_curve_)
        assert rel(ours.loss_curve_, ref.loss_curve_) <= rtol
        if ref.best_loss_ is None:
            assert ours.best_loss_ is None
        else:
            assert ours.best_loss_ == pytest.approx(ref.best_loss_, rel=rtol)
    if getattr(ref, "validation_scores_", None) is not None:
        np.testing.assert_allclose(ours.validation_scores_, ref.validation_scores_, rtol=rtol, atol=1e-15)
        assert ours.best_validation_score_ == pytest.approx(ref.best_validation_score_, rel=rtol)
    assert ours.loss_ == pytest.approx(ref.loss_, rel=rtol)
    for a, b in zip(ours.coefs_ + ours.intercepts_, ref.coefs_ + ref.intercepts_):
        assert a.dtype == b.dtype
        assert rel(a, b) <= rtol
    if hasattr(ref, "classes_"):
        np.testing.assert_array_equal(ours.classes_, ref.classes_)
