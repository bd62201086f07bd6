"""Under mpiexec -n N: N ranks train exactly what one rank trains.

Run by `make test` as `mpiexec -n 2|3 python -m pytest --with-mpi -m mpi`. Each rank also
trains the same problem alone on COMM_SELF; that serial run is the reference.
"""

import json

import numpy as np
import pytest

from mpinn.parallel.comm import Comm
from mpinn.train.config import TrainConfig
from mpinn.train.problem import problem_from_arrays
from mpinn.train.loop import Trainer, evaluate

MPI = pytest.importorskip("mpi4py.MPI")


class CountingComm:
    """Forwards to a real communicator and records each collective call and buffer size."""

    def __init__(self, comm):
        self._comm = comm
        self.calls = []

    def __getattr__(self, name):
        attr = getattr(self._comm, name)
        if not callable(attr) or name.startswith("Get_"):
            return attr

        def call(*args, **kwargs):
            buf = args[1] if name == "Allreduce" else None
            self.calls.append((name, getattr(buf, "size", None)))
            return attr(*args, **kwargs)

        return call


def _data(task, n=97, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, 5))
    if task == "classify":
        y = (X[:, 0] + X[:, 1] ** 2 > 0.5).astype(int) + (X[:, 2] > 1)
    else:
        y = np.stack([np.sin(X[:, 0]) + X[:, 1], X[:, 2] * X[:, 3]], axis=1)
    return X, y


def _train(X, y, comm, task="classify", **kw):
    cfg = TrainConfig(**{"hidden": (6, 4), "epochs": 15, "batch_size": 16, "seed": 7, **kw}).validate()
    problem = problem_from_arrays(X, y, cfg, comm, task=task)
    return Trainer(cfg, problem, comm, log=lambda line: None).fit()


def _rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("shard", ["block", "strided", "weighted"])
@pytest.mark.parametrize("solver,task", [("sgd", "classify"), ("adam", "classify"), ("adam", "regress")])
def test_n_ranks_train_the_same_model_as_one(world, shard, solver, task):
    if shard == "weighted":
        shard = "weighted:" + ",".join(str(r + 1) for r in range(world.Get_size()))
    X, y = _data(task)
    alone = _train(X, y, Comm(MPI.COMM_SELF), task=task, solver=solver, shard="block")
    together = _train(X, y, Comm(world), task=task, solver=solver, shard=shard)
    assert together.epoch == alone.epoch
    np.testing.assert_allclose(together.loss_curve, alone.loss_curve, rtol=1e-10)
    assert _rel(together.params, alone.params) <= 1e-10
    # Lockstep: every rank holds bitwise the same parameters.
    first = together.params.copy()
    world.Bcast(first, root=0)
    assert np.array_equal(first, together.params)


@pytest.mark.mpi(min_size=2)
def test_rank_without_rows_still_joins(world):
    size = world.Get_size()
    X, y = _data("classify")
    weights = ",".join(["0"] + ["1"] * (size - 1))
    alone = _train(X, y, Comm(MPI.COMM_SELF), solver="sgd")
    together = _train(X, y, Comm(world), solver="sgd", shard=f"weighted:{weights}")
    if world.Get_rank() == 0:
        assert together.problem.X.shape[0] == 0
    assert _rel(together.params, alone.params) <= 1e-10


@pytest.mark.mpi(min_size=2)
def test_exactly_one_gradient_allreduce_per_step(world):
    X, y = _data("classify")
    counting = CountingComm(world)
    comm = Comm(counting)
    tr = _train(X, y, comm, solver="adam", epochs=4, batch_size=10)
    steps = 4 * int(np.ceil(len(X) / 10))
    grads = [c for c in counting.calls if c == ("Allreduce", tr.model.n_params + 4)]
    assert len(grads) == steps == comm.allreduce_calls
    # No pickle-based (lowercase) collective was used anywhere in training.
    assert all(name[0].isupper() for name, _ in counting.calls)


@pytest.mark.mpi(min_size=2)
def test_metrics_do_not_depend_on_rank_count(world):
    X, y = _data("classify")
    alone = _train(X, y, Comm(MPI.COMM_SELF), solver="adam")
    together = _train(X, y, Comm(world), solver="adam")
    ref = evaluate(alone.model, alone.params, alone.problem, X, y, alone.comm)
    shard = together.problem.shard
    got = evaluate(together.model, together.params, together.problem, X[shard.rows], y[shard.rows], together.comm)
    if world.Get_rank() == 0:
        assert got["confusion"] == ref["confusion"]
        assert got["accuracy"] == ref["accuracy"]
    Xr, yr = _data("regress")
    alone = _train(Xr, yr, Comm(MPI.COMM_SELF), task="regress", solver="adam")
    together = _train(Xr, yr, Comm(world), task="regress", solver="adam")
    ref = evaluate(alone.model, alone.params, alone.problem, Xr, yr, alone.comm)
    shard = together.problem.shard
    got = evaluate(together.model, together.params, together.problem, Xr[shard.rows], yr[shard.rows], together.comm)
    if world.Get_rank() == 0:
        for key in ("mse", "mae", "r2"):
            assert got[key] == pytest.approx(ref[key], rel=1e-10)


@pytest.mark.mpi(min_size=2)
def test_bad_values_on_one_rank_fail_every_rank(world):
    from mpinn.errors import InputError

    X, y = _data("classify")
    X[-1, 2] = np.nan  # lives on the last rank's block only
    with pytest.raises(InputError, match="NaN or Inf"):
        _train(X, y, Comm(world))


@pytest.mark.mpi(min_size=2)
def test_decisions_are_rank_zeros(world):
    comm = Comm(world)
    value = {"stop": True, "path": "/x"} if comm.rank == 0 else None
    assert comm.bcast_json(value) == {"stop": True, "path": "/x"}
    message = "bad shard" if comm.rank == comm.size - 1 else None
    assert comm.any_error(message) == "bad shard"
    assert comm.any_error(None) is None


@pytest.mark.mpi(min_size=2)
def test_bcast_json_gives_every_rank_the_roots_value(world):
    comm = Comm(world)
    last = comm.size - 1
    # Each rank passes its own value: only the root's may come back, on every rank.
    values = [
        [1, 2.5, None, True, "x"],
        {"path": "/tmp/ü/ck", "nested": {"list": [[], {}], "big": 2 ** 53 + 1}, "unicode": "ε → ∞"},
        "a" * 100_000,  # longer than any eager-message limit
        "",
        None,
    ]
    results = []
    for root in (0, last):
        for value in values:
            mine = {"rank": comm.rank, "value": value} if comm.rank == root else ["not", comm.rank]
            try:  # (a value that fails to decode must not leave the other ranks waiting)
                results.append((root, value, comm.bcast_json(mine, root=root)))
            except ValueError as exc:
                results.append((root, value, exc))
    for root, value, got in results:
        assert got == {"rank": root, "value": value}
        assert json.dumps(got) == json.dumps({"rank": root, "value": value})
    # Decoded afresh on the others (not the caller's object); rank 0's value only on rank 0.
    sent = {"k": [1]}
    got = comm.bcast_json(sent if comm.rank == 0 else {"k": [comm.rank]})
    assert got == {"k": [1]}
    assert (got is sent) == (comm.rank == 0)
