"""Failures only one rank sees must end every rank, quickly, with one message.

Rank 0 alone writes checkpoints, reads the checkpoint on resume and steers L-BFGS. Each path
is made to fail (or to see different floats) on one rank only; every rank must then take the
same way out within 10 s. The CLI cases launch `mpiexec -n 2|3 mpinn ...`; the estimator cases
run in the MPI suite (`make test-2`, `make test-3`), where no abort handler would save a
rank left waiting.
"""

import json
import subprocess
import time

import numpy as np
import pytest

from launch import MPINN, clean_env, mpiexec, run

TRAIN = ["train", "--hidden", "8", "--solver", "sgd", "--batch-size", "full", "--seed", "1", "--quiet"]


@pytest.mark.parametrize("n", [2, 3])
def test_a_checkpoint_rank_0_cannot_write_ends_every_rank_with_one_line(iris, tmp_path, n):
    ck = tmp_path / "ck"
    # One full batch per epoch: step 3 is epoch 3, so epochs 1 and 2 were checkpointed.
    proc = run([*TRAIN, "--data", iris, "--epochs", "6", "--checkpoint", ck, "--checkpoint-every", "1"],
               np_=n, check=False, timeout=60, env=clean_env(MPINN_FAULT="0:3:nospace"))
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("mpinn: error: checkpoint") \
        and "No space left on device" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.elapsed < 30, proc.elapsed  # a hang would sit in the next collective until the timeout
    # Nothing lost: `latest` still names the last good checkpoint, which loads.
    assert (ck / "latest").read_text().strip() == "ckpt-000002-000000.h5"
    run(["eval", "--model", ck, "--data", iris])


@pytest.mark.parametrize("n", [2, 3])
def test_resume_when_only_rank_0_sees_the_checkpoint_directory(iris, tmp_path, n):
    """Node-local storage: --checkpoint is a relative path and rank 0 runs in another working
    directory than the others, so only rank 0 can see the checkpoints. Resume reads once on
    rank 0 and broadcasts; the others never open the file."""
    node0, others = tmp_path / "node0", tmp_path / "node1"
    node0.mkdir()
    others.mkdir()
    args = [*TRAIN, "--data", iris, "--checkpoint", "ck", "--json"]
    full = run([*TRAIN, "--data", iris, "--checkpoint", "ck-full", "--json", "--epochs", "6"], cwd=node0, np_=1)
    first = run([*args, "--epochs", "3"], cwd=node0, np_=1)
    assert first.returncode == 0
    # Resume with 6 epochs: MPMD launch, rank 0 in node0, ranks 1.. in node1 (no ck/ there).
    cmd = [*mpiexec(), "-n", "1", "-wdir", str(node0), MPINN, *map(str, args), "--epochs", "6", "--resume",
           ":", "-n", str(n - 1), "-wdir", str(others), MPINN, *map(str, args), "--epochs", "6", "--resume"]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 30
    assert not (others / "ck").exists()
    resumed, uninterrupted = json.loads(proc.stdout.splitlines()[-1]), json.loads(full.stdout.splitlines()[-1])
    assert resumed["epochs"] == 6 and resumed["final_loss"] == pytest.approx(uninterrupted["final_loss"], rel=1e-12)


# ---- estimators in the MPI suite -------------------------------------------------------------


def _iris():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    return X, y


@pytest.mark.mpi(min_size=2)
def test_estimator_checkpoint_failure_on_rank_0_raises_on_every_rank(world, tmp_path_factory, monkeypatch):
    import mpinn
    import mpinn.train.checkpoint as checkpoint
    from mpinn.errors import CheckpointError

    directory = world.bcast(str(tmp_path_factory.mktemp("ck")) if world.Get_rank() == 0 else None)
    if world.Get_rank() == 0:
        def full_disk(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(checkpoint, "save_trainer", full_disk)
    X, y = _iris()
    est = mpinn.MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0, comm=world,
                              checkpoint=directory)
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="could not be written"):
        est.fit(X, y)
    assert time.monotonic() - start < 10
    world.Barrier()  # every rank got here: none is left in a collective


class SkewedComm:
    """A communicator whose reductions give ranks other than 0 slightly different sums, as an
    MPI library that does not promise bitwise-equal Allreduce results may."""

    def __new__(cls, mpi_comm):
        from mpinn.parallel.comm import Comm

        class Skewed(Comm):
            def allreduce_sum(self, buf):
                super().allreduce_sum(buf)
                if self.rank:
                    buf *= 1 + 1e-3
                return buf

        return Skewed(mpi_comm)


@pytest.mark.mpi(min_size=2)
def test_lbfgs_follows_rank_0_even_when_ranks_reduce_to_different_floats(world):
    import mpinn
    from mpinn.parallel.comm import Comm

    X, y = _iris()
    kw = dict(hidden_layer_sizes=(6,), solver="lbfgs", max_iter=40, random_state=0)
    exact = mpinn.MLPClassifier(**kw, comm=Comm(world)).fit(X, y)
    start = time.monotonic()
    skewed = mpinn.MLPClassifier(**kw, comm=SkewedComm(world)).fit(X, y)
    assert time.monotonic() - start < 10
    # Rank 0's sums are exact and only they steer scipy: the same fit, on every rank.
    for a, b in zip(exact.coefs_ + exact.intercepts_, skewed.coefs_ + skewed.intercepts_):
        np.testing.assert_array_equal(a, b)
    assert (skewed.n_iter_, skewed.loss_) == (exact.n_iter_, exact.loss_)
    mine = np.concatenate([c.ravel() for c in skewed.coefs_])
    assert np.array_equal(mine, world.bcast(mine, root=0))


@pytest.mark.mpi(min_size=2)
def test_lbfgs_failure_on_rank_0_ends_every_rank(world, monkeypatch):
    import scipy.optimize

    import mpinn

    if world.Get_rank() == 0:
        real = scipy.optimize.minimize

        def failing(fun, x0, **kwargs):
            fun(x0)  # the other ranks are now inside the evaluation loop
            raise MemoryError("injected on rank 0")

        monkeypatch.setattr(scipy.optimize, "minimize", failing)
        assert real is not failing
    X, y = _iris()
    est = mpinn.MLPClassifier(hidden_layer_sizes=(6,), solver="lbfgs", max_iter=40, random_state=0, comm=world)
    start = time.monotonic()
    with pytest.raises(MemoryError, match="injected on rank 0"):  # rank 0's error, on every rank
        est.fit(X, y)
    assert time.monotonic() - start < 10
    world.Barrier()
