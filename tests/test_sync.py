"""The step strategies (mpinn/parallel/sync.py): the sharded update trains the replicated model.

In-process under `mpiexec -n N python -m pytest --with-mpi -m mpi tests/test_sync.py`: `make
test` runs it on 2 and 3 ranks, and test_sync_on_4_and_8_ranks below launches it on 4 and 8
(oversubscribed). Each rank also trains alone on COMM_SELF; that serial run is the reference.
The serial tests check the slicing arithmetic and the optimizer's fused finish.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from mpinn.parallel.comm import Comm
from mpinn.train.config import TrainConfig
from mpinn.nn.model import MLP
from mpinn.nn.optim import make_optimizer
from mpinn.train.problem import problem_from_arrays
from mpinn.data.partition import even_bounds as slice_bounds
from mpinn.nn.model import weight_ranges
from mpinn.parallel.sync import resolve_sync
from mpinn.train.loop import Trainer

from launch import clean_env, mpiexec

HERE = os.path.dirname(os.path.abspath(__file__))


def _data(n=131, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, 9))
    y = (X[:, 0] + X[:, 1] ** 2 > 0.5).astype(int) + (X[:, 2] > 1) + 2 * (X[:, 3] > 0.8)
    return X, y


def _trainer(comm, sync, checkpointer=None, faults=None, **kw):
    X, y = _data()
    cfg = TrainConfig(**{"hidden": (23, 11), "epochs": 6, "batch_size": 20, "seed": 5, "solver": "adam",
                         "alpha": 1e-3, "sync": sync, "n_iter_no_change": 100, **kw}).validate()
    return Trainer(cfg, problem_from_arrays(X, y, cfg, comm), comm, log=lambda line: None,
                   checkpointer=checkpointer, faults=faults)


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# ---- serial: the arithmetic the sharded step relies on ---------------------------------


@pytest.mark.parametrize("n,size", [(10, 3), (7, 8), (669706, 64), (5, 1)])
def test_slices_tile_the_buffer_evenly(n, size):
    b = slice_bounds(n, size)
    assert b[0] == 0 and b[-1] == n and all(x <= y for x, y in zip(b, b[1:]))
    sizes = np.diff(b)
    assert sizes.max() - sizes.min() <= 1


def test_weight_ranges_cover_weights_not_biases():
    model = MLP([4, 3, 2])  # W0 0..12, b0 12..15, W1 15..21, b1 21..23
    assert weight_ranges(model, 0, model.n_params) == [(0, 12), (15, 21)]
    assert weight_ranges(model, 10, 17) == [(10, 12), (15, 17)]
    assert weight_ranges(model, 12, 15) == []


@pytest.mark.parametrize("solver", ["gd", "sgd", "adam"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_slice_updates_equal_the_whole_update_bitwise(solver, dtype):
    """The sharded update is the replicated one cut in pieces: the same bits for every slice."""
    model = MLP([30, 40, 7], dtype=dtype)
    rng = np.random.RandomState(0)
    params = rng.normal(size=model.n_params).astype(dtype)
    grads = [rng.normal(size=model.n_params).astype(dtype) for _ in range(3)]
    whole = make_optimizer(solver, model.n_params, dtype, lr=0.01)
    p_whole = params.copy()
    for g in grads:
        whole.step(p_whole, g.copy(), 17.0, 1e-2, weight_ranges(model, 0, model.n_params))
    for size in (2, 3, 5):
        b = slice_bounds(model.n_params, size)
        p_cut = params.copy()
        opts = [make_optimizer(solver, b[r + 1] - b[r], dtype, lr=0.01) for r in range(size)]
        for g in grads:
            for r, opt in enumerate(opts):
                lo, hi = b[r], b[r + 1]
                decay = [(a - lo, c - lo) for a, c in weight_ranges(model, lo, hi)]
                opt.step(p_cut[lo:hi], g[lo:hi].copy(), 17.0, 1e-2, decay)
        assert np.array_equal(p_cut, p_whole)


def test_fused_finish_equals_finish_gradient_then_step():
    """L2 and the division folded into the optimizer's pass: the numbers of the two-pass path."""
    model = MLP([6, 5, 3])
    rng = np.random.RandomState(1)
    params, grad = rng.normal(size=model.n_params), rng.normal(size=model.n_params)
    two_pass, fused = params.copy(), params.copy()
    g = grad.copy()
    model.finish_gradient(two_pass, g, 0.3, 11.0)
    make_optimizer("adam", model.n_params, np.float64).step(two_pass, g)
    make_optimizer("adam", model.n_params, np.float64).step(fused, grad.copy(), 11.0, 0.3,
                                                            weight_ranges(model, 0, model.n_params))
    assert np.array_equal(two_pass, fused)


def test_auto_shards_only_big_models_on_several_ranks():
    assert resolve_sync("auto", 1, 10**6) == "allreduce"
    assert resolve_sync("auto", 2, 100) == "allreduce"
    assert resolve_sync("auto", 2, 10**6) == "shm"
    assert resolve_sync("allreduce", 8, 10**6) == "allreduce"


@pytest.mark.parametrize("ranks,nodes", [(4, ""), pytest.param(8, "", marks=pytest.mark.long), (4, "2")],
                         ids=["4", "8", "4-as-2-nodes"])
def test_sync_on_4_and_8_ranks(ranks, nodes):
    """This module's MPI tests on 4 and 8 ranks (oversubscribed on a small machine); with
    MPINN_SHM_NODES=2, --sync shm takes the ranks for two nodes (its cross-node level runs)."""
    cmd = [*mpiexec(), "-n", str(ranks), sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "--with-mpi", "-m", "mpi", os.path.join(HERE, "test_sync.py")]
    env = clean_env(OMP_NUM_THREADS=1, OPENBLAS_NUM_THREADS=1, MPINN_SHM_NODES=nodes)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=HERE, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


# ---- under mpiexec ------------------------------------------------------------------------

MPI = pytest.importorskip("mpi4py.MPI")


@pytest.mark.mpi(min_size=2)
def test_sharded_trains_the_one_rank_model(world):
    """Sharded on N ranks vs one rank: within 1e-12 (float64); bit for bit vs allreduce at N = 2."""
    sharded = _trainer(Comm(world), "sharded").fit()
    alone = _trainer(Comm(MPI.COMM_SELF), "allreduce").fit()
    assert sharded.sync.name == "sharded"
    assert _rel(sharded.params, alone.params) <= 1e-12
    np.testing.assert_allclose(sharded.loss_curve, alone.loss_curve, rtol=1e-12)
    replicated = _trainer(Comm(world), "allreduce").fit()
    if world.Get_size() == 2:
        assert np.array_equal(sharded.params, replicated.params)
    else:
        assert _rel(sharded.params, replicated.params) <= 1e-12
    gathered = sharded.params.copy()
    world.Bcast(gathered, root=0)
    assert np.array_equal(gathered, sharded.params)  # every rank holds the same parameters


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("solver", ["sgd", "gd"])
def test_sharded_other_solvers_and_float32(world, solver):
    for dtype, tol in (("float64", 1e-12), ("float32", 1e-5)):
        sharded = _trainer(Comm(world), "sharded", solver=solver, lr=0.05, dtype=dtype).fit()
        alone = _trainer(Comm(MPI.COMM_SELF), "allreduce", solver=solver, lr=0.05, dtype=dtype).fit()
        assert _rel(sharded.params, alone.params) <= tol


@pytest.mark.mpi(min_size=2)
def test_two_collectives_and_a_weight_sum_per_sharded_step(world):
    comm = Comm(world)
    tr = _trainer(comm, "sharded", epochs=2).fit()
    steps = 2 * tr.schedule.n_steps
    assert comm.reduce_scatter_calls == comm.allgather_calls == steps
    assert comm.allreduce_calls == 0  # no whole-gradient Allreduce


@pytest.mark.mpi(min_size=2)
def test_optimizer_state_per_rank_shrinks_as_one_over_n(world):
    size = world.Get_size()
    for solver in ("adam", "sgd"):
        sharded = _trainer(Comm(world), "sharded", solver=solver, epochs=1)
        replicated = _trainer(Comm(MPI.COMM_SELF), "allreduce", solver=solver, epochs=1)
        n = sharded.model.n_params
        one_slice = -(-n // size) * sharded.model.dtype.itemsize
        mine = sharded.sync.state_bytes()
        assert mine <= replicated.sync.state_bytes() / size + one_slice
        assert sharded.optimizer.n_params == sharded.sync.hi - sharded.sync.lo
        assert all(len(a) == sharded.optimizer.n_params for a in sharded.optimizer.state()[1].values())
        total = world.allreduce(sharded.optimizer.n_params)
        assert total == n  # the slices tile the parameters


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("sync", ["sharded", "shm"])
def test_preempted_sharded_resumes_replicated_on_fewer_ranks(world, tmp_path_factory, sync):
    """Preempted mid-epoch on N ranks with --sync sharded or shm, resumed on N-1 ranks with
    allreduce: the uninterrupted one-rank model within 1e-12. The checkpoint holds whole
    optimizer state."""
    from mpinn.train.checkpoint import Checkpointer, read_checkpoint
    from mpinn.parallel.faults import Preemption, parse_faults

    size, rank = world.Get_size(), world.Get_rank()
    directory = tmp_path_factory.mktemp("ckpt") if rank == 0 else None
    directory = world.bcast(str(directory) if directory else None, root=0)
    Preemption.install()
    try:
        comm = Comm(world)
        first = _trainer(comm, sync, checkpoint=directory, checkpointer=Checkpointer(directory, comm),
                         faults=parse_faults("0:9:term", rank))  # rank 0 signalled at step 9 (epoch 2)
        first.fit()
    finally:
        Preemption.requested = False
    assert first.stop_reason == "preempted" and first.step_in_epoch > 0
    sub = world.Split(0 if rank < size - 1 else MPI.UNDEFINED, rank)
    try:
        if sub != MPI.COMM_NULL:
            second = _trainer(Comm(sub), "allreduce", checkpoint=directory)
            attrs, arrays = read_checkpoint(directory)
            assert arrays["optimizer/m"].shape == (second.model.n_params,)
            second.restore(attrs["state"], arrays)
            second.fit()
            alone = _trainer(Comm(MPI.COMM_SELF), "allreduce").fit()
            assert second.epoch == alone.epoch
            assert _rel(second.params, alone.params) <= 1e-12
    finally:
        if sub != MPI.COMM_NULL:
            sub.Free()
        world.Barrier()


# ---- --sync shm: one node's shared memory ----------------------------------------------------


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_shm_trains_the_one_rank_model(world, solver):
    """shm on N ranks (one node, or MPINN_SHM_NODES "nodes"), 3 epochs: within 1e-12 of one rank
    (float64); on one node at N = 2, the Allreduce's bits, float64 and float32."""
    for dtype, tol in (("float64", 1e-12), ("float32", 1e-5)):
        kw = {"solver": solver, "lr": 0.05, "dtype": dtype, "epochs": 3}
        shm = _trainer(Comm(world), "shm", **kw).fit()
        alone = _trainer(Comm(MPI.COMM_SELF), "allreduce", **kw).fit()
        replicated = _trainer(Comm(world), "allreduce", **kw).fit()
        assert shm.sync.name == "shm" and shm.params.flags.owndata  # copied out of the freed window
        assert _rel(shm.params, alone.params) <= tol
        np.testing.assert_allclose(shm.loss_curve, alone.loss_curve, rtol=tol)
        if world.Get_size() == 2 and shm.sync.nodes == 1:
            assert np.array_equal(shm.params, replicated.params)
            assert shm.loss_curve == replicated.loss_curve
        gathered = shm.params.copy()
        world.Bcast(gathered, root=0)
        assert np.array_equal(gathered, shm.params)


@pytest.mark.mpi(min_size=2)
def test_shm_ranks_of_a_node_share_one_parameter_copy(world):
    """A node's ranks see one parameter buffer: a write by node rank 0 is read by the others;
    each rank's optimizer state is its slice; the slices tile the parameters on every node."""
    tr = _trainer(Comm(world), "shm", epochs=1)
    sync = tr.sync
    if sync.node.rank == 0:
        sync.params[0] = 12345.0
    sync.publish()
    assert sync.params[0] == 12345.0
    assert sync.optimizer.n_params == sync.hi - sync.lo
    assert world.allreduce(sync.hi - sync.lo) == sync.nodes * tr.model.n_params
    # Parameters 1/L of one copy and the own gradient segment (the slice is summed in it): (1 + 1/L) P floats.
    n, itemsize, nodes = tr.model.n_params, tr.model.dtype.itemsize, sync.node.size
    assert sync.held_bytes() - sync.state_bytes() <= (n * (1 + 1 / nodes) + 16) * itemsize
    sync.release()


def test_shm_refuses_nodes_of_different_sizes(tmp_path):
    """3 ranks cut into 2 "nodes" (2 + 1): one line, exit 2, on every rank; nothing written."""
    from launch import run

    data = tmp_path / "iris.h5"
    run(["data", "iris", data])
    proc = run(["train", "--data", data, "--sync", "shm", "--checkpoint", tmp_path / "ck"], np_=3, check=False,
               env=clean_env(MPINN_SHM_NODES="2"))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and lines and all("--sync shm needs the same number of ranks on every node" in line
                                                  for line in lines), proc.stderr
    assert not (tmp_path / "ck").exists() or not any((tmp_path / "ck").iterdir())


def test_auto_takes_shm_for_big_models_and_sharded_where_shm_cannot_run(tmp_path):
    """auto on 3 ranks, 38,474 parameters: shm on one node; with nodes of 2 + 1 ranks, sharded
    (the explicit --sync shm exits 2 there, above)."""
    from launch import run

    data = tmp_path / "digits.h5"
    run(["data", "digits", data])
    args = ["train", "--data", data, "--hidden", "512", "--epochs", "1"]
    one_node = run(args, np_=3)
    assert "sync shm (shared memory within nodes of 3 rank(s))" in one_node.stdout, one_node.stdout
    uneven = run(args, np_=3, env=clean_env(MPINN_SHM_NODES="2"))
    assert ", sync sharded," in uneven.stdout, uneven.stdout
