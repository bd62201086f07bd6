"""One rank's outcome is every rank's outcome (mpinn/parallel/agree.py and its users).

Serial: exceptions survive the description that travels between ranks. MPI suite (2 and 3
ranks): on_root and agree give every rank the same value or the same exception type and
message; cv.split failing on rank 0, and an L-BFGS evaluation failing on rank 0 or on a
follower, raise on every rank within seconds (on main 3b76c1d each of them hung or aborted).
"""

import time
import warnings

import numpy as np
import pytest

from mpinn.errors import InputError
from mpinn.parallel.agree import RankError, describe, rebuild


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyError("candidate"), ValueError("bad"),
                                 InputError("--data: missing"), MemoryError("injected"), KeyboardInterrupt()])
def test_exceptions_are_rebuilt_with_their_type_and_message(exc):
    again = rebuild(describe(exc))
    assert type(again) is type(exc) and str(again) == str(exc)


def test_an_exception_of_a_class_not_loaded_here_is_a_rank_error_naming_it():
    desc = {"module": "somewhere.else", "name": "Odd", "message": "it broke", "args": ["it broke"]}
    again = rebuild(desc)
    assert isinstance(again, RankError) and str(again) == "Odd: it broke"


@pytest.mark.mpi(min_size=2)
def test_on_root_forwards_any_exception_and_values(world):
    from mpinn.parallel.agree import on_root
    from mpinn.parallel.comm import Comm

    comm = Comm(world)
    assert on_root(comm, lambda: {"rows": 5}) == {"rows": 5}
    for exc in (OSError(5, "Input/output error"), KeyError("task 3"), InputError("--grid: empty")):
        def fail(exc=exc):
            raise exc
        start = time.monotonic()
        with pytest.raises(type(exc)) as got:
            on_root(comm, fail)
        assert str(got.value) == str(exc) and time.monotonic() - start < 10


@pytest.mark.mpi(min_size=2)
def test_agree_raises_the_lowest_failing_ranks_error_everywhere(world):
    from mpinn.parallel.agree import agree, run_agreed
    from mpinn.parallel.comm import Comm

    comm = Comm(world)
    agree(comm, None)  # nobody failed: returns
    last = comm.size - 1
    with pytest.raises(ZeroDivisionError, match="rank 1"):
        agree(comm, ZeroDivisionError(f"rank {comm.rank}") if comm.rank >= 1 else None)

    def only_last():
        if comm.rank == last:
            raise OSError(13, "Permission denied")
        return comm.rank
    with pytest.raises(PermissionError, match="Permission denied"):
        run_agreed(comm, only_last)


@pytest.mark.mpi(min_size=2)
def test_cv_split_failing_on_rank_0_raises_on_every_rank(world):
    pytest.importorskip("sklearn")
    import mpinn

    X, y = np.arange(10.0).reshape(5, 2), np.array([0, 1, 0, 1, 0])
    search = mpinn.GridSearchCV(mpinn.MLPClassifier(max_iter=5), {"alpha": [1e-4]}, cv=10)
    start = time.monotonic()
    with pytest.raises(ValueError, match="n_splits=10"):
        search.fit(X, y)
    assert time.monotonic() - start < 10


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("where", ["root", "follower"])
def test_lbfgs_evaluation_failing_on_one_rank_raises_on_every_rank(world, monkeypatch, where):
    """The failing rank's error rides in the evaluation's reduced buffer: after the EVALUATE
    broadcast on rank 0, or on a follower, every rank raises its MemoryError."""
    from sklearn.datasets import load_iris

    import mpinn
    from mpinn.nn.model import MLP

    X, y = load_iris(return_X_y=True)
    X = np.repeat(X, 120, axis=0)  # 18,000 rows: four chunks, so every rank of 2 or 3 holds rows
    y = np.repeat(y, 120)
    failing = 0 if where == "root" else world.Get_size() - 1
    if world.Get_rank() == failing:
        real, calls = MLP.loss_grad_sum, [0]

        def loss_grad_sum(self, *args, **kwargs):
            calls[0] += 1
            if calls[0] == 5:
                raise MemoryError(f"injected on rank {failing}")
            return real(self, *args, **kwargs)

        monkeypatch.setattr(MLP, "loss_grad_sum", loss_grad_sum)
    est = mpinn.MLPClassifier(hidden_layer_sizes=(6,), solver="lbfgs", max_iter=40, random_state=0, comm=world)
    start = time.monotonic()
    with pytest.raises(MemoryError, match=f"injected on rank {failing}"):
        est.fit(X, y)
    assert time.monotonic() - start < 10
    world.Barrier()


@pytest.mark.mpi(min_size=2)
def test_epoch_decisions_are_rank_0s_on_every_rank(world, monkeypatch):
    """Every rank applies rank 0's end-of-epoch decision (learning rate, counters, best weights,
    stop). Ranks 1.. are given a rule that would decide otherwise (as their own floats might on
    an MPI whose reductions are not bitwise equal on every rank): they never use it."""
    import dataclasses

    from sklearn.datasets import load_iris

    import mpinn
    import mpinn.train.stopping as stopping

    if world.Get_rank() > 0:
        real = stopping.decide_epoch

        def other_floats(*args):
            decision = real(*args)
            rate = None if decision.learning_rate is None else decision.learning_rate / 3
            return dataclasses.replace(decision, learning_rate=rate, no_improvement=decision.no_improvement + 1)

        monkeypatch.setattr(stopping, "decide_epoch", other_floats)
    X, y = load_iris(return_X_y=True)
    kw = dict(hidden_layer_sizes=(6,), solver="sgd", learning_rate="adaptive", learning_rate_init=0.5,
              n_iter_no_change=2, tol=1e-3, max_iter=40, random_state=0)
    start = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning, if the epochs do not suffice
        together = mpinn.MLPClassifier(comm=world, **kw).fit(X, y)
    assert time.monotonic() - start < 10
    mine = [together.n_iter_, together._optimizer.learning_rate, together._no_improvement_count]
    everyone = world.allgather(mine)
    assert all(theirs == everyone[0] for theirs in everyone), everyone


@pytest.mark.mpi(min_size=2)
def test_a_signal_after_the_last_step_is_not_lost(world, monkeypatch):
    """SIGTERM reaching rank 0 during the last epoch's validation (after the last step's
    reduction carried no flag): the fit ends as preempted on every rank, not as finished."""
    import os
    import signal

    from sklearn.datasets import load_iris

    import mpinn
    import mpinn.train.loop as loop

    real = loop.Trainer.validate
    calls = [0]

    def validate(self):
        calls[0] += 1
        if calls[0] == 4 and world.Get_rank() == 0:  # the last epoch's validation
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self)

    monkeypatch.setattr(loop.Trainer, "validate", validate)
    X, y = load_iris(return_X_y=True)
    est = mpinn.MLPClassifier(hidden_layer_sizes=(6,), early_stopping=True, max_iter=4, random_state=0, comm=world)
    start = time.monotonic()
    with pytest.raises(mpinn.Preempted, match="SIGTERM"):
        est.fit(X, y)
    assert time.monotonic() - start < 10
    world.Barrier()
