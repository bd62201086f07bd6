"""The overlapped gradient reduction (sync="overlap"): one Iallreduce per layer slice, started
as backward produces it, covering [gradient | loss | weight | flag] exactly once, and training
exactly the model the single blocking Allreduce trains (on 1 rank and on N).

On one rank the communicator skips its collectives; the serial test makes them anyway
(Comm(..., calls_alone=True) over COMM_SELF) so that it starts, progresses and waits on real
Iallreduce requests."""

import numpy as np
import pytest

from mpinn.parallel.comm import Comm
from mpinn.train.config import TrainConfig
from mpinn.train.problem import problem_from_arrays
from mpinn.train.loop import Trainer


class _Recorder:
    """Forwards to a communicator (None: single process) and records reduction calls."""

    def __init__(self, comm=None):
        self._comm = comm
        self.calls = []
        self.requests = []

    def Get_rank(self):
        return 0 if self._comm is None else self._comm.Get_rank()

    def Get_size(self):
        return 1 if self._comm is None else self._comm.Get_size()

    def __getattr__(self, name):
        attr = getattr(self._comm, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            result = attr(*args, **kwargs)
            if name in ("Allreduce", "Iallreduce"):
                self.calls.append((name, args[1].size, args[1].__array_interface__["data"][0]))
            if name == "Iallreduce":
                self.requests.append(result)
            return result

        return call


def _assert_parts_tile_the_buffer(over, calls):
    """Every step: 3 Iallreduce (one per layer, last layer first) whose slices tile the whole
    buffer with no gap and no overlap, and no blocking gradient Allreduce."""
    steps = over.comm.allreduce_calls
    parts = [c for c in calls if c[0] == "Iallreduce"]
    assert not [c for c in calls if c[0] == "Allreduce" and c[1] > 3]  # no blocking gradient sum
    assert len(parts) == 3 * steps > 0
    start = over.sync.buffer.__array_interface__["data"][0]
    item = over.sync.buffer.itemsize
    for k in range(steps):
        spans = sorted((addr - start) // item for _, _, addr in parts[3 * k:3 * k + 3])
        sizes = {(addr - start) // item: size for _, size, addr in parts[3 * k:3 * k + 3]}
        assert spans[0] == 0
        assert sum(sizes.values()) == over.sync.buffer.size
        for a, b in zip(spans, spans[1:]):
            assert a + sizes[a] == b
        assert (parts[3 * k][2] - start) // item == spans[-1]


def _data(n=97, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, 5))
    y = (X[:, 0] + X[:, 1] ** 2 > 0.5).astype(int) + (X[:, 2] > 1)
    return X, y


def _trainer(comm, overlap, **kw):
    X, y = _data()
    cfg = TrainConfig(**{"hidden": (6, 4), "epochs": 6, "batch_size": 16, "seed": 7, "solver": "adam",
                         **kw}).validate()
    tr = Trainer(cfg, problem_from_arrays(X, y, cfg, comm), comm, log=lambda line: None,
                 sync="overlap" if overlap else "allreduce")
    return tr.fit()


def test_overlap_trains_the_same_model_serially():
    from mpi4py import MPI

    base = _trainer(Comm(_Recorder()), False)
    rec = _Recorder(MPI.COMM_SELF)
    over = _trainer(Comm(rec, calls_alone=True), True)
    assert np.array_equal(base.params, over.params)
    assert base.loss_curve == over.loss_curve
    assert over.comm.allreduce_calls == base.comm.allreduce_calls
    assert over.comm.iallreduce_calls == 3 * base.comm.allreduce_calls  # 3 weight layers
    _assert_parts_tile_the_buffer(over, rec.calls)
    # Every request MPI started was completed and freed (Waitall sets it to REQUEST_NULL).
    assert len(rec.requests) == over.comm.iallreduce_calls
    assert all(r == MPI.REQUEST_NULL for r in rec.requests)


@pytest.mark.mpi(min_size=2)
def test_overlap_reduces_each_element_once_and_matches_blocking():
    from mpi4py import MPI

    world = MPI.COMM_WORLD.Dup()
    try:
        rec = _Recorder(world)
        over = _trainer(Comm(rec), True)
        base = _trainer(Comm(world), False)
        alone = _trainer(Comm(MPI.COMM_SELF), False)
        _assert_parts_tile_the_buffer(over, rec.calls)
        assert all(r == MPI.REQUEST_NULL for r in rec.requests)
        np.testing.assert_allclose(over.params, base.params, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(over.params, alone.params, rtol=1e-10, atol=1e-12)
        first = over.params.copy()
        world.Bcast(first, root=0)
        assert np.array_equal(first, over.params)
    finally:
        world.Free()
