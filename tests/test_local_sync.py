"""Model averaging, `--sync local:K` (mpinn/parallel/local_averaging.py).

Serial: one rank is the allreduce run bit for bit; bad values are one-line errors (exit 2).
Under `mpiexec -n N python -m pytest --with-mpi -m mpi tests/test_local_sync.py` (`make test`
runs 2 and 3 ranks): K times fewer reductions, every rank ends each epoch with the same model
and loss, K = 1 with (momentum) SGD is the allreduce update (the independent reference: that
update is linear in the gradient), with sample weights K = 1 reports allreduce's loss curve
and stops at its epoch, a window whose rows all weigh 0 keeps the model (on every rank) or
gives its rank no say (on one), warm-up steps are allreduce steps, and a preempted run
resumes to the uninterrupted one at the same rank count and continues on another.
"""

import dataclasses

import numpy as np
import pytest

from mpinn.parallel.comm import Comm
from mpinn.train.config import TrainConfig
from mpinn.parallel.comm import SerialComm
from mpinn.train.problem import problem_from_arrays
from mpinn.options import parse_sync
from mpinn.train.loop import Trainer

from launch import run

STEPS = 8  # steps per epoch: 131 rows in batches of 17


def _data(n=131, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, 9))
    y = (X[:, 0] + X[:, 1] ** 2 > 0.5).astype(int) + (X[:, 2] > 1) + 2 * (X[:, 3] > 0.8)
    return X, y


def _trainer(comm, sync, checkpointer=None, faults=None, weights=False, **kw):
    X, y = _data()
    cfg = TrainConfig(**{"hidden": (23, 11), "epochs": 4, "batch_size": 17, "seed": 5, "solver": "adam",
                         "alpha": 1e-3, "sync": sync, "n_iter_no_change": 100, **kw}).validate()
    problem = problem_from_arrays(X, y, cfg, comm)
    if weights is not False:  # True: non-uniform weights; or the weight of every row
        w = np.linspace(0.5, 2.0, len(X)) if weights is True else weights
        problem = dataclasses.replace(problem, sample_weight=problem.shard.take(w))
    return Trainer(cfg, problem, comm, log=lambda line: None, checkpointer=checkpointer, faults=faults)


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# ---- serial ----------------------------------------------------------------------------


@pytest.mark.parametrize("solver,weights", [("adam", False), ("adam", True), ("sgd", False)])
def test_one_rank_local_is_the_allreduce_run_bit_for_bit(solver, weights):
    comm = Comm(SerialComm())
    ref = _trainer(comm, "allreduce", solver=solver, weights=weights, lr=0.01).fit()
    for k in (1, 3):
        local = _trainer(comm, f"local:{k}", solver=solver, weights=weights, lr=0.01).fit()
        assert local.sync.name == f"local:{k}" and local.sync.averages == 4 * -(-STEPS // k)
        assert np.array_equal(local.params, ref.params)
        assert local.loss_curve == ref.loss_curve


def test_parse_sync():
    assert parse_sync("local:4") == ("local", 4)
    assert parse_sync("sharded") == ("sharded", None)
    for bad in ("local:0", "local:x", "local:-2", "local:", "local:1.5", "average"):
        with pytest.raises(ValueError):
            parse_sync(bad)


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")
def test_estimator_takes_local_sync():
    from mpinn import MLPClassifier

    X, y = _data()
    a = MLPClassifier((8,), max_iter=3, random_state=0, sync="allreduce").fit(X, y)
    b = MLPClassifier((8,), max_iter=3, random_state=0, sync="local:2").fit(X, y)
    assert all(np.array_equal(u, v) for u, v in zip(a.coefs_, b.coefs_))
    with pytest.raises(ValueError, match="local:0"):
        MLPClassifier((8,), max_iter=1, sync="local:0").fit(X, y)


@pytest.mark.parametrize("args,says", [
    (["--sync", "local:0"], "--sync: local:K"),
    (["--sync", "local:x"], "--sync: local:K"),
    (["--sync", "local:4", "--sync-warmup-steps", "-1"], "--sync-warmup-steps: must be an integer >= 0"),
    (["--sync", "allreduce", "--sync-warmup-steps", "5"], "--sync-warmup-steps: only --sync local:K"),
])
def test_bad_values_are_one_line_errors(iris, tmp_path, args, says):
    proc = run(["train", "--data", iris, "--epochs", "1", "--checkpoint", tmp_path / "ck", *args], check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr
    assert not (tmp_path / "ck").exists()


def test_start_line_says_the_result_depends_on_the_rank_count(iris):
    proc = run(["train", "--data", iris, "--epochs", "2", "--sync", "local:2", "--sync-warmup-steps", "1"])
    assert "sync local:2 (model averaging: the result depends on the rank count, 1)" in proc.stdout


# ---- under mpiexec ------------------------------------------------------------------------

MPI = pytest.importorskip("mpi4py.MPI")


def _same_on_every_rank(world, a):
    a = np.ascontiguousarray(a, dtype=np.float64)
    root = a.copy()
    world.Bcast(root, root=0)
    return np.array_equal(root, a)


@pytest.mark.mpi(min_size=2)
def test_k_times_fewer_reductions_and_one_model_per_epoch(world):
    base = Comm(world)
    ref = _trainer(base, "allreduce").fit()
    assert base.allreduce_calls == 4 * STEPS
    assert [r["reductions"] for r in ref.history] == [STEPS] * 4
    for k in (2, 4, 8):
        comm = Comm(world)
        local = _trainer(comm, f"local:{k}").fit()
        assert comm.allreduce_calls == 4 * STEPS // k  # K times fewer
        assert [r["reductions"] for r in local.history] == [STEPS // k] * 4
        assert _same_on_every_rank(world, local.params)
        assert _same_on_every_rank(world, local.loss_curve)
        assert _same_on_every_rank(world, local.optimizer.m) and _same_on_every_rank(world, local.optimizer.v)
        assert local.loss_curve[-1] < local.loss_curve[0]
    three = _trainer(Comm(world), "local:3", epochs=1).fit()
    assert three.history[0]["reductions"] == 3  # after steps 3 and 6, and at the epoch's end


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("solver", ["sgd", "gd"])
def test_every_step_averaged_sgd_is_the_allreduce_update(world, solver):
    """Rows-weighted averaging after one local step each: for an update linear in the gradient
    (momentum too; each rank takes its share of the L2 term) this is the one-rank allreduce step."""
    local = _trainer(Comm(world), "local:1", solver=solver, lr=0.05).fit()
    alone = _trainer(Comm(MPI.COMM_SELF), "allreduce", solver=solver, lr=0.05).fit()
    assert _rel(local.params, alone.params) <= 1e-12
    np.testing.assert_allclose(local.loss_curve, alone.loss_curve, rtol=1e-12)
    adam = _trainer(Comm(world), "local:1").fit()  # Adam is not linear: another model
    assert _rel(adam.params, _trainer(Comm(MPI.COMM_SELF), "allreduce").fit().params) > 1e-6


@pytest.mark.mpi(min_size=2)
def test_one_step_windows_report_the_allreduce_loss_with_sample_weights(world):
    """With sample weights the epoch loss is allreduce's, sum over steps of B * L / S (B the
    batch's rows, L and S its weighted loss and weight sums over all ranks), not the ranks'
    sum of m_r * L_r / S_r: the same loss curve and the same stopping epoch."""
    kw = dict(solver="sgd", lr=0.05, weights=True, epochs=60, n_iter_no_change=2, tol=1e-2)
    ref = _trainer(Comm(world), "allreduce", **kw).fit()
    local = _trainer(Comm(world), "local:1", **kw).fit()
    assert ref.stop_reason == "converged" and local.stop_reason == "converged"
    assert local.epoch == ref.epoch  # n_iter_
    assert np.max(np.abs(np.subtract(local.loss_curve, ref.loss_curve))) <= 1e-12
    assert _same_on_every_rank(world, local.loss_curve)


def _recording(trainer):
    """After every step's settle: (the contribution it returned, the parameters, Adam's t)."""
    seen, settle = [], trainer.sync.settle

    def record(contribution, stop, last_in_epoch):
        out = settle(contribution, stop, last_in_epoch)
        seen.append((out[0], trainer.params.copy(), getattr(trainer.optimizer, "t", None)))
        return out

    trainer.sync.settle = record
    return seen


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("solver", ["sgd", "adam"])
@pytest.mark.parametrize("k", [1, 2])
def test_a_window_without_weight_leaves_the_model_as_it_is(world, solver, k):
    """Rows 34-67, the 3rd and 4th batch of every epoch (--shuffle none), weigh 0 on every
    rank: no rank steps there, and the average keeps the model (not 0/0: NaN) and Adam's t."""
    w = np.linspace(0.5, 2.0, 131)
    w[2 * 17:4 * 17] = 0
    trainer = _trainer(Comm(world), f"local:{k}", solver=solver, weights=w, shuffle="none", lr=0.01)
    seen = _recording(trainer)
    trainer.fit()
    assert trainer.epoch == 4 and np.isfinite(trainer.params).all()
    assert _same_on_every_rank(world, trainer.params)
    assert trainer.loss_curve[-1] < trainer.loss_curve[0]
    for epoch in range(4):
        before, zero, window_end = (seen[epoch * STEPS + i] for i in (1, 2, 3))
        assert zero[0] == window_end[0] == 0.0  # an all-zero batch adds 0, as with allreduce
        assert np.array_equal(window_end[1], before[1]) and window_end[2] == before[2]
        assert seen[epoch * STEPS + 5][0] > 0


@pytest.mark.mpi(min_size=2)
def test_a_rank_without_weight_has_no_say(world):
    """Rank 0's rows all weigh 0: it does not step, and its (old) model must not pull the
    average back; with one-step windows and SGD the run is the allreduce run (without the L2
    term, whose share of a rank with rows but no weight is lost, see local_averaging.py)."""
    rows = _trainer(Comm(world), "allreduce").problem.shard.rows  # collective
    first = world.bcast(rows, root=0)
    w = np.linspace(0.5, 2.0, 131)
    w[first] = 0
    kw = dict(solver="sgd", lr=0.05, alpha=0.0, weights=w)
    ref = _trainer(Comm(world), "allreduce", **kw).fit()
    local = _trainer(Comm(world), "local:1", **kw).fit()
    assert np.isfinite(local.params).all() and _rel(local.params, ref.params) <= 1e-12
    assert np.max(np.abs(np.subtract(local.loss_curve, ref.loss_curve))) <= 1e-12


@pytest.mark.mpi(min_size=2)
def test_warmup_steps_are_allreduce_steps(world):
    ref = _trainer(Comm(world), "allreduce").fit()
    all_warm = _trainer(Comm(world), "local:4", sync_warmup_steps=4 * STEPS).fit()
    assert np.array_equal(all_warm.params, ref.params) and all_warm.loss_curve == ref.loss_curve
    comm = Comm(world)
    part = _trainer(comm, "local:4", sync_warmup_steps=5).fit()
    # epoch 1: 5 allreduce steps, then local steps 6-8 averaged at the epoch's end
    assert [r["reductions"] for r in part.history] == [6, 2, 2, 2] and comm.allreduce_calls == 12
    assert _same_on_every_rank(world, part.params)


@pytest.mark.mpi(min_size=2)
def test_preempted_local_run_resumes(world, tmp_path_factory):
    """Rank 0 is signalled at step 11; the ranks agree at the next average (step 12, K = 4),
    checkpoint and stop. Resumed on the same ranks: the uninterrupted run bit for bit. Resumed on
    N - 1 ranks: the checkpoint's model continues there (local SGD's result depends on N)."""
    from mpinn.train.checkpoint import Checkpointer, read_checkpoint
    from mpinn.parallel.faults import Preemption, parse_faults

    size, rank = world.Get_size(), world.Get_rank()
    directory = tmp_path_factory.mktemp("ckpt") if rank == 0 else None
    directory = world.bcast(str(directory) if directory else None, root=0)
    Preemption.install()
    try:
        comm = Comm(world)
        first = _trainer(comm, "local:4", checkpoint=directory, checkpointer=Checkpointer(directory, comm),
                         faults=parse_faults("0:11:term", rank))
        first.fit()
    finally:
        Preemption.requested = False
    assert first.stop_reason == "preempted" and (first.epoch, first.step_in_epoch) == (1, 4)
    attrs, arrays = read_checkpoint(directory)
    assert attrs["state"]["optimizer"]["local_averaging"] == {"every": 4, "since": 0}
    uninterrupted = _trainer(Comm(world), "local:4").fit()
    second = _trainer(Comm(world), "local:4", checkpoint=directory)
    second.restore(attrs["state"], arrays)
    second.fit()
    assert np.array_equal(second.params, uninterrupted.params)
    assert second.loss_curve == uninterrupted.loss_curve
    sub = world.Split(0 if rank < size - 1 else MPI.UNDEFINED, rank)
    try:
        if sub != MPI.COMM_NULL:
            fewer = _trainer(Comm(sub), "local:4", checkpoint=directory)
            fewer.restore(attrs["state"], arrays)
            assert np.array_equal(fewer.params, arrays["params"])
            fewer.fit()
            assert fewer.epoch == 4 and np.isfinite(fewer.params).all()
            assert _rel(fewer.params, uninterrupted.params) < 0.1  # close, not equal: N changed
    finally:
        if sub != MPI.COMM_NULL:
            sub.Free()
        world.Barrier()
