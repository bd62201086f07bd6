"""Serial training against scikit-learn's MLP: same seed, same data -> same trajectory."""

import warnings

import numpy as np
import pytest
from mpi4py import MPI

from mpinn.parallel.comm import Comm
from mpinn.train.config import TrainConfig
from mpinn.nn.optim import make_optimizer
from mpinn.train.problem import problem_from_arrays
from mpinn.train.loop import Trainer, evaluate

sk_nn = pytest.importorskip("sklearn.neural_network")
sk_datasets = pytest.importorskip("sklearn.datasets")


def fit_mpinn(X, y, task="classify", comm=None, **kw):
    cfg = TrainConfig(**kw).validate()
    comm = comm or Comm(MPI.COMM_SELF)
    problem = problem_from_arrays(X, y, cfg, comm, task=task)
    return Trainer(cfg, problem, comm, log=lambda line: None).fit()


def fit_sklearn(X, y, cls, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(**kw).fit(X, y)


def assert_same_run(tr, sk, rel=1e-10):
    assert tr.epoch == sk.n_iter_
    assert tr.t == sk.t_
    np.testing.assert_allclose(tr.loss_curve, sk.loss_curve_, rtol=rel)
    for (W, b), cW, cb in zip(tr.model.views(tr.params), sk.coefs_, sk.intercepts_):
        np.testing.assert_allclose(W, cW, rtol=rel, atol=rel * np.abs(cW).max())
        np.testing.assert_allclose(b, cb, rtol=rel, atol=rel * np.abs(cb).max())


IRIS_X, IRIS_Y = sk_datasets.load_iris(return_X_y=True)

SGD_VARIANTS = [
    dict(momentum=0.9, nesterov=True, lr_schedule="constant"),
    dict(momentum=0.9, nesterov=False, lr_schedule="constant"),
    dict(momentum=0.5, nesterov=True, lr_schedule="invscaling"),
    dict(momentum=0.9, nesterov=True, lr_schedule="adaptive"),
    dict(momentum=0.0, nesterov=False, lr_schedule="constant"),
]


@pytest.mark.parametrize("shuffle", ["global", "none"])
@pytest.mark.parametrize("variant", SGD_VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_sgd_matches_sklearn_on_iris(variant, shuffle):
    tr = fit_mpinn(IRIS_X, IRIS_Y, hidden=(10,), solver="sgd", lr=0.01, epochs=150, batch_size=32,
                   seed=3, shuffle=shuffle, **variant)
    sk = fit_sklearn(IRIS_X, IRIS_Y, sk_nn.MLPClassifier, hidden_layer_sizes=(10,), solver="sgd",
                     learning_rate_init=0.01, max_iter=150, batch_size=32, random_state=3,
                     shuffle=shuffle == "global", momentum=variant["momentum"],
                     nesterovs_momentum=variant["nesterov"], learning_rate=variant["lr_schedule"])
    assert_same_run(tr, sk)


@pytest.mark.parametrize("shuffle", ["global", "none"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic"])
def test_adam_matches_sklearn_on_iris(activation, shuffle):
    tr = fit_mpinn(IRIS_X, IRIS_Y, hidden=(8, 6), activation=activation, solver="adam", lr=0.01,
                   epochs=60, batch_size=50, seed=1, shuffle=shuffle)
    sk = fit_sklearn(IRIS_X, IRIS_Y, sk_nn.MLPClassifier, hidden_layer_sizes=(8, 6), activation=activation,
                     solver="adam", learning_rate_init=0.01, max_iter=60, batch_size=50, random_state=1,
                     shuffle=shuffle == "global")
    assert_same_run(tr, sk)


def test_stops_on_no_improvement_at_the_same_epoch_as_sklearn():
    tr = fit_mpinn(IRIS_X, IRIS_Y, hidden=(5,), solver="adam", lr=0.05, epochs=500, tol=1e-3,
                   n_iter_no_change=5, seed=0)
    sk = fit_sklearn(IRIS_X, IRIS_Y, sk_nn.MLPClassifier, hidden_layer_sizes=(5,), solver="adam",
                     learning_rate_init=0.05, max_iter=500, tol=1e-3, n_iter_no_change=5, random_state=0)
    assert tr.stop_reason == "converged" and tr.epoch < 500
    assert_same_run(tr, sk)


def test_binary_and_regression_match_sklearn():
    X, y = sk_datasets.make_classification(n_samples=120, n_features=6, random_state=0)
    tr = fit_mpinn(X, y, hidden=(7,), solver="sgd", lr=0.05, epochs=40, seed=2)
    sk = fit_sklearn(X, y, sk_nn.MLPClassifier, hidden_layer_sizes=(7,), solver="sgd",
                     learning_rate_init=0.05, max_iter=40, random_state=2)
    assert tr.model.output == "logistic"
    assert_same_run(tr, sk)
    X, y = sk_datasets.make_regression(n_samples=90, n_features=5, noise=0.1, random_state=0)
    y = y / y.std()
    tr = fit_mpinn(X, y, task="regress", hidden=(9,), activation="tanh", solver="adam", lr=0.01,
                   epochs=30, batch_size=16, seed=4)
    sk = fit_sklearn(X, y, sk_nn.MLPRegressor, hidden_layer_sizes=(9,), activation="tanh", solver="adam",
                     learning_rate_init=0.01, max_iter=30, batch_size=16, random_state=4)
    assert_same_run(tr, sk)


def test_gradient_descent_is_w_minus_lr_grad():
    """One full-batch gd step by hand: w1 = w0 - lr * (dL/dw at w0)."""
    cfg = TrainConfig(hidden=(4,), solver="gd", lr=0.3, epochs=1, batch_size="full", seed=0, alpha=0.01).validate()
    comm = Comm(MPI.COMM_SELF)
    problem = problem_from_arrays(IRIS_X, IRIS_Y, cfg, comm)
    tr = Trainer(cfg, problem, comm, log=lambda line: None)
    w0 = tr.params.copy()
    grad = tr.model.new_buffer()
    tr.model.loss_grad_sum(w0, IRIS_X.copy(), tr.Y, grad)
    tr.model.finish_gradient(w0, grad, 0.01, len(IRIS_X))
    tr.fit()
    np.testing.assert_allclose(tr.params, w0 - 0.3 * grad, rtol=1e-14, atol=1e-15)


def test_loss_target_stops_training():
    tr = fit_mpinn(IRIS_X, IRIS_Y, hidden=(10,), solver="adam", lr=0.01, epochs=1000, loss_target=0.5, seed=0)
    assert tr.stop_reason == "loss_target"
    assert tr.loss_curve[-1] <= 0.5 < tr.loss_curve[-2]


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_optimizer_steps_match_sklearn_optimizers(solver):
    so = pytest.importorskip("sklearn.neural_network._stochastic_optimizers")
    rng = np.random.RandomState(0)
    shapes = [(3, 4), (4,), (4, 2), (2,)]
    params = [rng.normal(size=s) for s in shapes]
    flat = np.concatenate([p.ravel() for p in params])
    if solver == "sgd":
        ref = so.SGDOptimizer([p.copy() for p in params], 0.1, "constant", 0.9, True, 0.5)
        ours = make_optimizer("sgd", flat.size, np.float64, lr=0.1, momentum=0.9, nesterov=True)
    else:
        ref = so.AdamOptimizer([p.copy() for p in params], 0.01, 0.9, 0.999, 1e-8)
        ours = make_optimizer("adam", flat.size, np.float64, lr=0.01)
    ref_params = [p.copy() for p in params]
    for _ in range(5):
        grads = [rng.normal(size=s) for s in shapes]
        ref.update_params(ref_params, grads)
        ours.step(flat, np.concatenate([g.ravel() for g in grads]))
    np.testing.assert_array_equal(flat, np.concatenate([p.ravel() for p in ref_params]))


def test_evaluate_matches_sklearn_metrics():
    metrics = pytest.importorskip("sklearn.metrics")
    tr = fit_mpinn(IRIS_X, IRIS_Y, hidden=(10,), solver="adam", lr=0.01, epochs=50, seed=0)
    report = evaluate(tr.model, tr.params, tr.problem, IRIS_X, IRIS_Y, tr.comm)
    pred = np.argmax(tr.model.forward(tr.params, IRIS_X), axis=1)
    assert report["accuracy"] == metrics.accuracy_score(IRIS_Y, pred)
    assert report["f1_macro"] == pytest.approx(metrics.f1_score(IRIS_Y, pred, average="macro"), rel=1e-12)
    assert report["confusion"] == metrics.confusion_matrix(IRIS_Y, pred).tolist()


@pytest.mark.parametrize("k", [2, 3])
def test_in_memory_class_targets_are_codes_encoded_per_batch(k):
    """In memory too, class targets are kept as integer codes (EncodedRows) and encoded per
    batch: the rows gathered equal model.encode_targets' one-hot / 0-1 rows."""
    from mpinn.nn.model import encode_targets
    from mpinn.data.stream import EncodedRows

    rng = np.random.RandomState(0)
    X = rng.rand(40, 3)
    y = rng.randint(0, k, 40) * 3 + 1
    comm = Comm(MPI.COMM_SELF)
    cfg = TrainConfig(hidden=(4,), epochs=1, batch_size=8, seed=0).validate()
    problem = problem_from_arrays(X, y, cfg, comm)
    trainer = Trainer(cfg, problem, comm, log=lambda line: None)
    assert isinstance(trainer.Y, EncodedRows) and trainer.Y.codes.dtype == np.int16
    want = encode_targets(y, problem.classes, trainer.model.output, trainer.model.dtype)
    rows = rng.permutation(40)[:13]
    out = np.empty((13, trainer.Y.shape[1]), trainer.model.dtype)
    np.take(trainer.Y, rows, axis=0, out=out)
    assert np.array_equal(out, want[rows])
    assert trainer.Y.shape == want.shape
