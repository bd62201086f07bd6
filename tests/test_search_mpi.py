"""The searches under `mpiexec -n 2|3 python -m pytest --with-mpi -m mpi`: the same cv_results_
as scikit-learn's GridSearchCV at every group size and allocation, the same best estimator on
every rank, failed tasks recorded, and a checkpoint resumed with another group size."""

import numpy as np
import pytest

import mpinn
from test_search import FIXED, GRID, X_IRIS, assert_same_results, quiet_fit, sklearn_reference

MPI = pytest.importorskip("mpi4py.MPI")


def same_on_every_rank(comm, values):
    values = np.ascontiguousarray(values, dtype=np.float64)
    root = values.copy()
    comm.Bcast(root, root=0)
    return np.array_equal(values, root, equal_nan=True)


@pytest.mark.mpi(min_size=2)
def test_every_group_size_and_allocation_matches_sklearn(world):
    ref = sklearn_reference()
    for group_size in (1, world.Get_size()):
        for allocation in ("dynamic", "round-robin"):
            ours = quiet_fit(mpinn.GridSearchCV(mpinn.MLPClassifier(**FIXED, comm=world), GRID, scoring="neg_log_loss",
                                                cv=3, group_size=group_size, allocation=allocation))
            assert_same_results(ours, ref)
            assert same_on_every_rank(world, ours.cv_results_["mean_test_score"])
            best = ours.best_estimator_
            assert same_on_every_rank(world, np.concatenate([a.ravel() for a in best.coefs_ + best.intercepts_]))
            assert best.comm is world  # the refit ran on the search's communicator


@pytest.mark.mpi(min_size=2)
def test_failed_tasks_are_recorded_on_n_ranks(world):
    from sklearn.exceptions import FitFailedWarning

    grid = {"activation": ["relu", "no-such-activation"], "learning_rate_init": [0.01, 0.1]}
    with pytest.warns(FitFailedWarning, match="6 fits failed out of a total of 12"):
        ours = quiet_fit(mpinn.GridSearchCV(mpinn.MLPClassifier(**FIXED, comm=world), grid, cv=3))
    res = ours.cv_results_
    failed = np.array([p["activation"] != "relu" for p in res["params"]])
    assert np.isnan(res["mean_test_score"][failed]).all() and (res["mean_test_score"][~failed] > 0.3).all()
    assert all("no-such-activation" in res["fit_error"][c] for c in np.flatnonzero(failed))


@pytest.mark.mpi(min_size=2)
def test_checkpoint_resumed_with_another_group_size(world):
    import os
    import shutil
    import tempfile

    path = world.bcast(tempfile.mkdtemp() if world.Get_rank() == 0 else None, root=0)
    try:
        def search(group_size):
            grid = {"learning_rate_init": [0.01, 0.1]}
            return mpinn.GridSearchCV(mpinn.MLPClassifier(**FIXED, comm=world), grid, scoring="neg_log_loss", cv=3,
                                      group_size=group_size, checkpoint=os.path.join(path, "ck"))

        full = quiet_fit(search(1))
        if world.Get_rank() == 0:  # drop the tasks of the first group file, as if it was killed
            first = sorted(f for f in os.listdir(os.path.join(path, "ck")) if f.startswith("tasks-"))[0]
            dropped = len(open(os.path.join(path, "ck", first)).read().splitlines())
            os.remove(os.path.join(path, "ck", first))
        dropped = world.bcast(dropped if world.Get_rank() == 0 else None, root=0)
        again = quiet_fit(search(world.Get_size()))
        assert 0 < dropped < 6 and (again.tasks_run_, again.tasks_resumed_) == (dropped, 6 - dropped)
        assert_same_results(again, full, tol=1e-12)
    finally:
        world.Barrier()
        if world.Get_rank() == 0:
            shutil.rmtree(path)


@pytest.mark.mpi(min_size=2)
def test_row_view_search_reads_only_each_ranks_share(world):
    """X as a RowView of an HDF5 file (what `mpinn search` passes): the same scores as the
    in-memory array, bit for bit, while each rank of the group reads only its share of each
    fold: its scaler block and its MLP shard of the train rows, its block of the test rows."""
    import os
    import shutil
    import tempfile

    import h5py
    from sklearn.model_selection import KFold
    from sklearn.pipeline import Pipeline

    from mpinn.data.partition import block_offsets, make_shard
    from mpinn.data.rows import RowView

    path = world.bcast(tempfile.mkdtemp() if world.Get_rank() == 0 else None, root=0)
    try:
        data = os.path.join(path, "iris.h5")
        if world.Get_rank() == 0:
            with h5py.File(data, "w") as f:
                f["X"] = X_IRIS.astype(np.float32)  # read back as float64, as the array below
        world.Barrier()
        view = RowView(data, "X")
        cv = KFold(3, shuffle=True, random_state=1)

        def search(X):
            base = Pipeline([("scale", mpinn.StandardScaler(comm=world)), ("mlp", mpinn.MLPClassifier(**FIXED))])
            return quiet_fit(mpinn.GridSearchCV(base, {"mlp__learning_rate_init": [0.01, 0.1]}, scoring="neg_log_loss",
                                                cv=cv, refit=False, group_size=world.Get_size()), X=X)

        lazy, ref = search(view), search(X_IRIS.astype(np.float32).astype(np.float64))
        for key in ("split0_test_score", "split1_test_score", "split2_test_score", "mean_test_score"):
            assert np.array_equal(lazy.cv_results_[key], ref.cv_results_[key]), key
        rank, size = world.Get_rank(), world.Get_size()
        share = 0
        for train, test in cv.split(X_IRIS):
            share += (make_shard(len(train), rank, size, "block").count  # the scaler's statistics
                      + make_shard(len(train), rank, size, mpinn.MLPClassifier().shard).count  # the fit
                      + int(np.diff(block_offsets(len(test), size))[rank]))  # scoring
        assert view.rows_read == 2 * share  # two candidates, nothing else read
        # Over the group each row is read once per use (scaler, fit, scoring): the ranks split the work.
        whole = sum(2 * len(train) + len(test) for train, test in cv.split(X_IRIS))
        assert world.allreduce(view.rows_read) == 2 * whole
    finally:
        world.Barrier()
        if world.Get_rank() == 0:
            shutil.rmtree(path, ignore_errors=True)
