"""The halving searches under `mpiexec -n 2|3 python -m pytest --with-mpi -m mpi`: every case of
test_halving.py at group sizes 1 and N (each case with one allocation at each size, the cases
taking turns, so every pairing runs twice) gives scikit-learn's cv_results_
(its HalvingGridSearchCV running the same mpinn estimator) and the same best estimator on
every rank; a checkpoint written at one group size is resumed at another; warm_start_promoted
continues states saved by other groups."""

import numpy as np
import pytest

import mpinn
from test_halving import CASES, GRID, assert_same_results, estimator, quiet_fit, sklearn_reference

MPI = pytest.importorskip("mpi4py.MPI")


def same_on_every_rank(comm, values):
    values = np.ascontiguousarray(values, dtype=np.float64)
    root = values.copy()
    comm.Bcast(root, root=0)
    return np.array_equal(values, root, equal_nan=True)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("turn,case", list(enumerate(sorted(CASES))))
def test_every_group_size_and_allocation_matches_sklearn(world, turn, case):
    data, kw = CASES[case]
    ref = sklearn_reference(case)  # scikit-learn's loop; each fit data-parallel on all ranks
    allocations = ("dynamic", "round-robin")
    for group_size, allocation in ((1, allocations[turn % 2]), (world.Get_size(), allocations[1 - turn % 2])):
        ours = quiet_fit(mpinn.HalvingGridSearchCV(estimator(comm=world), GRID, cv=3, group_size=group_size,
                                                   allocation=allocation, **kw), data)
        assert_same_results(ours, ref)
        assert same_on_every_rank(world, ours.cv_results_["mean_test_score"])
        best = ours.best_estimator_
        assert same_on_every_rank(world, np.concatenate([a.ravel() for a in best.coefs_ + best.intercepts_]))
        assert best.comm is world


@pytest.mark.mpi(min_size=2)
def test_checkpoint_resumed_with_another_group_size(world):
    import os
    import shutil
    import tempfile

    path = world.bcast(tempfile.mkdtemp() if world.Get_rank() == 0 else None, root=0)
    data, kw = CASES["iris-epochs-f3-smallest-aggressive"]
    try:
        def search(group_size):
            return mpinn.HalvingGridSearchCV(estimator(comm=world), GRID, cv=3, group_size=group_size,
                                             checkpoint=os.path.join(path, "ck"), **kw)

        full = quiet_fit(search(1), data)
        last = os.path.join(path, "ck", f"iter-{full.n_iterations_ - 1}")
        if world.Get_rank() == 0:  # the last iteration's tasks lost, as if killed in it
            for name in os.listdir(last):
                if name.startswith("tasks-"):
                    os.remove(os.path.join(last, name))
        world.Barrier()
        again = quiet_fit(search(world.Get_size()), data)
        lost = full.n_candidates_[-1] * 3
        assert (again.tasks_run_, again.tasks_resumed_) == (lost, full.tasks_run_ - lost)
        assert_same_results(again, full, tol=1e-12)
    finally:
        world.Barrier()
        if world.Get_rank() == 0:
            shutil.rmtree(path)


@pytest.mark.mpi(min_size=2)
def test_warm_start_promoted_continues_on_any_group(world):
    """Groups of 1, dynamic allocation: a promoted task may run on another group than the one
    that saved its state; the scores equal the from-scratch search's (run in one group of N)."""
    from test_halving import DIGITS, WARM_GRID

    kw = dict(resource="max_iter", max_resources=9, factor=3, cv=3)
    base = mpinn.MLPClassifier(batch_size=200, random_state=0, comm=world)
    cold = quiet_fit(mpinn.HalvingGridSearchCV(base, WARM_GRID, group_size=world.Get_size(),
                                               allocation="round-robin", **kw), DIGITS)
    warm = quiet_fit(mpinn.HalvingGridSearchCV(base, WARM_GRID, group_size=1, warm_start_promoted=True, **kw), DIGITS)
    assert_same_results(warm, cold, tol=1e-12)
    assert (cold.epochs_trained_, warm.epochs_trained_) == (81, 63)
    assert same_on_every_rank(world, warm.cv_results_["mean_test_score"])
