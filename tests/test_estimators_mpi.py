"""The estimators under `mpiexec -n 2|3 python -m pytest --with-mpi -m mpi`: N ranks fit what
scikit-learn fits on one process, and every rank ends with the same fitted attributes."""

import os
import tempfile

import numpy as np
import pytest

import mpinn
from parity import (BIN_X, BIN_Y, DATA, IRIS_X, IRIS_Y, REG_X, REG_Y, SOLVERS, assert_same_fit, fit_both,
                    quiet, sk_nn)

MPI = pytest.importorskip("mpi4py.MPI")


def assert_same_on_every_rank(comm, est):
    """Every fitted array and curve is bitwise rank 0's."""
    mine = np.concatenate([a.ravel() for a in est.coefs_ + est.intercepts_] +
                          [np.asarray(getattr(est, n) or [], dtype=np.float64).ravel()
                           for n in ("loss_curve_", "validation_scores_") if hasattr(est, n)])
    root = comm.bcast(mine, root=0)
    assert np.array_equal(mine, root)
    assert comm.allgather((est.n_iter_, getattr(est, "t_", 0))) == [(est.n_iter_, getattr(est, "t_", 0))] * comm.size


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("shuffle", [True, False], ids=["shuffle", "no-shuffle"])
@pytest.mark.parametrize("solver", sorted(SOLVERS))
@pytest.mark.parametrize("data", sorted(DATA))
def test_n_ranks_train_what_sklearn_trains(world, data, solver, shuffle):
    X, y, base = DATA[data]
    ours, ref = fit_both("MLPClassifier", X, y, mpinn_kw={"comm": world}, **{**base, **SOLVERS[solver]},
                         shuffle=shuffle, random_state=3)
    assert_same_fit(ours, ref, rtol=1e-10)
    assert_same_on_every_rank(world, ours)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("frozen_shard", ["block", "strided", "weighted"])
def test_initial_weights_are_sklearns_on_every_rank(world, monkeypatch, frozen_shard):
    from sklearn.neural_network import _stochastic_optimizers as sko

    from mpinn.nn import optim

    monkeypatch.setattr(optim.SGD, "step", lambda self, params, grad, *finish: None)
    monkeypatch.setattr(sko.SGDOptimizer, "update_params", lambda self, params, grads: None)
    shard = "weighted:" + ",".join(str(r + 1) for r in range(world.Get_size())) if frozen_shard == "weighted" \
        else frozen_shard
    ours, ref = fit_both("MLPClassifier", IRIS_X, IRIS_Y, mpinn_kw={"comm": world, "shard": shard},
                         hidden_layer_sizes=(7, 5), solver="sgd", max_iter=1, random_state=11)
    for a, b in zip(ours.coefs_ + ours.intercepts_, ref.coefs_ + ref.intercepts_):
        np.testing.assert_array_equal(a, b)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", ["multiclass", "binary-stratified", "regressor", "weighted", "loss-stall"])
def test_early_stopping_at_the_same_epoch_on_n_ranks(world, case):
    kw = {"mpinn_kw": {"comm": world}}
    if case == "regressor":
        ours, ref = fit_both("MLPRegressor", REG_X, REG_Y, **kw, hidden_layer_sizes=(9,), learning_rate_init=0.01,
                             max_iter=300, early_stopping=True, random_state=2)
    elif case == "binary-stratified":
        ours, ref = fit_both("MLPClassifier", BIN_X, BIN_Y, **kw, hidden_layer_sizes=(7,), learning_rate_init=0.01,
                             max_iter=300, early_stopping=True, validation_fraction=0.2, random_state=1)
    elif case == "loss-stall":
        ours, ref = fit_both("MLPClassifier", IRIS_X, IRIS_Y, **kw, hidden_layer_sizes=(5,), learning_rate_init=0.05,
                             max_iter=500, tol=1e-3, n_iter_no_change=5, random_state=0)
    else:
        w = np.random.RandomState(0).uniform(0.5, 2, len(IRIS_Y)) if case == "weighted" else None
        ours, ref = fit_both("MLPClassifier", IRIS_X, IRIS_Y, fit_kw={"sample_weight": w}, **kw,
                             hidden_layer_sizes=(10,), solver="sgd", learning_rate_init=0.01, max_iter=300,
                             early_stopping=True, n_iter_no_change=5, random_state=0)
    assert ref.n_iter_ < 300
    assert_same_fit(ours, ref, rtol=1e-10)
    assert_same_on_every_rank(world, ours)


@pytest.mark.mpi(min_size=2)
def test_partial_fit_warm_start_lbfgs_poisson_on_n_ranks(world):
    kw = dict(hidden_layer_sizes=(6,), solver="sgd", learning_rate_init=0.05, max_iter=15, random_state=0)
    ours, ref = mpinn.MLPClassifier(comm=world, **kw), sk_nn.MLPClassifier(**kw)
    for i in range(3):
        ours.partial_fit(IRIS_X[i::2], IRIS_Y[i::2], classes=[0, 1, 2])
        ref.partial_fit(IRIS_X[i::2], IRIS_Y[i::2], classes=[0, 1, 2])
    assert_same_fit(ours, ref, rtol=1e-10)
    ours.set_params(warm_start=True)
    ref.set_params(warm_start=True)
    quiet(ours.fit, IRIS_X, IRIS_Y)
    quiet(ref.fit, IRIS_X, IRIS_Y)
    assert_same_fit(ours, ref, rtol=1e-10)
    ours, ref = fit_both("MLPRegressor", REG_X, REG_Y, mpinn_kw={"comm": world}, hidden_layer_sizes=(9,),
                         solver="lbfgs", max_iter=60, random_state=2)
    assert_same_fit(ours, ref, rtol=1e-8)
    assert_same_on_every_rank(world, ours)
    counts = np.random.RandomState(0).poisson(np.exp(0.5 * REG_X[:, 0]))
    ours, ref = fit_both("MLPRegressor", REG_X, counts, mpinn_kw={"comm": world}, loss="poisson",
                         hidden_layer_sizes=(9,), learning_rate_init=0.01, max_iter=30, random_state=2)
    assert_same_fit(ours, ref, rtol=1e-10)


@pytest.mark.mpi(min_size=2)
def test_random_state_none_or_an_instance_agrees_across_ranks(world):
    np.random.seed(world.Get_rank())  # deliberately different global RNGs
    ours = quiet(mpinn.MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, comm=world).fit, IRIS_X, IRIS_Y)
    assert_same_on_every_rank(world, ours)
    rs = np.random.RandomState(100 + world.Get_rank())
    ours = quiet(mpinn.MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, early_stopping=True, random_state=rs,
                                     comm=world).fit, IRIS_X, IRIS_Y)
    assert_same_on_every_rank(world, ours)


@pytest.mark.mpi(min_size=2)
def test_fit_from_hdf5_reads_each_ranks_rows(world):
    from mpinn.data.builtin import write_hdf5

    directory = world.bcast(tempfile.mkdtemp() if world.Get_rank() == 0 else None, root=0)
    path = os.path.join(directory, "bin.h5")
    if world.Get_rank() == 0:
        write_hdf5(path, BIN_X, BIN_Y)
    world.Barrier()
    kw = dict(hidden_layer_sizes=(6,), max_iter=40, early_stopping=True, random_state=0)
    from_file = quiet(mpinn.MLPClassifier(comm=world, **kw).fit, path)
    ref = quiet(sk_nn.MLPClassifier(**kw).fit, BIN_X, BIN_Y)
    assert_same_fit(from_file, ref, rtol=1e-10)
    assert_same_on_every_rank(world, from_file)


@pytest.mark.mpi(min_size=2)
def test_one_gradient_allreduce_per_step(world):
    from mpinn.parallel.comm import Comm

    comm = Comm(world)
    est = quiet(mpinn.MLPClassifier(hidden_layer_sizes=(4,), batch_size=40, max_iter=3, random_state=0,
                                    comm=comm).fit, IRIS_X, IRIS_Y)
    assert est.n_iter_ == 3 and comm.allreduce_calls == 3 * 4  # 150 rows in batches of 40
    # COMM_SELF: every rank trains alone on all the data, the serial result.
    alone = quiet(mpinn.MLPClassifier(hidden_layer_sizes=(4,), batch_size=40, max_iter=3, random_state=0,
                                      comm=MPI.COMM_SELF).fit, IRIS_X, IRIS_Y)
    assert np.max(np.abs(alone.coefs_[0] - est.coefs_[0])) <= 1e-10 * np.max(np.abs(est.coefs_[0]))


@pytest.mark.mpi(min_size=2)
def test_different_arrays_on_one_rank_fail_every_rank(world):
    X = IRIS_X if world.Get_rank() == 0 else IRIS_X[:-1]
    y = IRIS_Y[: len(X)]
    with pytest.raises(ValueError, match="every rank must pass the same global arrays"):
        mpinn.MLPClassifier(comm=world, max_iter=2).fit(X, y)
    X = IRIS_X.copy()
    if world.Get_rank() == world.Get_size() - 1:
        X[-1, 0] = np.nan  # only one rank's copy, in its own shard
    with pytest.raises(ValueError, match="Input X contains NaN"):
        mpinn.MLPClassifier(comm=world, max_iter=2).fit(X, IRIS_Y)


@pytest.mark.mpi(min_size=2)
def test_a_rank_without_rows_still_joins(world):
    """shard weighted 0,1,...: rank 0 holds no row (training, validation or lbfgs), and the
    result is still the one-process result."""
    shard = "weighted:" + ",".join(["0"] + ["1"] * (world.Get_size() - 1))
    for cls, X, y, kw in [("MLPClassifier", BIN_X, BIN_Y, dict(early_stopping=True, solver="sgd")),
                          ("MLPClassifier", IRIS_X[:130], IRIS_Y[:130], dict(class_weight="balanced")),
                          ("MLPRegressor", REG_X, REG_Y, dict(solver="lbfgs")),
                          ("MLPRegressor", REG_X[:2], REG_Y[:2], dict(batch_size=1))]:
        kw = dict(hidden_layer_sizes=(5,), max_iter=20, random_state=0, **kw)
        together = quiet(getattr(mpinn, cls)(comm=world, shard=shard, **kw).fit, X, y)
        alone = quiet(getattr(mpinn, cls)(comm=MPI.COMM_SELF, **kw).fit, X, y)
        assert_same_fit(together, alone, rtol=1e-10)
        assert_same_on_every_rank(world, together)
